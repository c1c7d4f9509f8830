"""Routing between nodes: any node serves any client, whoever owns its conversation.

Inputs for a conversation owned elsewhere go to its partition's inbound stream
(``{swpN}:in``); the owner reads it (``XREADGROUP``, one consumer group: on a single server
one blocking read of every stream it owns; on a Valkey Cluster, which refuses a read across
slots, a read of each stream its sharded channel ``{swpN}:bell`` says has inputs, with a
sweep of them all every second), hands each input to the conversation's actor, sends the
outcome back to the node that asked (its stream ``sw:out:<node>``) and acknowledges the
input (``XACK``). Inputs of one client reach the owner in the order sent. A partition taken
over is read from its pending inputs first (``XAUTOCLAIM``), so an input whose owner died
before answering is handled by the next one.

Outputs: each commit publishes "conversation seq" (``sw:commits``). A node with clients of
a conversation it does not own (a *watcher*) reads the log after what each client has seen
and delivers what the user may see, never an entry to the client that wrote it (it learns
the seq from its answer, as on one node). The log is the truth; the notification is only a
doorbell, so a lost one is made up by the next.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any, cast

import attrs
import trio
from glide import GlideClusterClient

from actors.model import effects as fx
from actors.model.events import Event
from actors.model.records import Party
from actors.ports import Sink, StoreUnavailable
from actors.trio.switchboard import Overloaded, Switchboard
from transport.cluster.codec import message_from_json, message_json
from transport.cluster.engine import Engine, EngineError, connect, subscriber
from transport.cluster.keys import PartitionKeys, partition_of
from transport.cluster.store import ValkeyStore
from transport.cluster.streams import BLOCK_MS as _BLOCK_MS
from transport.cluster.streams import pairs, read_own_stream, stream_items, streams
from transport.cluster.streams import text as _text

log = logging.getLogger("switchover.cluster")

COMMITS = "sw:commits"
GROUP = "owners"
#: Inputs forwarded and not answered yet, per node: past it, a client is told "overloaded".
MAX_PENDING = 10_000
#: How long a forwarded input waits for its answer before its client is told to retry.
REPLY_TIMEOUT = 10.0
#: Bound of each inbound stream and of each node's answers stream (approximate trim).
STREAM_BOUND = 100_000
#: On a Valkey Cluster: how often every owned inbound stream is read even without a bell
#: (a bell lost while the subscription reconnected is made up by it).
_SWEEP_SECONDS = 1.0
#: Most inputs read from one stream at a time.
_READ_COUNT = 500

Reply = Callable[[fx.Outcome], None]


def _outbox(node_id: str) -> str:
    return f"sw:out:{node_id}"


def _inbox(partition: int) -> str:
    return PartitionKeys(partition).inbox


@attrs.frozen
class RemoteOrigin:
    """The origin of an input routed from an agent's connection on another node: the
    conversation's actor hands it back as ``skip`` when it delivers that entry to the agent,
    so the cluster's desk sends the entry to every connection of the agent but the one that
    wrote it (which learns its seq from its answer, as on one node)."""

    ref: str

    def deliver(self, item: object) -> None:
        """Nothing is delivered to an origin: it only names a connection to skip."""


def _no_ref(sink: Sink | None) -> str | None:
    return None


@attrs.define(eq=False)
class _Pending:
    conversation_id: str
    reply: Reply | None
    origin: Sink | None
    due: float


@attrs.define(eq=False)
class Watcher:
    """This node's clients of one conversation owned elsewhere, and what each has seen."""

    conversation_id: str
    seen: dict[Sink, int] = attrs.field(factory=dict)
    #: Seqs each client wrote itself (from its answers): never delivered back to it.
    wrote: dict[Sink, set[int]] = attrs.field(factory=dict)
    inflight: int = 0
    dirty: bool = False
    pumping: bool = False


