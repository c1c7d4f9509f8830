"""The desk across cluster nodes: one node at a time runs the real desk, under a lease.

An agent's capacity spans every bot it serves, so presence, capacity and the queue need one
owner for the whole cluster, not one per bot. The node holding ``{swdesk}:lease`` (a fencing
token like the partitions', docs/cluster.md) runs an :class:`actors.trio.desk.Desk`, the same
core as on one node. Every node's :class:`ClusterDesk` is the desk its servers and
conversations see:

- requests (an agent's connection, presence and claims; a session asking for an agent,
  withdrawn, released, transferred; users coming and going) are applied to the real desk
  when this node owns it, else appended to the desk's inbound stream ``{swdesk}:in``, which
  the owner reads and takes with a fenced script before applying, so a request is either
  applied by the owner of the moment or left for the next one;
- the owner stands for an agent connected to another node with a :class:`ProxySink`, whose
  deliveries (the desk's view, transcripts, refusals) go to that node's stream
  ``sw:desk:<node>``, which the node reads and hands to the connection;
- what a conversation delivers to its agent goes straight from the conversation's owner to
  the agent's connections on that node and to every other live node's stream, skipping the
  connection that wrote it (:class:`~transport.cluster.routing.RemoteOrigin`): deliveries do
  not wait on the desk's owner, and keep flowing while the desk changes hands.

When the owner dies or stops, another node takes the lease, builds a fresh desk (presence
from ``sw:presence``), and every node, seeing the new token, sends its agents' connections
again and re-asserts the open sessions of the partitions it owns, which rebuilds the queue and
the chats; an agent whose node is no longer live counts as disconnected (its grace period
runs).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from actors.machines import routing as rt
from actors.model.agent_request import AgentRequest
from actors.model.deliveries import Delivery, DeskStatus, Transcript
from actors.model.limits import ConversationLimits
from actors.model.records import Entry, Party
from actors.model.settings import BotSettings
from actors.ports import CoreLink, Sink
from actors.trio.desk import AgentProfile, Desk, UnknownAgent
from actors.trio.switchboard import Switchboard
from transport.cluster.codec import desk_from_json, desk_json, entry_from_json, entry_json
from transport.cluster.engine import Engine, EngineError, _script, connect
from transport.cluster.keys import (
    DESK_EPOCH,
    DESK_FIGURES,
    DESK_INBOX,
    DESK_LEASE,
    PRESENCE,
    desk_outbox,
)
from transport.cluster.routing import RemoteOrigin
from transport.cluster.store import ValkeyStore
from transport.cluster.streams import BLOCK_MS as _BLOCK_MS
from transport.cluster.streams import pairs, read_own_stream, stream_items
from transport.cluster.streams import text as _text

log = logging.getLogger("switchover.cluster")

#: Bound of the desk's inbound stream and of each node's deliveries (approximate trim).
INBOX_BOUND = 100_000
OUTBOX_BOUND = 20_000
#: Most requests and deliveries waiting to be sent: past it, new ones are dropped (logged).
SEND_BOUND = 100_000
_READ = ("XREAD", "COUNT", "500", "BLOCK", str(_BLOCK_MS))
#: Takes requests read from the desk's inbound stream, under the desk's lease.
_TAKE = _script("desk_take")


@attrs.define(eq=False)
class ProxySink:
    """On the desk's owner, an agent's connection on another node: what the desk hands it
    goes to that node's deliveries stream, addressed to the connection."""

    desk: ClusterDesk
    node: str
    ref: str
    agent_id: str

    def deliver(self, item: Delivery) -> None:
        """Never raises for what cannot be sent: the desk would take the connection for
        closed, while it is open on its node."""
        data = _encoded(item)
        if data is not None:
            self.desk._enqueue(desk_outbox(self.node), ["r", self.ref, "d", data])


def _encoded(item: Delivery) -> str | None:
    try:
        return desk_json(item)
    except (TypeError, ValueError, RecursionError):
        log.exception("a delivery to an agent cannot be sent to its node: %r", type(item))
        return None


