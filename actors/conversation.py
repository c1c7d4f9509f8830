"""One trio task per conversation: the thin, I/O-doing shell around the lifecycle.

The actor owns its conversation's state and takes everything that happens to the
conversation from its own inbox (:class:`~actors.mailbox.Mailbox`), in order. For the events
waiting there it asks the lifecycle what must happen, makes the result durable in the store
with one write, then carries out the effects: deliveries to the user's clients, to the agent
through the livechat backend, and to the bot; and only then tells each sender its outcome.

Measured costs shape the loop (see bench/README.md):

* Taking from the inbox hands over everything waiting at once, so a busy conversation pays
  one scheduler pass and one store commit for a whole run of events, not one per event.
* The deadline pattern: the session's deadline is derived from the state, so activity only
  moves a timestamp. The actor holds no cancel scope: it asks the switchboard's
  :class:`~actors.alarms.Alarms` to post it a wake-up, and only when its next deadline comes
  *earlier* than the wake-up it already asked for (a session opening). A wake-up that comes
  before the real deadline (activity moved it) is answered by asking again for the
  remainder. The same wake-ups drive hibernation in bot mode.

Bot deliveries run in a short-lived helper task, so a slow bot never holds up the
conversation: the user can still reach a human while the bot thinks. What the bot is owed is
in the store until the bot has answered (see :class:`~actors.ports.Store`): a conversation
rebuilt after a crash is handed the events its bot never answered (``owed_to_bot``) and
delivers them again before anything new.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from . import effects as fx
from .events import BotSays, BotUnavailable, Event, TimerFired
from .lifecycle import ConversationState, Lifecycle, Transition
from .mailbox import Mailbox
from .ports import BotEvent, Sink, StoreUnavailable, Transcript, Typing
from .records import Entry, Party

if TYPE_CHECKING:
    from .switchboard import Switchboard

log = logging.getLogger("switchover.conversation")

Reply = Callable[[fx.Outcome], None]


class Envelope:
    """A lifecycle event and where to report its outcome.

    A plain slotted class rather than a frozen attrs one: one is made for every message,
    and a frozen class's constructor (``object.__setattr__`` per field) cost three times as
    much. Nothing changes an envelope after it is made.
    """

    __slots__ = ("event", "origin", "reply")

    def __init__(
        self, event: Event, reply: Reply | None = None, origin: Sink | None = None
    ) -> None:
        self.event = event
        self.reply = reply
        #: The client that sent the event: it is not handed back the entry it wrote (its
        #: answer carries the seq), though its other connections are.
        self.origin = origin

    def __repr__(self) -> str:
        return f"Envelope({self.event!r}, reply={self.reply!r}, origin={self.origin!r})"


@attrs.frozen
class Subscribe:
    """Attach a user's client: first the entries after ``after_seq`` (if given), then live."""

    sink: Sink
    after_seq: int | None


@attrs.frozen
class Unsubscribe:
    sink: Sink


@attrs.frozen
class Replay:
    """Send ``sink`` the entries after ``after_seq`` that ``party`` may see, once."""

    sink: Sink
    after_seq: int
    party: Party
    agent_id: str | None = None


Inbound = Envelope | Subscribe | Unsubscribe | Replay

_ALARM = Envelope(TimerFired())
"""Posted by :meth:`ConversationActor.wake`: one of the actor's wake-ups came due."""

SYSTEM_METADATA = frozenset({"reason", "session_id", "sender"})
"""Bot event metadata keys only Switchover sets: a user's metadata of that name is dropped."""

_INTERNAL_ERROR = fx.Refused("internal_error", "The message could not be handled.")

_NOT_STORED = frozenset({"store_unavailable", "internal_error"})
"""Refusals that mean the event was not stored (rather than turned down): a bot's answer
refused so is lost, so the event it answered stays owed and is delivered again on restart."""


def _refuse(envelopes: list[Envelope], refusal: fx.Refused) -> None:
    for envelope in envelopes:
        if envelope.reply is not None:
            envelope.reply(refusal)


