"""The Store port on Valkey: a conversation's state, its log and its deadline, written by one
atomic script per commit under the partition's fencing token.

Per partition (every key under its hash tag, see :mod:`transport.cluster.keys`): a hash per
conversation (its state and next seq), a stream per conversation (its log: entry id
``seq-0``, so the engine itself refuses a seq out of order), the set of conversations with
an open session, the sorted set of their deadlines, and the hash of entries owed to the bot.
``record`` returns once the commit is durable as ``store.durability`` asks (docs/cluster.md).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from actors import SESSION_EXPIRED, Content, ConversationState, Entry, Party
from actors.model.settings import BotSettings
from actors.model.state import deadline
from actors.ports import StoreUnavailable
from transport.cluster.attachments import ValkeyAttachments
from transport.cluster.codec import entry_from_json, entry_json, state_from_json, state_json
from transport.cluster.engine import Engine, EngineError, connect
from transport.cluster.keys import PRESENCE, PartitionKeys, partition_of
from transport.cluster.leases import Leases
from transport.cluster.settings import SharedSettings

if TYPE_CHECKING:
    from actors.trio.switchboard import Switchboard
    from transport.cluster.desk import ClusterDesk
    from transport.cluster.routing import Router

log = logging.getLogger("switchover.cluster")

#: How long a commit waits for its durability (fsync or a replica) before it is refused.
DURABLE_TIMEOUT_MS = 1000
#: How many stored routed inputs each partition remembers, newest by arrival. An input can
#: be handed over again only while it is in its inbound stream, which keeps about the newest
#: 100,000 (``routing.STREAM_BOUND``, an approximate trim): remembering twice as many by the
#: same order (arrival) covers every input that can still come back.
INPUT_MEMORY = 200_000
#: What an expiry tells the bot: a commit holding it is checked against the engine's clock.
_EXPIRED = Content.payload(SESSION_EXPIRED)
#: Most "owed to the bot" marks cleared in one command.
_DONE_BATCH = 500


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ValkeyStore:
    """Implements :class:`actors.ports.Store` for the partitions this node owns.

    A conversation whose partition this node does not own is refused with
    :class:`StoreUnavailable` (its sender is told ``store_unavailable`` and nothing is
    acknowledged); reads work for every partition.
    """

    def __init__(
        self,
        engine: Engine,
        leases: Leases,
        *,
        settings: Mapping[str, BotSettings] | None = None,
        durability: str = "aof",
        addresses: Sequence[str] = (),
    ) -> None:
        self.engine = engine
        self.addresses = list(addresses)
        self.router: Router | None = None
        #: The cluster's desk (transport/cluster/desk.py), when the runtime bound one.
        self.desk: ClusterDesk | None = None
        self.leases = leases
        self.settings = dict(settings or {})
        self.durability = durability
        #: The core's clock on this node: the engine's (see transport/cluster/clock.py).
        self.clock = leases.clock
        self.commits = 0
        self.fenced = 0
        self._done: list[tuple[int, str]] = []
        self._done_waiting = trio.Event()
        #: The partitions whose open sessions the switchboard was given.
        self._restored: set[int] = set()

    def _keys(self, conversation_id: str) -> PartitionKeys:
        return PartitionKeys(partition_of(conversation_id, self.leases.partitions))

    # -- the switchboard's side -------------------------------------------------------------

    def new_conversation_id(self) -> str:
        """A fresh conversation id in a partition this node owns: a new conversation is
        served where its user connected (a few draws on average: the node owns its share)."""
        owned = self.leases.tokens
        while True:
            conversation_id = secrets.token_hex(12)
            if not owned or partition_of(conversation_id, self.leases.partitions) in owned:
                return conversation_id

    def switchboard(self, *args: Any, **options: Any) -> Switchboard:
        """The runtime's switchboard for this node: conversations owned elsewhere are
        routed to their owner (:mod:`transport.cluster.routing`)."""
        from transport.cluster.board import ClusterSwitchboard
        from transport.cluster.routing import Router

        self.router = Router(self, self.addresses)
        return ClusterSwitchboard(*args, router=self.router, **options)

    def shared_settings(self) -> SharedSettings:
        """Administrators' changes to bots' settings, kept in the engine and taken up by
        every node (:mod:`transport.cluster.settings`)."""
        return SharedSettings(self.engine, self.addresses, self._durable)

    def attachments(self) -> ValkeyAttachments:
        """Attachments kept in the engine, durable as the commits are, so any node serves
        them (:mod:`transport.cluster.attachments`)."""
        return ValkeyAttachments(self.engine, self.leases.partitions, self._durable)

    async def follow(self, board: Switchboard) -> None:
        """Route for the switchboard (when it is this store's), and hand it the open
        sessions and the bots' unanswered events of every partition this node takes over,
        as it takes them: their deadlines, even those that passed while the partition had no
        owner, fire from the stored state, once."""
        async with trio.open_nursery() as nursery:
            if self.router is not None:
                nursery.start_soon(self.router.run, board)
            await self._restore_taken_over(board)

    async def _restore_taken_over(self, board: Switchboard) -> None:
        while True:
            gained = set(self.leases.tokens) - self._restored
            if not gained:
                await self.leases.changed()
                continue
            self._restored |= gained
            partitions = sorted(gained)
            states = await self._open_sessions(partitions)
            backlog = await self._bot_backlog(partitions)
            board.restore(states, backlog)
            if self.router is not None:
                self.router.adopt(partitions)
            log.info(
                "restored %d open sessions of %d partitions taken over",
                len(states),
                len(partitions),
                extra={"sessions": len(states), "partitions": len(partitions)},
            )

    def settings_changed(self, bot_id: str, settings: BotSettings) -> None:
        """A bot's settings changed on this node: its next commits count the engine's
        deadlines with them, as the core's alarms do."""
        self.settings[bot_id] = settings

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` tells about this node of the cluster."""
        leases = self.leases
        skew = self.clock.skew()
        return {
            "cluster": {
                "node_id": leases.node_id,
                "partitions_owned": sorted(leases.tokens),
                "partitions": leases.partitions,
                "live_nodes": leases.live_nodes,
                "lease_renewals": leases.renewals,
                "takeovers": leases.takeovers,
                "commits": self.commits,
                "fenced_commits": self.fenced,
                "inputs_forwarded": 0 if self.router is None else self.router.forwarded,
                "inputs_served": 0 if self.router is None else self.router.served,
                "inputs_waiting": 0 if self.router is None else len(self.router.pending),
                "inbound_lag": 0.0 if self.router is None else round(self.router.inbound_lag, 4),
                "desk_owner": self.desk is not None and self.desk.owner,
                "desk_takeovers": 0 if self.desk is None else self.desk.takeovers,
                "engine_clock_ahead": None if skew is None else round(skew, 4),
            }
        }

    # -- writing ---------------------------------------------------------------------------

    async def record(
        self,
        state: ConversationState,
        entries: Sequence[Entry],
        inputs: Sequence[tuple[str, int | None]] = (),
    ) -> None:
        """Commit, and with it remember and acknowledge the routed ``inputs`` (their inbound
        stream ids, see :class:`actors.ports.InputStore`): refused when one is already
        stored, so an input handed over again after a failover is stored once."""
        conversation_id = state.conversation_id
        keys = self._keys(conversation_id)
        token = self.leases.token(keys.number)
        if token is None:
            raise StoreUnavailable(
                f"this node does not own partition {keys.number} of {conversation_id!r}"
            )
        settings = self.settings.get(state.bot_id)
        due = deadline(state, settings) if settings is not None else None
        try:
            args = [
                token,
                conversation_id,
                str(entries[0].seq if entries else 0),
                str(state.next_seq),
                state_json(state),
                "1" if state.session is not None else "0",
                # What is left of it: the engine counts it from its own clock.
                "" if due is None else repr(due - self.clock.now()),
                str(len(entries)),
            ]
            for entry in entries:
                owed = "1" if Party.BOT in entry.audience else "0"
                args += [str(entry.seq), entry_json(entry), owed]
            args.append(str(len(inputs)))
            for input_id, seq in inputs:
                args += [input_id, "" if seq is None else str(seq)]
            args.append(str(INPUT_MEMORY))
            args.append("1" if any(e.content == _EXPIRED for e in entries) else "0")
            for arg in args:
                arg.encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreUnavailable(f"this message cannot be stored: {exc!r}") from exc
        key_list = [
            keys.lease,
            keys.conversation(conversation_id),
            keys.log(conversation_id),
            keys.open,
            keys.deadlines,
            keys.owed,
            keys.inbox,
            keys.inputs,
            keys.inputs_order,
        ]
        try:
            await self.engine.run(self.engine.commit, key_list, args)
        except EngineError as exc:
            if "FENCED" in str(exc):
                self.fenced += 1
            raise StoreUnavailable(f"the commit was refused: {exc}") from exc
        await self._durable(keys.lease)
        self.commits += 1

    def _wait_command(self) -> list[str]:
        if self.durability == "aof":
            return ["WAITAOF", "1", "0", str(DURABLE_TIMEOUT_MS)]
        return ["WAIT", "1", str(DURABLE_TIMEOUT_MS)]

    def _waited(self, answer: Any) -> bool:
        """Whether a WAITAOF (fsynced locally) or WAIT (a replica has it) answer says so."""
        if self.durability == "aof":
            return int(answer[0]) >= 1
        return int(answer) >= 1

    async def _durable(self, key: str | None) -> None:
        """Wait until the last write of this connection is fsynced (``aof``) or on a replica
        (``replica``); ``none`` acknowledges what is only in the engine's memory. The wait
        goes to the master of ``key``'s slot, the one that took the write (WAITAOF and WAIT
        count the writes of the connection they are sent on); ``None``: every master, the
        check at start."""
        if self.durability == "none":
            return
        try:
            if key is None:
                answers = await self.engine.every_primary(self._wait_command())
                done = all(self._waited(answer) for answer in answers)
            else:
                done = self._waited(await self.engine.command(self._wait_command(), key=key))
        except EngineError as exc:
            raise StoreUnavailable(f"the commit may not be durable: {exc}") from exc
        if not done:
            raise StoreUnavailable(f"the commit was not made durable ({self.durability}) in time")

    async def record_presence(self, agent_id: str, presence: str, at: float | None = None) -> None:
        """Keep an agent's last presence, for operators (the desk holds the live one)."""
        await self.engine.command(
            ["HSET", PRESENCE, agent_id, f"{presence} {at if at is not None else ''}"],
            key=PRESENCE,
        )

    def bot_done(self, conversation_id: str, seq: int) -> None:
        """Cleared by the flusher task without waiting: if that is lost, the bot hears the
        event once more (it is owed at least once)."""
        self._done.append((seq, conversation_id))
        self._done_waiting.set()

    async def flush_done(self) -> None:
        """Clear the bot's answered events as they come, until cancelled."""
        while True:
            await self._done_waiting.wait()
            self._done_waiting = trio.Event()
            await self.flush_pending()

    async def flush_pending(self) -> None:
        """Clear the answered events noted so far."""
        done, self._done = self._done, []
        if done:
            for start in range(0, len(done), _DONE_BATCH):
                by_partition: dict[str, list[str]] = {}
                for seq, conversation_id in done[start : start + _DONE_BATCH]:
                    owed = self._keys(conversation_id).owed
                    by_partition.setdefault(owed, []).append(f"{seq}:{conversation_id}")
                for owed, fields in by_partition.items():
                    try:
                        await self.engine.command(["HDEL", owed, *fields], key=owed)
                    except EngineError as exc:
                        log.warning("could not clear %d answered bot events: %s", len(fields), exc)

    # -- reading ---------------------------------------------------------------------------

    async def load(self, conversation_id: str) -> ConversationState | None:
        key = self._keys(conversation_id).conversation(conversation_id)
        text = await self._read(["HGET", key, "s"], key)
        return None if text is None else state_from_json(text)

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]:
        key = self._keys(conversation_id).log(conversation_id)
        rows = await self._read(["XRANGE", key, f"{max(after_seq, 0) + 1}-0", "+"], key)
        return _entries(rows)

    async def message_ids(self, conversation_id: str, after_seq: int) -> list[tuple[int, str]]:
        """``(seq, message_id)`` of the entries after ``after_seq`` kept with an id: only
        the JSON of those that name one is parsed, and no entry is built."""
        key = self._keys(conversation_id).log(conversation_id)
        rows = await self._read(["XRANGE", key, f"{max(after_seq, 0) + 1}-0", "+"], key)
        found = []
        for value in _values(rows):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if '"message_id"' in text:
                data = json.loads(text)
                message_id = data.get("message_id")
                if isinstance(message_id, str):
                    found.append((int(data["seq"]), message_id))
        return found

    async def open_sessions(self) -> list[ConversationState]:
        owned = sorted(self.leases.tokens)
        self._restored |= set(owned)
        return await self._open_sessions(owned)

    async def _open_sessions(self, partitions: Sequence[int]) -> list[ConversationState]:
        states = []
        for partition in partitions:
            keys = PartitionKeys(partition)
            for member in sorted(await self._read(["SMEMBERS", keys.open], keys.open) or []):
                state = await self.load(_text(member))
                if state is not None and state.session is not None:
                    states.append(state)
        return states

    async def bot_backlog(self) -> list[Entry]:
        return await self._bot_backlog(sorted(self.leases.tokens))

    async def _bot_backlog(self, partitions: Sequence[int]) -> list[Entry]:
        owed: list[tuple[str, int]] = []
        for partition in partitions:
            key = PartitionKeys(partition).owed
            for field in await self._read(["HKEYS", key], key) or []:
                number, _, conversation_id = _text(field).partition(":")
                owed.append((conversation_id, int(number)))
        entries: list[Entry] = []
        for conversation_id, seq in sorted(owed):
            key = self._keys(conversation_id).log(conversation_id)
            rows = await self._read(["XRANGE", key, f"{seq}-0", f"{seq}-0"], key)
            entries.extend(_entries(rows))
        return entries

    async def _read(self, args: list[str], key: str) -> Any:
        try:
            return await self.engine.command(args, key=key)
        except EngineError as exc:
            raise StoreUnavailable(f"the cluster store cannot be read: {exc}") from exc


def _values(rows: Any) -> list[Any]:
    """The entries' JSON of an XRANGE answer: a map of stream id to fields under RESP3
    (glide's default, in id order), a list of [id, fields] under RESP2."""
    items = rows.items() if isinstance(rows, Mapping) else (rows or [])
    # fields: [[b"e", json]] (RESP3) or [b"e", json] (RESP2)
    return [fields[0][1] if isinstance(fields[0], list) else fields[1] for _, fields in items]


def _entries(rows: Any) -> list[Entry]:
    return [entry_from_json(value) for value in _values(rows)]


@asynccontextmanager
async def open_valkey_store(
    addresses: Sequence[str],
    node_id: str,
    *,
    partitions: int = 64,
    lease_seconds: float = 2.0,
    durability: str = "aof",
    settings: Mapping[str, BotSettings] | None = None,
    settle: bool = True,
) -> AsyncIterator[ValkeyStore]:
    """Connect, check that commits can be made durable, take this node's share of the
    partitions, and keep the leases for the duration of the block; on leaving, give them up
    at once so another node takes them over (``settle``: see :meth:`Leases.start`). Raises
    :class:`StoreUnavailable` when the engine cannot be used: the server must refuse to
    start. A lost lease raises :class:`LeaseLost` out of the block: the node stops."""
    try:
        engine = await connect(addresses)
        # The leases have a connection of their own: a renewal never waits behind commits.
        lease_engine = await connect(addresses)
    except EngineError as exc:
        raise StoreUnavailable(
            f"cannot reach the cluster store at {', '.join(addresses)}: {exc}"
        ) from exc
    try:
        leases = Leases(lease_engine, node_id, partitions, lease_seconds)
        store = ValkeyStore(
            engine, leases, settings=settings, durability=durability, addresses=addresses
        )
        try:
            await store._durable(None)
            for _ in range(3):  # the engine's clock, before anything is stamped with it
                await leases.engine_now_ms()
            await leases.start(settle=settle)
        except EngineError as exc:
            raise StoreUnavailable(f"the cluster store cannot be used: {exc}") from exc
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leases.run)
            nursery.start_soon(store.flush_done)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    try:
                        await leases.release_all()
                    except EngineError as exc:
                        log.warning("could not give the leases up: %s", exc)
    finally:
        with trio.CancelScope(shield=True):
            await engine.close()
            await lease_engine.close()
