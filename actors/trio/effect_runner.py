"""Carrying out a committed transition's effects, where nothing that fails may undo the commit.

Once the store has a transition, its sender is told ``Accepted`` whatever happens next, so
no failure here is allowed to skip the remaining effects or reach the sender. The rules, per
kind of effect:

======================================  ==================================================
what fails                              what happens
======================================  ==================================================
a user's sink raises on ``deliver``     that sink is dropped from the conversation and
                                        abandoned (its client is closed with a resumable
                                        code and catches up by ``seq``); the others still
                                        get the entry
the backend's ``deliver`` raises        logged once per failing streak; the agent's client
                                        catches up by ``seq`` (``replay``)
a backend request raises (request,      kept, and tried again with capped exponential
withdraw, release, transfer)            backoff; a retry re-asserts only what is still
                                        current (a request for a session that has ended
                                        since is not sent again; withdrawals always are)
sharing the transcript fails            tried again the same way while the same agent still
                                        holds the same session
feeding the bot                         cannot fail: it only queues (see ``bot_feeder``)
======================================  ==================================================

Backend requests are idempotent and keyed by session id (see
:class:`~actors.ports.LivechatBackend`), which is what makes a retry, or a re-assertion after
any restart, safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import trio

from actors.machines.backoff import Backoff
from actors.model import effects as fx
from actors.model.agent_request import NO_DECISION, AgentRequest, Decision, user_name
from actors.model.deliveries import QueuePosition, Transcript, Typing
from actors.model.records import Entry, Party
from actors.model.state import ConversationState
from actors.ports import Sink
from actors.trio.context import ConversationContext
from actors.trio.transcripts import read_transcript

log = logging.getLogger("switchover.conversation")

BackendEffect = (
    fx.RequestAgent | fx.WithdrawRequest | fx.ReleaseAgent | fx.TransferChat | fx.ShareTranscript
)


def abandon(sink: Sink) -> None:
    """Let go of a sink that raised: close its client if it can be closed (it resumes by
    ``seq``), never raising."""
    close = getattr(sink, "abandon", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.exception("a client could not be closed")


class BotFeed(Protocol):
    """Who feeds the conversation's bot (the actor, which owns the bot feeder)."""

    def feed_bot(self, entry: Entry, state: ConversationState) -> None: ...