class ConversationActor:
    """The task that owns one conversation. Created and supervised by the switchboard."""

    __slots__ = (
        "_armed",
        "_bot_busy",
        "_bot_queue",
        "board",
        "conversation_id",
        "inbox",
        "last_touch",
        "lifecycle",
        "owed_to_bot",
        "retired",
        "state",
        "subscribers",
    )

    def __init__(
        self, board: Switchboard, conversation_id: str, state: ConversationState | None
    ) -> None:
        self.board = board
        self.conversation_id = conversation_id
        self.inbox: Mailbox[Inbound] = Mailbox()
        self.state = state
        self.lifecycle: Lifecycle | None = None
        self.subscribers: list[Sink] = []
        # Created on first use: most conversations never need it, and a deque is 600 bytes.
        self._bot_queue: deque[tuple[int, BotEvent]] | None = None
        #: Entries stored but never answered by the bot before a restart: delivered again
        #: as soon as the state is known (set by the switchboard before the actor runs).
        self.owed_to_bot: list[Entry] | None = None
        self._bot_busy = False
        self.last_touch = 0.0
        self._armed = math.inf
        self.retired = False

    # -- the loop ---------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until the conversation hibernates or the switchboard stops. Supervised: an
        exception here restarts it from ``self.state``, the last committed state."""
        board = self.board
        self.retired = False
        if self.state is None:
            with trio.CancelScope(shield=True):
                self.state = await board.store.load(self.conversation_id)
            if self.state is None:
                self.refuse_waiting("unknown_conversation", "No such conversation.")
                self.retired = True
                board.forget(self)
                return
        if self.state.bot_id not in board.bots:
            # A bot removed from the configuration: its conversations are kept, not served.
            self.refuse_waiting(
                "unknown_conversation", f"This conversation's bot {self.state.bot_id!r} is gone."
            )
            self.retired = True
            board.forget(self)
            return
        self.lifecycle = board.lifecycle_for(self.state.bot_id)
        if self.owed_to_bot:
            for entry in self.owed_to_bot:
                self._feed_bot(entry)
        self.owed_to_bot = None
        inbox = self.inbox
        self.last_touch = trio.current_time()
        self._armed = math.inf
        while True:
            self._arm()
            batch = await inbox.take()
            index = 0
            while index < len(batch):
                item = batch[index]
                # Where the restart must pick up if this item (or group) fails.
                after = index + 1
                try:
                    if item is _ALARM:
                        if await self._alarm():
                            return
                    elif isinstance(item, Envelope):
                        # Every event waiting in a row is handled as one group: one store
                        # write (one wait for the commit) for all of them.
                        while (
                            after < len(batch)
                            and isinstance(batch[after], Envelope)
                            and batch[after] is not _ALARM
                        ):
                            after += 1
                        # Usually the whole batch: no copy then.
                        group: list[Envelope] = (
                            batch  # type: ignore[assignment]
                            if index == 0 and after == len(batch)
                            else batch[index:after]
                        )
                        handled, failure = await self._handle_group(group)
                        if failure is not None:
                            after = index + handled
                            raise failure
                    else:
                        await self._attend(item)
                except BaseException:
                    # What was taken but not handled stays first in line for the restart.
                    inbox.requeue(batch[after:])
                    raise
                index = after
            self.last_touch = trio.current_time()
            # Let go of what was handled before waiting again: an idle conversation would
            # otherwise keep its last envelopes (and the reply callbacks they hold) until its
            # next message, long enough to reach the collector's oldest generation.
            batch.clear()
            del item

    def _arm(self) -> None:
        """Ask the alarms for a wake-up when the next one comes earlier than the one already
        asked for. Activity only moves the deadline later, so it costs nothing here."""
        wanted = self._next_wakeup()
        if wanted < self._armed:
            self._armed = wanted
            self.board.alarms.wake_at(wanted, self)

    def wake(self) -> None:
        """Called by the alarms task when a wake-up this actor asked for comes due."""
        if not self.retired:
            self._armed = math.inf
            self.inbox.put(_ALARM)

    def _next_wakeup(self) -> float:
        assert self.state is not None and self.lifecycle is not None
        wall = self.lifecycle.deadline(self.state)
        if wall is not None:
            return self.board.clock.to_trio(wall)
        hibernate_after = self.board.hibernate_after
        if hibernate_after is None:
            return math.inf
        return self.last_touch + hibernate_after

    async def _alarm(self) -> bool:
        """A wake-up came due: expire the session if its deadline really passed (activity
        may have moved it since), or hibernate. Returns whether the actor leaves memory."""
        state, lifecycle = self.state, self.lifecycle
        assert state is not None and lifecycle is not None
        wall = lifecycle.deadline(state)
        if wall is not None:
            clock = self.board.clock
            if clock.to_trio(wall) <= trio.current_time():
                # Due by the trio clock: stamp it at the deadline even when converting
                # between the clocks rounds the wall time a hair below it.
                _, failure = await self._handle_group([_ALARM], max(clock.now(), wall))
                if failure is not None:
                    raise failure
            return False
        if self._may_hibernate():
            self.retired = True
            self.board.forget(self)
            return True
        return False

    def _may_hibernate(self) -> bool:
        hibernate_after = self.board.hibernate_after
        return (
            hibernate_after is not None
            and not self.subscribers
            and not self._bot_busy
            and not self.inbox
            and trio.current_time() >= self.last_touch + hibernate_after
        )

    def refuse_waiting(self, code: str, detail: str) -> None:
        for item in self.inbox.take_nowait():
            if isinstance(item, Envelope) and item.reply is not None:
                item.reply(fx.Refused(code, detail))

    # -- one item ---------------------------------------------------------------------------

    async def _attend(self, item: Subscribe | Unsubscribe | Replay) -> None:
        """Clients coming and going, and one-off replays: nothing the lifecycle sees."""
        if isinstance(item, Subscribe):
            if item.after_seq is not None:
                await self._replay(item.sink, item.after_seq, Party.USER, None)
            self.subscribers.append(item.sink)
        elif isinstance(item, Unsubscribe):
            if item.sink in self.subscribers:
                self.subscribers.remove(item.sink)
        else:
            await self._replay(item.sink, item.after_seq, item.party, item.agent_id)

    async def _handle_group(
        self, envelopes: list[Envelope], now: float | None = None
    ) -> tuple[int, Exception | None]:
        """Handle events in order with one store write for all of them.

        The lifecycle runs over every event first (each transition starts from the one
        before), then the final state and every entry are recorded at once, and only then
        are the effects carried out and the senders told, event by event, in order. So
        "acknowledged" still means "committed", and a crash or a refused write leaves the
        state of the last commit: no event of the group has been acknowledged or delivered.

        Returns how many events were dealt with and, when the lifecycle failed on one, the
        exception: that event is refused, and the ones after it are left for the restart.
        """
        first = self.state
        lifecycle = self.lifecycle
        assert first is not None and lifecycle is not None
        if now is None:
            now = self.board.clock.now()
        state = first
        transitions: list[Transition] = []
        failure: Exception | None = None
        for envelope in envelopes:
            try:
                transition = lifecycle.handle(state, envelope.event, now)
            except Exception as exc:
                # The events before it still count; this one and the rest wait for after.
                failure = exc
                break
            transitions.append(transition)
            state = transition.state
        done = len(transitions)
        if state is not first:
            entries = [
                effect.entry
                for transition in transitions
                for effect in transition.effects
                if isinstance(effect, fx.Emit)
            ]
            # Durable before anyone hears of it. No timer can cut this write (deadlines come
            # through the inbox, not a cancel scope); only shutting down can, and then the
            # state stays as it was and nobody has been told anything.
            try:
                await self.board.store.record(state, entries)
            except StoreUnavailable as exc:
                # Nothing changed: the state is still the last stored one. Refuse and go on
                # rather than restart, so a full disk does not escalate every conversation.
                log.error("conversation %s: %s", self.conversation_id, exc)
                _refuse(envelopes[:done], fx.Refused("store_unavailable", str(exc)))
                transitions = []
            except Exception:
                _refuse(envelopes, _INTERNAL_ERROR)
                raise
            else:
                self.state = state
        error: Exception | None = None
        for envelope, transition in zip(envelopes, transitions, strict=False):
            try:
                for effect in transition.effects:
                    if isinstance(effect, fx.Emit):
                        self._deliver(effect.entry, envelope.origin)
                    else:
                        await self._carry_out(effect, transition.state)
            except Exception as exc:
                error = error or exc
                _refuse([envelope], _INTERNAL_ERROR)
                continue
            if envelope.reply is not None:
                envelope.reply(transition.outcome)
        if error is not None:
            # Effects failed after the commit: the restart goes on after the whole group.
            _refuse(envelopes[done:], _INTERNAL_ERROR)
            raise error
        if failure is not None:
            _refuse(envelopes[done : done + 1], _INTERNAL_ERROR)
        return done + (failure is not None), failure

    def _deliver(self, entry: Entry, origin: Sink | None = None) -> None:
        audience = entry.audience
        # Only what the origin itself wrote skips it; notices and answers still reach it.
        skip = origin if entry.sender is Party.USER or entry.sender is Party.AGENT else None
        if Party.USER in audience:
            for sink in self.subscribers:
                if sink is not skip:
                    sink.deliver(entry)
        if Party.AGENT in audience and entry.agent_id is not None:
            assert self.state is not None
            self.board.backend_for(self.state).deliver(entry.agent_id, entry, skip=skip)
        if Party.BOT in audience:
            self._feed_bot(entry)

    async def _carry_out(self, effect: fx.Effect, state: ConversationState) -> None:
        """Carry out one effect of the transition that led to ``state``."""
        backend = self.board.backend_for(state)
        if isinstance(effect, fx.Signal):
            typist = Party.AGENT if effect.to is Party.USER else Party.USER
            typing = Typing(self.conversation_id, typist, effect.agent_id)
            if effect.to is Party.USER:
                for sink in self.subscribers:
                    sink.deliver(typing)
            elif effect.agent_id is not None:
                backend.deliver(effect.agent_id, typing)
        elif isinstance(effect, fx.RequestAgent):
            backend.request_agent(self.board.agent_request(state, effect.queued_at))
        elif isinstance(effect, fx.WithdrawRequest):
            backend.withdraw(self.conversation_id, effect.session_id)
        elif isinstance(effect, fx.ReleaseAgent):
            backend.release(self.conversation_id, effect.session_id, effect.agent_id, effect.reason)
        elif isinstance(effect, fx.TransferChat):
            backend.transfer(
                self.conversation_id, effect.session_id, effect.from_agent, effect.to_agent
            )
        elif isinstance(effect, fx.ShareTranscript):
            with trio.CancelScope(shield=True):
                entries = await self.board.store.entries_after(self.conversation_id, 0)
            # Up to this transition: entries of later events in the same group are already
            # stored, and reach the agent live.
            shown = tuple(
                e
                for e in entries
                if e.seq < state.next_seq
                and (e.visible_to(Party.USER) or e.visible_to(Party.AGENT))
            )
            backend.deliver(
                effect.agent_id,
                Transcript(
                    self.conversation_id,
                    effect.session_id,
                    state.bot_id,
                    state.user_id,
                    state.user_metadata,
                    shown,
                ),
            )

    async def _replay(self, sink: Sink, after_seq: int, party: Party, agent_id: str | None) -> None:
        with trio.CancelScope(shield=True):
            entries = await self.board.store.entries_after(self.conversation_id, after_seq)
        for entry in entries:
            if entry.visible_to(party, agent_id):
                sink.deliver(entry)

    # -- the bot ----------------------------------------------------------------------------

    def _feed_bot(self, entry: Entry) -> None:
        state = self.state
        assert state is not None
        # The user's metadata never stands in for what the system says (reason, session_id).
        metadata = {
            **{k: v for k, v in state.user_metadata.items() if k not in SYSTEM_METADATA},
            **entry.metadata,
        }
        if self._bot_queue is None:
            self._bot_queue = deque()
        self._bot_queue.append(
            (
                entry.seq,
                BotEvent(
                    f"{self.conversation_id}:{entry.seq}",
                    self.conversation_id,
                    state.bot_id,
                    state.user_id,
                    entry.content,
                    metadata,
                    entry.sender,
                ),
            )
        )
        if not self._bot_busy:
            self._bot_busy = True
            self.board.nursery.start_soon(self._talk_to_bot)

    async def _talk_to_bot(self) -> None:
        """Deliver queued bot events one at a time, in order, and post the replies back into
        the conversation's own inbox. Exits when the queue is empty.

        The bot is owed an event until its answer is stored (or it failed for good): a
        crash in between hands the event over again after the restart, never loses it."""
        assert self.state is not None and self._bot_queue is not None
        bot = self.board.bot_for(self.state.bot_id)
        store = self.board.store
        queue = self._bot_queue
        try:
            while queue:
                seq, event = queue.popleft()
                try:
                    replies = await bot.on_event(event)
                except Exception as exc:
                    log.warning(
                        "bot %s failed on event %s of conversation %s: %r",
                        event.bot_id,
                        event.event_id,
                        self.conversation_id,
                        exc,
                    )
                    self.inbox.put(Envelope(BotUnavailable(repr(exc))))
                    # The user is told the bot is unavailable: asking again after a restart
                    # would answer a question long moved on from.
                    store.bot_done(self.conversation_id, seq)
                    continue
                if replies:
                    self.inbox.put(Envelope(BotSays(tuple(replies)), self._bot_answered(seq)))
                else:
                    store.bot_done(self.conversation_id, seq)
        finally:
            self._bot_busy = False

    def _bot_answered(self, seq: int) -> Reply:
        """The reply callback of the bot's answer to entry ``seq``: once the answer is
        stored (or refused), the bot is no longer owed that entry."""

        def answered(outcome: fx.Outcome) -> None:
            self._report_refused_bot_reply(outcome)
            if not (isinstance(outcome, fx.Refused) and outcome.code in _NOT_STORED):
                self.board.store.bot_done(self.conversation_id, seq)

        return answered

    def _report_refused_bot_reply(self, outcome: fx.Outcome) -> None:
        if isinstance(outcome, fx.Refused):
            log.warning(
                "bot reply dropped in conversation %s: %s (%s)",
                self.conversation_id,
                outcome.detail,
                outcome.code,
            )