class Router:
    """Forwarding for conversations this node does not own, serving what others forward."""

    def __init__(self, store: ValkeyStore, addresses: list[str]) -> None:
        self.store = store
        self.leases = store.leases
        self.node_id = store.leases.node_id
        self.addresses = addresses
        self.engine = store.engine
        self.pending: dict[str, _Pending] = {}
        self.watchers: dict[str, Watcher] = {}
        self._ids = itertools.count(1)
        #: Request ids differ from one run of the node to the next, so an answer left in the
        #: node's answers stream by an earlier run is never taken for one of this run's.
        self._run_id = secrets.token_hex(4)
        self._outgoing: list[tuple[int, list[str]]] = []
        self._outgoing_ready = trio.Event()
        self._answers: list[tuple[str, str, str, str, fx.Outcome]] = []
        self._answers_ready = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._board: Switchboard | None = None
        #: The reference of an agent's connection, carried with its inputs so the entry it
        #: wrote is not sent back to it (set by the cluster's desk).
        self.origin_ref: Callable[[Sink | None], str | None] = _no_ref
        #: For /healthz and /metrics.
        self.forwarded = 0
        self.served = 0
        #: How long the latest input served waited in its inbound stream before this node
        #: read it (seconds, by the engine's clock: the stream id is its arrival).
        self.inbound_lag = 0.0

    def owns(self, conversation_id: str) -> bool:
        return partition_of(conversation_id, self.leases.partitions) in self.leases.tokens

    # -- this node's clients ---------------------------------------------------------------

    def forward(
        self,
        conversation_id: str,
        event: Event,
        reply: Reply | None,
        origin: Sink | None,
        message_id: str | None,
    ) -> None:
        """Send an input to the owner of its conversation; ``reply`` gets its outcome."""
        if len(self.pending) >= MAX_PENDING:
            raise Overloaded(conversation_id)
        request = f"{self.node_id}-{self._run_id}-{next(self._ids)}"
        self.pending[request] = _Pending(
            conversation_id, reply, origin, trio.current_time() + REPLY_TIMEOUT
        )
        watcher = self.watchers.get(conversation_id)
        if watcher is not None and origin in watcher.seen:
            watcher.inflight += 1
        partition = partition_of(conversation_id, self.leases.partitions)
        fields = ["n", self.node_id, "r", request, "c", conversation_id]
        fields += ["e", message_json(event), "m", message_id or ""]
        ref = self.origin_ref(origin)
        if ref is not None:
            fields += ["a", ref]
        self._outgoing.append((partition, fields))
        self._outgoing_ready.set()
        self.forwarded += 1

    def watch(self, conversation_id: str, sink: Sink, after_seq: int | None) -> None:
        watcher = self.watchers.get(conversation_id)
        if watcher is None:
            watcher = self.watchers[conversation_id] = Watcher(conversation_id)
        watcher.seen[sink] = -1 if after_seq is None else after_seq
        watcher.wrote[sink] = set()
        self._pump(watcher)

    def unwatch(self, conversation_id: str, sink: Sink) -> None:
        watcher = self.watchers.get(conversation_id)
        if watcher is not None:
            watcher.seen.pop(sink, None)
            watcher.wrote.pop(sink, None)
            if not watcher.seen:
                del self.watchers[conversation_id]

    def replay(
        self, conversation_id: str, sink: Sink, after_seq: int, party: Party, agent_id: str | None
    ) -> None:
        async def replay() -> None:
            for entry in await self.store.entries_after(conversation_id, after_seq):
                if entry.visible_to(party, agent_id):
                    sink.deliver(entry)

        self._spawn(replay)

    def _spawn(self, task: Callable[[], Any]) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(task)

    def _pump(self, watcher: Watcher) -> None:
        """Deliver what the watcher's clients have not seen, once no input of theirs is
        waiting for its answer (the answer says which entry they wrote)."""
        watcher.dirty = True
        if watcher.pumping or watcher.inflight:
            return
        watcher.pumping = True
        self._spawn(lambda: self._pump_task(watcher))

    async def _pump_task(self, watcher: Watcher) -> None:
        try:
            while watcher.dirty and not watcher.inflight:
                watcher.dirty = False
                await self._deliver_new(watcher)
        except StoreUnavailable as exc:
            log.warning("cannot read %s for its clients: %s", watcher.conversation_id, exc)
        finally:
            watcher.pumping = False

    async def _deliver_new(self, watcher: Watcher) -> None:
        conversation_id = watcher.conversation_id
        for sink, seen in list(watcher.seen.items()):
            if seen < 0:  # live only: from the last stored entry on
                state = await self.store.load(conversation_id)
                seen = 0 if state is None else state.next_seq - 1
                watcher.seen[sink] = seen
        low = min(watcher.seen.values(), default=0)
        entries = await self.store.entries_after(conversation_id, low)
        for sink, seen in list(watcher.seen.items()):
            wrote = watcher.wrote.get(sink, set())
            for entry in entries:
                if entry.seq <= seen:
                    continue
                if entry.seq not in wrote and entry.visible_to(Party.USER):
                    try:
                        sink.deliver(entry)
                    except Exception:
                        log.exception("a user's client failed; it is closed and will resume")
                        self.unwatch(conversation_id, sink)
                        break
                watcher.seen[sink] = entry.seq
            else:
                wrote.difference_update({s for s in wrote if s <= watcher.seen.get(sink, 0)})

    def _answered(self, request: str, outcome: fx.Outcome) -> None:
        pending = self.pending.pop(request, None)
        if pending is None:
            return
        watcher = self.watchers.get(pending.conversation_id)
        if watcher is not None and pending.origin in watcher.seen:
            watcher.inflight = max(0, watcher.inflight - 1)
            if isinstance(outcome, fx.Accepted) and outcome.seq is not None:
                watcher.wrote[pending.origin].add(outcome.seq)
            if watcher.dirty:
                self._pump(watcher)
        if pending.reply is not None:
            pending.reply(outcome)

    def adopt(self, partitions: list[int]) -> None:
        """This node took these partitions over: its clients of their conversations become
        the actors' own subscribers, from what each has seen."""
        board = self._board
        if board is None:
            return
        taken = set(partitions)
        for conversation_id, watcher in list(self.watchers.items()):
            if partition_of(conversation_id, self.leases.partitions) not in taken:
                continue
            del self.watchers[conversation_id]
            for sink, seen in watcher.seen.items():
                Switchboard.subscribe(board, conversation_id, sink, None if seen < 0 else seen)

    # -- the tasks -------------------------------------------------------------------------

    async def run(self, board: Switchboard) -> None:
        self._board = board
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_forever)
            nursery.start_soon(self._answer_forever)
            nursery.start_soon(self._read_answers_forever)
            nursery.start_soon(self._read_commits_forever)
            nursery.start_soon(self._serve_inbound_forever)
            nursery.start_soon(self._expire_forever)

    async def _send_forever(self) -> None:
        """Every input waiting, in one round trip per pass (in order)."""
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready = trio.Event()
            outgoing, self._outgoing = self._outgoing, []
            commands = [
                ["XADD", _inbox(partition), "MAXLEN", "~", str(STREAM_BOUND), "*", *fields]
                for partition, fields in outgoing
            ]
            if self.engine.clustered:
                # Each bell goes after its stream's inputs to the same master (the same
                # slot), so the owner that hears it finds them. Its answer is not awaited
                # by anyone: a lost bell is made up by the owner's sweep.
                for partition in dict.fromkeys(partition for partition, _ in outgoing):
                    commands.append(["SPUBLISH", PartitionKeys(partition).bell, "1"])
            try:
                answers: list[Any] = await self.engine.pipeline(commands)
            except EngineError as exc:
                answers = [exc] * len(commands)
            for (_, fields), answer in zip(outgoing, answers, strict=False):
                if isinstance(answer, Exception):
                    self._answered(fields[3], fx.Refusal("store_unavailable", str(answer)))

    async def _expire_forever(self) -> None:
        while True:
            await trio.sleep(1.0)
            now = trio.current_time()
            for request, pending in list(self.pending.items()):
                if pending.due <= now:
                    self._answered(
                        request,
                        fx.Refusal(
                            "store_unavailable",
                            "The conversation's node did not answer; send it again.",
                            pending.conversation_id,
                        ),
                    )

    async def _read_answers_forever(self) -> None:
        await read_own_stream(self.addresses, _outbox(self.node_id), self._answer, "the answers")

    def _answer(self, values: dict[str, str]) -> None:
        self._answered(values["r"], message_from_json(values["o"]))

    async def _read_commits_forever(self) -> None:
        engine = await subscriber(self.addresses, {COMMITS})
        try:
            while True:
                message = await engine.client.get_pubsub_message()
                conversation_id = _text(message.message).partition(" ")[0]
                watcher = self.watchers.get(conversation_id)
                if watcher is not None:
                    self._pump(watcher)
        finally:
            with trio.CancelScope(shield=True):
                await engine.close()

    # -- serving what other nodes forward --------------------------------------------------

    async def _serve_inbound_forever(self) -> None:
        if self.engine.clustered:
            await self._serve_inbound_by_bells()
            return
        engine = await connect(self.addresses, timeout_ms=_BLOCK_MS * 10)
        ready: set[int] = set()
        try:
            while True:
                owned = sorted(self.leases.tokens)
                for partition in owned:
                    if partition not in ready:
                        await self._take_over_inbox(engine, partition)
                        ready.add(partition)
                ready &= set(owned)
                if not owned:
                    await trio.sleep(_BLOCK_MS / 1000)
                    continue
                keys = [_inbox(p) for p in owned]
                found = await engine.command(
                    ["XREADGROUP", "GROUP", GROUP, self.node_id, "COUNT", str(_READ_COUNT)]
                    + ["BLOCK", str(_BLOCK_MS), "STREAMS", *keys]
                    + [">"] * len(keys)
                )
                if found:
                    for key, items in streams(found):
                        for stream_id, fields in items:
                            self._serve(key, stream_id, dict(pairs(fields)))
        finally:
            with trio.CancelScope(shield=True):
                await engine.close()

    async def _serve_inbound_by_bells(self) -> None:
        """The owner's reads on a Valkey Cluster: one non-blocking read per stream whose bell
        rang (or every owned stream, once a second), all in one round trip per pass.

        A stream is subscribed to before it is taken over, and its first read follows the
        takeover: an input added in between rings a bell this node hears, or is read then."""
        bells = await subscriber(self.addresses, set())
        client = cast(GlideClusterClient, bells.client)
        rung: set[int] = set()
        ringing = trio.Event()

        async def listen() -> None:
            nonlocal ringing
            while True:
                message = await client.get_pubsub_message()
                tag = _text(message.channel).partition("}")[0]
                if tag.startswith("{swp") and tag[4:].isdigit():
                    rung.add(int(tag[4:]))
                    ringing.set()

        ready: set[int] = set()
        swept = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                while True:
                    owned = set(self.leases.tokens)
                    gone = ready - owned
                    if gone:
                        await client.sunsubscribe_lazy({PartitionKeys(p).bell for p in gone})
                        ready -= gone
                    new = sorted(owned - ready)
                    if new:
                        channels = {PartitionKeys(p).bell for p in new}
                        try:
                            await client.ssubscribe(channels, timeout_ms=_BLOCK_MS * 10)
                        except EngineError as exc:  # tried again at the next pass
                            log.warning("cannot subscribe to the inputs' bells: %s", exc)
                            new = []
                        for partition in new:
                            await self._take_over_inbox(self.engine, partition)
                            ready.add(partition)
                        rung.update(new)
                    if not rung:
                        with trio.move_on_after(_BLOCK_MS / 1000):
                            await ringing.wait()
                    ringing = trio.Event()
                    if trio.current_time() - swept >= _SWEEP_SECONDS:
                        swept = trio.current_time()
                        rung.update(ready)
                    reading = sorted(rung & ready)
                    rung.clear()
                    if reading:
                        rung.update(await self._read_inboxes(reading))
        finally:
            with trio.CancelScope(shield=True):
                await bells.close()

    async def _read_inboxes(self, partitions: list[int]) -> set[int]:
        """Read new inputs of each partition's stream (one command each, one round trip) and
        serve them; the partitions that had more than one read's worth, to read again."""
        read = ["XREADGROUP", "GROUP", GROUP, self.node_id, "COUNT", str(_READ_COUNT), "STREAMS"]
        commands = [[*read, _inbox(partition), ">"] for partition in partitions]
        more: set[int] = set()
        try:
            answers = await self.engine.pipeline(commands)
        except EngineError as exc:
            answers = [exc] * len(commands)
        for partition, found in zip(partitions, answers, strict=True):
            if isinstance(found, Exception):  # read again by the next sweep
                log.warning("cannot read the inputs of partition %d: %s", partition, found)
                continue
            for key, items in streams(found or {}):
                for stream_id, fields in items:
                    self._serve(key, stream_id, dict(pairs(fields)))
                if len(items) >= _READ_COUNT:
                    more.add(partition)
        return more

    async def _take_over_inbox(self, engine: Engine, partition: int) -> None:
        """Make the group, then serve every input still pending (another owner died before
        answering it, or this node before a restart)."""
        key = _inbox(partition)
        try:
            await engine.command(["XGROUP", "CREATE", key, GROUP, "0", "MKSTREAM"], key=key)
        except EngineError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        start = "0-0"
        while True:
            answer = await engine.command(
                ["XAUTOCLAIM", key, GROUP, self.node_id, "0", start, "COUNT", "500"], key=key
            )
            start = _text(answer[0])
            claimed = [(i, f) for i, f in stream_items(answer[1]) if f]
            # An input already stored is answered as stored, never handed to an actor again
            # (its commit also acknowledged it, so this is only the belt to those braces).
            known = PartitionKeys(partition).inputs
            stored = (
                await engine.command(["HMGET", known, *[i for i, _ in claimed]], key=known)
                if claimed
                else []
            )
            for (stream_id, fields), seq in zip(claimed, stored, strict=True):
                values = dict(pairs(fields))
                if seq is None:
                    self._serve(key, stream_id, values)
                else:
                    number = _text(seq)
                    outcome = fx.Accepted(int(number) if number else None)
                    self._answers.append((values["n"], values["r"], key, stream_id, outcome))
                    self._answers_ready.set()
            if start == "0-0":
                return

    def _serve(self, key: str, stream_id: str, values: dict[str, str]) -> None:
        board = self._board
        assert board is not None
        origin, request = values["n"], values["r"]
        conversation_id = values["c"]
        self.served += 1
        arrived_ms, _, _ = stream_id.partition("-")
        if arrived_ms.isdigit():
            self.inbound_lag = max(0.0, self.store.clock.now() - int(arrived_ms) / 1000)

        def reply(outcome: fx.Outcome) -> None:
            self._answers.append((origin, request, key, stream_id, outcome))
            self._answers_ready.set()

        try:
            event = message_from_json(values["e"])
            ref = values.get("a")
            Switchboard.submit(
                board,
                conversation_id,
                event,
                reply,
                origin=RemoteOrigin(ref) if ref else None,
                message_id=values["m"] or None,
                input_id=stream_id,
            )
        except Overloaded:
            reply(fx.Refusal("overloaded", "The conversation is busy; try again shortly."))
        except Exception:
            log.exception("an input from node %s cannot be handled", origin)
            reply(fx.Refusal("internal_error", "This input cannot be handled."))

    async def _answer_forever(self) -> None:
        """Every answer waiting and the acknowledgement of its input, in one round trip."""
        while True:
            await self._answers_ready.wait()
            self._answers_ready = trio.Event()
            answers, self._answers = self._answers, []
            commands: list[list[str]] = []
            for origin, request, key, stream_id, outcome in answers:
                fields = ["r", request, "o", message_json(outcome)]
                bound = ["MAXLEN", "~", str(STREAM_BOUND)]
                commands.append(["XADD", _outbox(origin), *bound, "*", *fields])
                commands.append(["XACK", key, GROUP, stream_id])
            try:
                results = await self.engine.pipeline(commands)
            except EngineError as exc:
                results = [exc]
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                log.warning("cannot answer %d inputs: %s", len(failed), failed[0])