class EffectRunner:
    """Carries out the effects of one conversation's transitions. ``subscribers`` is the
    conversation's own list of user sinks (shared, not copied)."""

    __slots__ = (
        "_backoff",
        "_deliver_failing",
        "context",
        "conversation_id",
        "decision",
        "owner",
        "pending",
        "position",
        "subscribers",
    )

    def __init__(
        self,
        context: ConversationContext,
        conversation_id: str,
        subscribers: list[Sink],
        owner: BotFeed,
    ) -> None:
        self.context = context
        self.conversation_id = conversation_id
        self.subscribers = subscribers
        self.owner = owner
        #: Backend effects that raised, in order, waiting for their retry.
        self.pending: Sequence[BackendEffect] = ()
        self._backoff: Backoff | None = None
        self._deliver_failing = False
        #: The last queue position told to the user (ephemeral: never stored).
        self.position: QueuePosition | None = None
        #: The session and stamp of the last backend decision applied (see ``Decision``).
        self.decision: tuple[str, Decision] | None = None

    @property
    def retry_due(self) -> float | None:
        """When the pending backend effects should be tried again (trio time)."""
        if not self.pending or self._backoff is None:
            return None
        return self._backoff.due

    # -- one transition ---------------------------------------------------------------------

    async def carry_out(self, effect: fx.Effect, state: ConversationState) -> None:
        """Carry out one effect of the transition that led to ``state``; never raises (but
        for cancellation). The actor delivers ``Emit`` itself with :meth:`deliver`, without
        an await: that is most of what a conversation does."""
        if isinstance(effect, fx.Emit):
            self.deliver(effect.entry, state, None)
        elif isinstance(effect, fx.Signal):
            self._signal(effect, state)
        elif isinstance(effect, fx.TellPosition):
            self.position = QueuePosition(
                self.conversation_id,
                effect.session_id,
                effect.position,
                effect.estimated_wait,
                effect.agents_available,
            )
            self.to_users(self.position)
        else:
            await self._backend(effect, state)

    def deliver(self, entry: Entry, state: ConversationState, origin: Sink | None) -> None:
        audience = entry.audience
        # Only what the origin itself wrote skips it; notices and answers still reach it.
        skip = origin if entry.sender is Party.USER or entry.sender is Party.AGENT else None
        if Party.USER in audience:
            self.to_users(entry, skip)
        if Party.AGENT in audience:
            if entry.agent_id is not None:
                self._to_agent(entry.agent_id, entry, state, skip)
            elif entry.session_id is not None:
                self._to_waiting(entry.session_id, entry, state)
        if Party.BOT in audience:
            self.owner.feed_bot(entry, state)

    def applied(self, session_id: str, decision: Decision) -> None:
        """The conversation applied a backend decision about ``session_id``."""
        if decision > self.as_of(session_id):
            self.decision = (session_id, decision)

    def as_of(self, session_id: str) -> Decision:
        known = self.decision
        return known[1] if known is not None and known[0] == session_id else NO_DECISION

    def position_for(self, state: ConversationState) -> QueuePosition | None:
        """The last position told, if the session it was for is still waiting."""
        position, session = self.position, state.session
        if position is None or session is None or session.session_id != position.session_id:
            return None
        return position if session.agent_id is None else None

    def to_users(self, item: Entry | Typing | QueuePosition, skip: Sink | None = None) -> None:
        failed: list[Sink] | None = None
        for sink in self.subscribers:
            if sink is not skip:
                try:
                    sink.deliver(item)
                except Exception:
                    log.exception("a user's client failed; it is closed and will resume")
                    failed = [sink] if failed is None else [*failed, sink]
        if failed:
            for sink in failed:
                self.drop(sink)

    def to_sink(self, sink: Sink, item: Entry | QueuePosition) -> bool:
        """Deliver to one user's client; a client that raises is dropped. Whether it took it."""
        try:
            sink.deliver(item)
        except Exception:
            log.exception("a user's client failed; it is closed and will resume")
            self.drop(sink)
            return False
        return True

    def drop(self, sink: Sink) -> None:
        if sink in self.subscribers:
            self.subscribers.remove(sink)
        abandon(sink)

    def _to_agent(
        self,
        agent_id: str,
        item: Entry | Typing | Transcript,
        state: ConversationState,
        skip: Sink | None = None,
    ) -> None:
        try:
            self.context.backend_for(state.bot_id).deliver(agent_id, item, skip=skip)
        except Exception:
            if not self._deliver_failing:
                self._deliver_failing = True
                log.exception("delivering to agent %s failed", agent_id)
        else:
            self._deliver_failing = False

    def _to_waiting(self, session_id: str, entry: Entry, state: ConversationState) -> None:
        try:
            self.context.backend_for(state.bot_id).deliver_waiting(session_id, entry)
        except Exception:
            if not self._deliver_failing:
                self._deliver_failing = True
                log.exception("passing on a waiting message of %s failed", session_id)
        else:
            self._deliver_failing = False

    def _signal(self, effect: fx.Signal, state: ConversationState) -> None:
        typist = Party.AGENT if effect.to is Party.USER else Party.USER
        typing = Typing(self.conversation_id, typist, effect.agent_id)
        if effect.to is Party.USER:
            self.to_users(typing)
        elif effect.agent_id is not None:
            self._to_agent(effect.agent_id, typing, state)

    # -- the backend ------------------------------------------------------------------------

    async def _backend(self, effect: BackendEffect, state: ConversationState) -> None:
        try:
            await self._request(effect, state)
        except Exception as exc:
            self.pending = [*self.pending, effect]
            if self._backoff is None:
                self._backoff = Backoff(first=0.5, cap=30.0)
            if self._backoff.failed(trio.current_time()):
                log.warning(
                    "the livechat backend failed on %r: %r; retrying with backoff",
                    effect,
                    exc,
                    extra={"conversation_id": self.conversation_id},
                )
        else:
            if self._backoff is not None and not self.pending and self._backoff.succeeded():
                log.info(
                    "the livechat backend accepts requests again",
                    extra={"conversation_id": self.conversation_id},
                )

    async def _request(self, effect: BackendEffect, state: ConversationState) -> None:
        backend = self.context.backend_for(state.bot_id)
        conversation_id = self.conversation_id
        if isinstance(effect, fx.RequestAgent):
            session = state.session
            assert session is not None
            backend.request_agent(
                AgentRequest(
                    conversation_id,
                    session.session_id,
                    state.bot_id,
                    effect.queued_at,
                    held_by=session.agent_id,
                    as_of=self.as_of(session.session_id),
                    user_name=user_name(state.user_metadata),
                )
            )
        elif isinstance(effect, fx.WithdrawRequest):
            backend.withdraw(conversation_id, effect.session_id)
        elif isinstance(effect, fx.ReleaseAgent):
            backend.release(conversation_id, effect.session_id, effect.agent_id, effect.reason)
        elif isinstance(effect, fx.TransferChat):
            backend.transfer(conversation_id, effect.session_id, effect.from_agent, effect.to_agent)
        else:
            await self._share_transcript(effect, state)

    async def _share_transcript(self, effect: fx.ShareTranscript, state: ConversationState) -> None:
        """The session so far and a bounded tail before it: the agent asks for more with
        ``replay``."""
        with trio.CancelScope(shield=True):
            transcript = await read_transcript(
                self.context.store.entries_after,
                state,
                effect.session_id,
                self.context.limits.transcript_tail,
            )
        self.context.backend_for(state.bot_id).deliver(effect.agent_id, transcript)

    def reassert(self, state: ConversationState) -> fx.RequestAgent | None:
        """The request that re-asserts ``state``'s open session to its backend, if any."""
        session = state.session
        if session is None:
            return None
        queued_at = session.queued_at if session.queued_at is not None else session.started_at
        return fx.RequestAgent(session.session_id, queued_at)

    async def retry(self, state: ConversationState) -> None:
        """Try the pending backend effects again, dropping those no longer current."""
        pending, self.pending = self.pending, ()
        for effect in pending:
            if _still_current(effect, state):
                await self._backend(effect, state)
        if not self.pending and self._backoff is not None and self._backoff.succeeded():
            log.info(
                "the livechat backend accepts requests again",
                extra={"conversation_id": self.conversation_id},
            )


def _still_current(effect: BackendEffect, state: ConversationState) -> bool:
    """Withdrawals and releases are always worth repeating (they are idempotent); the rest
    only while the session they were for is still the one open, as it was."""
    if isinstance(effect, fx.WithdrawRequest | fx.ReleaseAgent):
        return True
    session = state.session
    if session is None or session.session_id != effect.session_id:
        return False
    if isinstance(effect, fx.TransferChat):
        return session.agent_id == effect.from_agent
    if isinstance(effect, fx.ShareTranscript):
        return session.agent_id == effect.agent_id
    return True