class ClusterDesk(Desk):
    """The desk as a cluster node's servers and conversations see it (a
    :class:`~actors.ports.LivechatBackend` and the agents' side of :class:`Desk`), whichever
    node runs the real one. Made before the store opens; :meth:`bind` gives it the store."""

    def __init__(
        self,
        settings: Mapping[str, BotSettings],
        agents: Iterable[AgentProfile] = (),
        *,
        node_id: str,
        lease_seconds: float = 2.0,
        publish_interval: float = 0.05,
        transcript_tail: int = ConversationLimits().transcript_tail,
    ) -> None:
        agents = list(agents)
        super().__init__(
            settings, agents, publish_interval=publish_interval, transcript_tail=transcript_tail
        )
        self._agents = agents
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        #: This run of the node: connections of an earlier run under the same id are stale.
        self.boot = secrets.token_hex(6)
        self._refs = itertools.count(1)
        #: This node's agents' connections, each with the reference other nodes know it by.
        self.local: dict[str, list[Sink]] = {}
        self._ref_of: dict[int, str] = {}
        self._by_ref: dict[str, tuple[str, Sink]] = {}
        #: The chats each agent held in its latest view of the desk (for :meth:`holds` on a
        #: node that does not run the desk), and those picked up since.
        self.mirror: dict[str, set[str]] = {}
        self.inner: Desk | None = None
        self.store: ValkeyStore | None = None
        self.token: str | None = None
        self.holder: str | None = None
        #: On the owner: the connections of other nodes' agents, by reference.
        self.proxies: dict[str, ProxySink] = {}
        self._boots: dict[str, str] = {}
        self._outgoing: list[tuple[str, int, list[str]]] = []
        self._outgoing_ready = trio.Event()
        self._dropped = 0
        self._own_scope: trio.CancelScope | None = None
        self._figures = (0, 0)
        #: For /healthz and /metrics.
        self.takeovers = 0

    def bind(self, store: ValkeyStore) -> None:
        """The store is open: requests and deliveries go through its engine, and inputs
        from this node's agents carry their connection's reference."""
        self.store = store
        if store.router is not None:
            store.router.origin_ref = self._origin_ref
        store.desk = self

    def _origin_ref(self, sink: Sink | None) -> str | None:
        return None if sink is None else self._ref_of.get(id(sink))

    @property
    def owner(self) -> bool:
        return self.inner is not None

    # -- the agents' side -------------------------------------------------------------------

    def attach(self, agent_id: str, sink: Sink) -> None:
        if agent_id not in self.profiles:
            raise UnknownAgent(agent_id)
        ref = f"{self.node_id}:{self.boot}:{next(self._refs)}"
        self.local.setdefault(agent_id, []).append(sink)
        self._ref_of[id(sink)] = ref
        self._by_ref[ref] = (agent_id, sink)
        if self.inner is not None:
            self.inner.attach(agent_id, sink)
        else:
            self._request("attach", agent_id, ref)

    def detach(self, agent_id: str, sink: Sink) -> None:
        sinks = self.local.get(agent_id, [])
        if sink not in sinks:
            return
        sinks.remove(sink)
        if not sinks:
            del self.local[agent_id]
            self.mirror.pop(agent_id, None)
        ref = self._ref_of.pop(id(sink), "")
        self._by_ref.pop(ref, None)
        if self.inner is not None:
            self.inner.detach(agent_id, sink)
        else:
            self._request("detach", agent_id, ref)

    def set_presence(self, agent_id: str, presence: rt.Presence) -> None:
        if agent_id not in self.profiles:
            raise UnknownAgent(agent_id)
        if self.inner is not None:
            self.inner.set_presence(agent_id, presence)
        else:
            self._request("presence", agent_id, presence.value)

    def claim(self, agent_id: str, conversation_id: str) -> None:
        if self.inner is not None:
            self.inner.claim(agent_id, conversation_id)
        else:
            self._request("claim", agent_id, conversation_id)

    def apply_settings(self, bot_id: str, settings: BotSettings) -> None:
        self.settings[bot_id] = settings
        if self.inner is not None:
            self.inner.apply_settings(bot_id, settings)
        else:
            self._request("settings", bot_id, settings)

    def ready(self) -> None:
        """Grace periods are held by each desk the cluster builds until its nodes had a
        round to send their agents again (:meth:`_own`)."""

    def restore_presences(self, presences: Mapping[str, str]) -> int:
        return 0  # the desk's owner reads them from the engine when it takes the desk

    def user_attached(self, conversation_id: str) -> None:
        if self.inner is not None:
            self.inner.user_attached(conversation_id)
        else:
            self._request("came", conversation_id)

    def user_detached(self, conversation_id: str) -> None:
        if self.inner is not None:
            self.inner.user_detached(conversation_id)
        else:
            self._request("went", conversation_id)

    def holds(self, agent_id: str, conversation_id: str) -> bool:
        if self.inner is not None:
            return self.inner.holds(agent_id, conversation_id)
        return conversation_id in self.mirror.get(agent_id, ())

    def status_of(self, agent_id: str) -> DeskStatus:
        if self.inner is None:
            raise LookupError("this node does not run the desk")
        return self.inner.status_of(agent_id)

    @property
    def queue_length(self) -> int:
        return self.inner.queue_length if self.inner is not None else self._figures[0]

    @property
    def agents_available(self) -> int:
        return self.inner.agents_available if self.inner is not None else self._figures[1]

    # -- the conversations' side (LivechatBackend) ------------------------------------------

    def request_agent(self, request: AgentRequest) -> None:
        if self.inner is not None:
            self.inner.request_agent(request)
        else:
            self._request("request", request)

    def request_agents(self, requests: Sequence[AgentRequest]) -> None:
        """A restore's sessions: one batch for the desk on this node, else one request
        each through the engine (the owner's desk takes them as they come)."""
        if self.inner is not None:
            self.inner.request_agents(requests)
        else:
            for request in requests:
                self._request("request", request)

    def withdraw(self, conversation_id: str, session_id: str) -> None:
        if self.inner is not None:
            self.inner.withdraw(conversation_id, session_id)
        else:
            self._request("withdraw", conversation_id, session_id)

    def release(self, conversation_id: str, session_id: str, agent_id: str, reason: str) -> None:
        if self.inner is not None:
            self.inner.release(conversation_id, session_id, agent_id, reason)
        else:
            self._request("release", conversation_id, session_id, agent_id, reason)

    def transfer(
        self, conversation_id: str, session_id: str, from_agent: str, to_agent: str | None
    ) -> None:
        if self.inner is not None:
            self.inner.transfer(conversation_id, session_id, from_agent, to_agent)
        else:
            self._request("transfer", conversation_id, session_id, from_agent, to_agent)

    def deliver(self, agent_id: str, item: Delivery, *, skip: Sink | None = None) -> None:
        """To the agent's connections here but ``skip``, and to every other live node, which
        hands it to the agent's connections there but the one ``skip`` stands for."""
        if isinstance(skip, RemoteOrigin):
            # One of this node's own connections when this node took the conversation over
            # while the input was on its way to the last owner.
            here = self._by_ref.get(skip.ref)
            self._deliver_here(agent_id, item, here[1] if here is not None else None)
        else:
            self._deliver_here(agent_id, item, skip)
        store = self.store
        if store is None:
            return
        skip_ref = skip.ref if isinstance(skip, RemoteOrigin) else ""
        others = [node for node in store.leases.peers if node != self.node_id]
        data = _encoded(item) if others else None
        if data is None:
            return
        for node in others:
            self._enqueue(desk_outbox(node), ["a", agent_id, "s", skip_ref, "d", data])

    def deliver_waiting(self, session_id: str, entry: Entry) -> None:
        if entry.sender is not Party.USER:
            return
        if self.inner is not None:
            self.inner.deliver_waiting(session_id, entry)
        else:
            self._request("wrote", session_id, entry_json(entry))

    def _deliver_here(self, agent_id: str, item: Delivery, skip: Sink | None) -> None:
        self._note(agent_id, item)
        for sink in list(self.local.get(agent_id, ())):
            if sink is not skip:
                self._deliver_to(agent_id, sink, item)

    def _note(self, agent_id: str, item: Delivery) -> None:
        """Keep what the agent holds, for :meth:`holds` on a node that does not run the
        desk: its view lists its chats, and a transcript comes with each pickup."""
        if isinstance(item, DeskStatus):
            self.mirror[agent_id] = {chat.conversation_id for chat in item.chats}
        elif isinstance(item, Transcript):
            self.mirror.setdefault(agent_id, set()).add(item.conversation_id)

    # -- sending to the engine --------------------------------------------------------------

    def _request(self, kind: str, *args: Any) -> None:
        fields = ["n", self.node_id, "b", self.boot, "k", kind, "d", desk_json(list(args))]
        self._enqueue(DESK_INBOX, fields, INBOX_BOUND)

    def _enqueue(self, key: str, fields: list[str], bound: int = OUTBOX_BOUND) -> None:
        if len(self._outgoing) >= SEND_BOUND:
            self._dropped += 1
            if self._dropped % 1000 == 1:
                log.warning("the desk's messages to the engine are not leaving: dropping them")
            return
        self._outgoing.append((key, bound, fields))
        self._outgoing_ready.set()

    async def _send_forever(self, engine: Engine) -> None:
        """Everything waiting, in order, one round trip per pass; retried with back-off
        while the engine cannot be reached."""
        pause = 0.05
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready = trio.Event()
            outgoing, self._outgoing = self._outgoing, []
            commands = [
                ["XADD", key, "MAXLEN", "~", str(bound), "*", *fields]
                for key, bound, fields in outgoing
            ]
            try:
                answers = await engine.pipeline(commands)
            except EngineError as exc:
                log.warning("the desk cannot reach the engine: %s", exc)
                self._outgoing[:0] = outgoing
                self._outgoing_ready.set()
                await trio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.05
            failed = [a for a in answers if isinstance(a, Exception)]
            if failed:
                log.warning("%d desk messages were not sent: %s", len(failed), failed[0])

    # -- this node's deliveries -------------------------------------------------------------

    async def _read_deliveries_forever(self, addresses: list[str]) -> None:
        # From the oldest: what was sent before this node's connections exist (an earlier
        # run's) finds no connection and is dropped; nothing sent since is missed.
        key = desk_outbox(self.node_id)
        await read_own_stream(addresses, key, self._delivered, "the deliveries to its agents")

    def _delivered(self, values: dict[str, str]) -> None:
        if values.get("k") == "resend":
            # The desk forgot this node's connections (it seemed gone): send them again.
            for known, (agent_id, _) in list(self._by_ref.items()):
                self._request("attach", agent_id, known)
            return
        try:
            item = desk_from_json(values["d"])
        except (KeyError, TypeError, ValueError):
            log.warning("a delivery to an agent cannot be read; dropped")
            return
        ref = values.get("r")
        if ref is not None:
            found = self._by_ref.get(ref)
            if found is not None:
                agent_id, sink = found
                self._note(agent_id, item)
                self._deliver_to(agent_id, sink, item)
            return
        agent_id, skip = values.get("a", ""), values.get("s", "")
        found = self._by_ref.get(skip) if skip else None
        self._deliver_here(agent_id, item, found[1] if found is not None else None)

    # -- the lease, and running the desk ----------------------------------------------------

    async def run(self, core: CoreLink, *, task_status: trio.TaskStatus[None]) -> None:
        """Send and read this node's desk traffic, and take the desk when it is free, for
        as long as the node runs; a graceful stop gives the desk up at once."""
        store = self.store
        if store is None:
            raise RuntimeError("the cluster's desk needs the store: call bind() first")
        engine = store.engine
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_forever, engine)
                nursery.start_soon(self._read_deliveries_forever, store.addresses)
                task_status.started()
                await self._keep_lease(core, store, nursery)
        finally:
            token, self.token = self.token, None
            self.inner = None
            if token is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    try:
                        await store.leases.engine.run(
                            store.leases.engine.release, [DESK_LEASE], [token]
                        )
                    except EngineError as exc:
                        log.warning("could not give the desk up: %s", exc)

    async def _keep_lease(self, core: CoreLink, store: ValkeyStore, nursery: trio.Nursery) -> None:
        engine = store.leases.engine
        lease_ms = str(max(1, round(self.lease_seconds * 1000)))
        first = True
        while True:
            try:
                if self.token is not None:
                    if not await engine.run(engine.renew, [DESK_LEASE], [self.token, lease_ms]):
                        self._lose()
                    else:
                        await self._share_figures(engine, lease_ms)
                        self._forget_gone(store.leases.peers)
                else:
                    taken, value = await engine.run(
                        engine.acquire, [DESK_LEASE, DESK_EPOCH], [self.node_id, lease_ms]
                    )
                    holder = _text(value)
                    if taken:
                        self.token = self.holder = holder
                        if not first:
                            self.takeovers += 1
                        log.info("took the desk (%s)", holder, extra={"desk": holder})
                        nursery.start_soon(self._own, core, store, holder)
                    elif holder != self.holder:
                        self.holder = holder
                        log.info("the desk is on %s", holder.rpartition(":")[0])
                        await self._send_again(core, store)
                    else:
                        figures = await engine.command(["GET", DESK_FIGURES], key=DESK_FIGURES)
                        if figures is not None:
                            queue, _, agents = _text(figures).partition(" ")
                            self._figures = (int(queue), int(agents))
            except EngineError as exc:
                log.warning("desk lease round failed: %s", exc)
            first = False
            await trio.sleep(self.lease_seconds / 3)

    def _lose(self) -> None:
        log.error("lost the desk's lease: another node runs the desk now")
        self.token = None
        self.inner = None
        self.proxies.clear()
        if self._own_scope is not None:
            self._own_scope.cancel()

    async def _share_figures(self, engine: Engine, lease_ms: str) -> None:
        inner = self.inner
        if inner is not None:
            value = f"{inner.queue_length} {inner.agents_available}"
            await engine.command(
                ["SET", DESK_FIGURES, value, "PX", str(int(lease_ms) * 3)], key=DESK_FIGURES
            )

    async def _send_again(self, core: CoreLink, store: ValkeyStore) -> None:
        """A new desk: it hears of this node's agents' connections and of the open sessions
        of this node's partitions again (the path a restarted backend is re-asserted by).
        What its agents hold stays as they last saw it until the new desk's views arrive, so
        they can go on writing meanwhile (the conversation is the final word)."""
        for ref, (agent_id, _) in list(self._by_ref.items()):
            self._request("attach", agent_id, ref)
        await self._reassert(core, store)

    async def _reassert(self, core: CoreLink, store: ValkeyStore) -> None:
        if not isinstance(core, Switchboard):
            return
        try:
            states = await store._open_sessions(sorted(store.leases.tokens))
        except Exception:
            log.exception("the open sessions could not be read for the new desk")
            return
        states = [
            s
            for s in states
            if s.bot_id in core.bots and core.bots[s.bot_id].backend in _names(core, self)
        ]
        core.restore(states, [])

    async def _own(self, core: CoreLink, store: ValkeyStore, token: str) -> None:
        """Run the desk while this node holds its lease: a fresh desk, agents' presence as
        last kept, this node's connections and sessions, then every request read."""
        inner = Desk(
            self.settings,
            self._agents,
            publish_interval=self.publish_interval,
            transcript_tail=self.transcript_tail,
            wait_for_ready=True,
            # Decisions of this desk order after those of every earlier one.
            run=int(token.rpartition(":")[2]) * 1000,
        )
        try:
            kept = await store.engine.command(["HGETALL", PRESENCE], key=PRESENCE) or {}
            # A map under RESP3 (glide's default), a flat list under RESP2.
            inner.restore_presences({k: v.partition(" ")[0] for k, v in pairs(kept)})
        except EngineError as exc:
            log.warning("agents' presence could not be read for the desk: %s", exc)
        with trio.CancelScope() as scope:
            self._own_scope = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(inner.run, core)
                self.inner = inner
                self.proxies.clear()
                self._boots.clear()
                for agent_id, sinks in self.local.items():
                    for sink in sinks:
                        inner.attach(agent_id, sink)
                nursery.start_soon(self._read_requests_forever, store, token)
                await self._reassert(core, store)
                # The other nodes send their agents and sessions again within a round of
                # their lease loop: until then, no chat's grace period runs out.
                await trio.sleep(self.lease_seconds)
                inner.ready()
        if self.inner is inner:
            self.inner = None

    async def _read_requests_forever(self, store: ValkeyStore, token: str) -> None:
        """Read the desk's inbound stream from its oldest request (those the last owner
        did not take), take each batch under the lease, then apply it."""
        engine = await connect(store.addresses, timeout_ms=_BLOCK_MS * 10)
        last = "0-0"
        try:
            while True:
                try:
                    found = await engine.command(
                        [*_READ, "STREAMS", DESK_INBOX, last],
                        key=DESK_INBOX,
                    )
                    if not found:
                        continue
                    items = stream_items(found)
                    ids = [stream_id for stream_id, _ in items]
                    await engine.run(_TAKE, [DESK_LEASE, DESK_INBOX], [token, *ids])
                except EngineError as exc:
                    if "FENCED" in str(exc):
                        self._lose()
                        return
                    log.warning("cannot read the desk's requests: %s", exc)
                    await trio.sleep(_BLOCK_MS / 1000)
                    continue
                for stream_id, fields in items:
                    last = stream_id
                    self._apply_request(dict(pairs(fields)))
        finally:
            with trio.CancelScope(shield=True):
                await engine.close()

    def _apply_request(self, values: dict[str, str]) -> None:
        inner = self.inner
        if inner is None:
            return
        node, boot, kind = values.get("n", ""), values.get("b", ""), values.get("k", "")
        try:
            args = desk_from_json(values["d"])
            if node == self.node_id:
                if boot != self.boot or kind in ("attach", "detach"):
                    return  # this node's connections are the desk's own sinks
            elif self._boots.get(node) != boot:
                self._forget_node(node)
                self._boots[node] = boot
            self._carry_out_request(inner, node, kind, args)
        except Exception:
            log.exception("a desk request from node %s cannot be handled", node)

    def _carry_out_request(self, inner: Desk, node: str, kind: str, args: list[Any]) -> None:
        match kind:
            case "attach":
                agent_id, ref = args
                if ref not in self.proxies:
                    proxy = self.proxies[ref] = ProxySink(self, node, ref, agent_id)
                    inner.attach(agent_id, proxy)
            case "detach":
                agent_id, ref = args
                gone = self.proxies.pop(ref, None)
                if gone is not None:
                    inner.detach(agent_id, gone)
            case "presence":
                inner.set_presence(args[0], rt.Presence(args[1]))
            case "claim":
                inner.claim(args[0], args[1])
            case "settings":
                self.settings[args[0]] = args[1]
                inner.apply_settings(args[0], args[1])
            case "came":
                inner.user_attached(args[0])
            case "went":
                inner.user_detached(args[0])
            case "request":
                if not isinstance(args[0], AgentRequest):
                    raise TypeError(f"not an agent request: {args[0]!r}")
                inner.request_agent(args[0])
            case "withdraw":
                inner.withdraw(args[0], args[1])
            case "release":
                inner.release(args[0], args[1], args[2], args[3])
            case "transfer":
                inner.transfer(args[0], args[1], args[2], args[3])
            case "wrote":
                inner.deliver_waiting(args[0], entry_from_json(args[1]))
            case _:
                raise ValueError(f"unknown desk request {kind!r}")

    def _forget_node(self, node: str) -> None:
        """The node is gone (or runs again afresh): its agents' connections are closed."""
        inner = self.inner
        for ref, proxy in list(self.proxies.items()):
            if proxy.node == node:
                del self.proxies[ref]
                if inner is not None:
                    inner.detach(proxy.agent_id, proxy)

    def _forget_gone(self, peers: list[str]) -> None:
        live = set(peers)
        for node in {proxy.node for proxy in self.proxies.values()} - live:
            log.info("node %s is gone: its agents' connections are closed", node)
            self._forget_node(node)
            # Should it be alive after all (its announcement lapsed), it sends them again.
            self._enqueue(desk_outbox(node), ["k", "resend"])


def _names(core: Switchboard, desk: ClusterDesk) -> set[str]:
    """The names the switchboard knows this desk by."""
    return {name for name, backend in core.backends.items() if backend is desk}
