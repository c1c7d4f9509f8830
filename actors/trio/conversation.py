"""One trio task per conversation: the thin, I/O-doing shell around the lifecycle.

The actor owns its conversation's state and takes everything that happens to the
conversation from its own inbox (:class:`~actors.trio.mailbox.Mailbox`), in order. For the events
waiting there it asks the lifecycle what must happen, makes the result durable in the store
with one write, then has the :class:`~actors.trio.effect_runner.EffectRunner` carry out the
effects (deliveries to the user's clients, to the agent through the livechat backend, to the
bot through the :class:`~actors.trio.bot_feeder.BotFeeder`), and only then tells each sender its
outcome. Once the store has a transition its sender is told ``Accepted``: nothing that fails
after the commit changes that (see the effect runner's table).

Measured costs shape the loop (see bench/README.md):

* Taking from the inbox hands over everything waiting at once, so a busy conversation pays
  one scheduler pass and one store commit for a whole run of events, not one per event.
* The deadline pattern: the session's deadline is derived from the state, so activity only
  moves a timestamp. The actor holds no cancel scope: it asks the
  :class:`~actors.trio.alarms.Alarms` to post it a wake-up, and only when its next wake-up comes
  *earlier* than the one it already asked for (a session opening, a retry). A wake-up that
  comes before the real deadline (activity moved it) is answered by asking again for the
  remainder. The same wake-ups drive hibernation in bot mode and the retries of a refused
  store write or a failed backend request, which back off exponentially.

Client messages may carry an id (``message_id``): the last ids of each conversation are
remembered with their outcome, so a resend is answered with the first ``ack`` and stored once.
The id is also stored with the entry it wrote, so the log is the one owner of the fact: an
actor that did not write the log itself (a restart, a wake from hibernation, a takeover by
another node) reads the ids of its last ``message_ids`` entries once, on the first message
whose id it does not know, and answers a resend from them (:meth:`ConversationActor._recall_ids`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import cast

import attrs
import trio

from actors.machines.backoff import Backoff
from actors.machines.lifecycle import Lifecycle, Transition, wrote
from actors.model import effects as fx
from actors.model.events import AgentAssigned, Event, ReturnedToQueue, TimerFired
from actors.model.records import Entry, Party
from actors.model.state import ConversationState
from actors.ports import InputStore, MessageIdStore, Sink, StoreUnavailable
from actors.trio.bot_feeder import BotFeeder
from actors.trio.context import ConversationContext
from actors.trio.effect_runner import EffectRunner
from actors.trio.mailbox import Mailbox
from actors.trio.session_log import log_session_steps

log = logging.getLogger("switchover.conversation")

Reply = Callable[[fx.Outcome], None]


class Envelope:
    """A lifecycle event and where to report its outcome.

    The frozen attrs class with these fields and defaults, as a plain slotted one: one is made
    for every message, three times as cheaply (bench/README.md, Core, 2026-12-01). Nothing
    changes an envelope after it is made, and envelopes compare by identity.
    """

    __slots__ = ("event", "input_id", "message_id", "origin", "reply")

    def __init__(
        self,
        event: Event,
        reply: Reply | None = None,
        origin: Sink | None = None,
        message_id: str | None = None,
        input_id: str | None = None,
    ) -> None:
        self.event = event
        self.reply = reply
        #: The client that sent the event: it is not handed back the entry it wrote (its
        #: answer carries the seq), though its other connections are.
        self.origin = origin
        #: The sender's id for this message, if it gave one: a resend is answered, not stored.
        self.message_id = message_id
        #: The id a store gave this input before it reached the actor (a node of a cluster
        #: routing it from another one): recorded with the commit, so it is stored once.
        self.input_id = input_id

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

_REASSERT = Envelope(TimerFired())
"""Posted by :meth:`ConversationActor.reassert`: tell the backend about the open session
again (it restarted and lost its view)."""

_STOP = Envelope(TimerFired())
"""Posted by :meth:`ConversationActor.stop`: the server stops; return once what came before
is handled (a task that returns costs trio far less to end than one it cancels)."""

_INTERNAL_ERROR = fx.Refusal("internal_error", "The message could not be handled.")

_DECISIONS = frozenset({AgentAssigned, ReturnedToQueue})
"""Backend events that carry a decision stamp the conversation re-asserts "as of"."""

_NO_BASIS = object()


class _NoFeed:
    """Who feeds the bot of a conversation that left memory: nobody (see ``_let_go``)."""

    def feed_bot(self, entry: Entry, state: ConversationState) -> None:
        log.warning("conversation %s: an entry for its bot after it left memory", entry.seq)


_NO_FEED = _NoFeed()


def _dropped(event: Event, reply: Callable[[fx.Outcome], None] | None) -> None:
    """Where a bot feeder's answer goes once its conversation left memory (never, since a
    conversation owed an answer does not leave)."""


def _basis_of(state: ConversationState) -> tuple[str, float, float | None] | None:
    """What a session's deadline is derived from, besides the settings: ``None`` in bot
    mode, where nothing is armed."""
    session = state.session
    if session is None:
        return None
    return (session.session_id, session.last_activity, session.queued_at)


def _stored_inputs(
    envelopes: list[Envelope], plan: list[int | fx.Outcome], transitions: list[Transition]
) -> list[tuple[str, int | None]]:
    """The routed inputs a commit stores, with the seq each was answered."""
    inputs: list[tuple[str, int | None]] = []
    for envelope, step in zip(envelopes, plan, strict=False):
        if envelope.input_id is not None and isinstance(step, int):
            outcome = transitions[step].outcome
            if isinstance(outcome, fx.Accepted):
                inputs.append((envelope.input_id, outcome.seq))
    return inputs


def _with_ids(
    envelopes: list[Envelope],
    plan: list[int | fx.Outcome],
    transitions: list[Transition],
    firsts: list[Envelope],
    entries: list[Entry],
) -> None:
    """Give each entry an accepted message's ``ack`` named the sender's id for that message,
    in ``entries`` (what the store records; deliveries need no id): a copy, since entries are
    frozen. Seqs are gap-free, so an entry's place is its seq less the first one's."""
    first_seq = entries[0].seq
    for envelope, step in zip(envelopes, plan, strict=False):
        key = envelope.message_id
        if key is None or type(step) is not int or firsts[step] is not envelope:
            continue
        if not key.isascii() and not _encodable(key):
            continue  # no store can keep it (a lone surrogate): only memory knows it
        outcome = transitions[step].outcome
        seq = outcome.seq if type(outcome) is fx.Accepted else None
        if seq is None or not 0 <= seq - first_seq < len(entries):
            continue
        e = entries[seq - first_seq]
        entries[seq - first_seq] = Entry(
            e.conversation_id,
            e.seq,
            e.at,
            e.sender,
            e.content,
            e.audience,
            e.agent_id,
            e.session_id,
            e.metadata,
            key,
        )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _same(first: Event | Entry | None, event: Event) -> bool:
    """Whether ``event`` repeats the message remembered as ``first``: the event itself when
    this actor handled it, else the entry it wrote, read back from the log (``None``: not
    read yet, see :meth:`ConversationActor._read_entries`)."""
    if type(first) is Entry:
        return wrote(event, first)
    return first is not None and first == event


def _answer(envelope: Envelope, outcome: fx.Outcome) -> None:
    """Tell a sender its outcome; a sender's callback that raises harms nobody else."""
    if envelope.reply is not None:
        try:
            envelope.reply(outcome)
        except Exception:
            log.exception("a sender's answer could not be given")


def _refuse_all(envelopes: list[Envelope], refusal: fx.Refusal) -> None:
    for envelope in envelopes:
        _answer(envelope, refusal)


class ConversationActor:
    """The task that owns one conversation. Created and supervised by the switchboard."""

    __slots__ = (
        "_armed",
        "_asserted",
        "_basis",
        "_feeder",
        "_log_read",
        "_message_ids",
        "_store_backoff",
        "_unread_entries",
        "context",
        "conversation_id",
        "effects",
        "inbox",
        "last_touch",
        "lifecycle",
        "owed_to_bot",
        "retired",
        "state",
        "subscribers",
    )

    def __init__(
        self,
        context: ConversationContext,
        conversation_id: str,
        state: ConversationState | None,
        *,
        subscribers: list[Sink] | None = None,
        feeder: BotFeeder | None = None,
    ) -> None:
        self.context = context
        self.conversation_id = conversation_id
        self.inbox: Mailbox[Inbound] = Mailbox()
        self.state = state
        self.lifecycle: Lifecycle | None = None
        self.subscribers: list[Sink] = subscribers if subscribers is not None else []
        self.effects = EffectRunner(context, conversation_id, self.subscribers, self)
        # Created on first use: most conversations never need them.
        self._feeder = feeder
        if feeder is not None:
            feeder.post = self._post
        #: Each remembered id's outcome, with the event (this actor handled it) or the entry
        #: it wrote (read from the log), or ``None`` (only the id was read, not its entry).
        self._message_ids: dict[str, tuple[fx.Outcome, Event | Entry | None]] | None = None
        #: Some remembered id's entry is not read yet: a resend of it reads it first.
        self._unread_entries = False
        #: Whether the ids stored in the log before this actor started are known (or there
        #: are none): a new conversation has nothing stored, so its messages never read it.
        self._log_read = state is not None and state.next_seq == 1
        self._store_backoff: Backoff | None = None
        #: Entries stored but never answered by the bot before a restart: delivered again
        #: as soon as the state is known (set by the switchboard before the actor runs).
        self.owed_to_bot: list[Entry] | None = None
        self.last_touch = 0.0
        self._armed = math.inf
        #: What the deadline in force was derived from (see :meth:`_adopt_settings`).
        self._basis: object = _NO_BASIS
        self.retired = False
        #: The switchboard asked the backend for the open session just before starting it
        #: (a restore): the first run need not ask again.
        self._asserted = False

    @property
    def feeder(self) -> BotFeeder | None:
        return self._feeder

    @property
    def bot_queue_full(self) -> bool:
        return self._feeder is not None and self._feeder.full

    # -- the loop ---------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until the conversation hibernates or the switchboard stops. Supervised: an
        exception here restarts it from ``self.state``, the last committed state."""
        context = self.context
        self.retired = False
        if self.state is None:
            with trio.CancelScope(shield=True):
                self.state = await context.store.load(self.conversation_id)
            if self.state is None:
                self.refuse_waiting("unknown_conversation", "No such conversation.")
                context.retire(self)
                self._let_go()
                return
            self._log_read = self.state.next_seq == 1
        lifecycle = context.lifecycle_for(self.state.bot_id)
        if lifecycle is None:
            # A bot removed from the configuration: its conversations are kept, not served.
            self.refuse_waiting(
                "unknown_conversation", f"This conversation's bot {self.state.bot_id!r} is gone."
            )
            context.retire(self)
            self._let_go()
            return
        if self.lifecycle is None or _basis_of(self.state) != self._basis:
            # A restart keeps the settings its armed deadline was derived from.
            self.lifecycle = lifecycle
            self._basis = _basis_of(self.state)
        if self.owed_to_bot:
            for entry in self.owed_to_bot:
                self.feed_bot(entry, self.state)
        self.owed_to_bot = None
        # After any start or restart, the backend hears about the open session again: it
        # changes nothing where the backend already has it, and mends whatever was lost.
        # (Not when the switchboard's restore has just asked: 10,000 restored sessions would
        # be asserted twice.)
        if self._asserted:
            self._asserted = False
        else:
            await self._reassert()
        inbox = self.inbox
        self.last_touch = trio.current_time()
        self._armed = math.inf
        while True:
            self._adopt_settings()
            self._arm()
            batch = await inbox.take()
            index = 0
            while index < len(batch):
                item = batch[index]
                # Where the restart must pick up if this item (or group) fails.
                after = index + 1
                try:
                    if item is _ALARM:
                        # (Not with more taken behind it: a client that subscribed in the
                        # same tick would be lost with the batch.)
                        if await self._alarm(last=after == len(batch)):
                            return
                    elif item is _REASSERT:
                        await self._reassert()
                    elif item is _STOP:
                        inbox.requeue(batch[after:])
                        return
                    elif isinstance(item, Envelope):
                        # Every event waiting in a row is handled as one group: one store
                        # write (one wait for the commit) for all of them.
                        while (
                            after < len(batch)
                            and isinstance(batch[after], Envelope)
                            and batch[after] is not _ALARM
                            and batch[after] is not _REASSERT
                            and batch[after] is not _STOP
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

    def _adopt_settings(self) -> None:
        """Take the bot's settings as they are now (an administrator may have changed them)
        only when the deadline is about to be derived anew: a session opened or closed, saw
        activity, or was picked up or sent back to the queue. So a change never moves a
        deadline already armed, only the next one."""
        state = self.state
        assert state is not None
        basis = _basis_of(state)
        if basis != self._basis:
            self._basis = basis
            current = self.context.lifecycle_for(state.bot_id)
            if current is not None:
                self.lifecycle = current

    def _arm(self) -> None:
        """Ask the alarms for a wake-up when the next one comes earlier than the one already
        asked for. Activity only moves the deadline later, so it costs nothing here."""
        wanted = self._next_wakeup()
        if wanted < self._armed:
            self._armed = wanted
            self.context.alarms.wake_at(wanted, self)

    def rearm(self) -> None:
        """Forget the wake-up asked for (the alarms lost it) and ask again."""
        if not self.retired and self.lifecycle is not None:
            self._armed = math.inf
            self._arm()

    def wake(self) -> None:
        """Called by the alarms task when a wake-up this actor asked for comes due."""
        if not self.retired:
            self._armed = math.inf
            self.inbox.put(_ALARM)

    def _let_go(self) -> None:
        """It leaves memory: its effect runner and bot feeder point back at it, and would
        keep it (with its state and mailbox) until a full collection, which the server makes
        rare on purpose. Pointing them elsewhere lets it go at once."""
        self.effects.owner = _NO_FEED
        if self._feeder is not None:
            self._feeder.post = _dropped

    def asserted(self) -> None:
        """Its backend has just been told about the open session: its first run skips that."""
        self._asserted = True

    def stop(self) -> None:
        """Return from :meth:`serve` once everything posted before is handled."""
        self.inbox.put(_STOP)

    def reassert(self) -> None:
        """Ask the actor to tell its backend about its open session again."""
        if not self.retired:
            self.inbox.put(_REASSERT)

    def _next_wakeup(self) -> float:
        assert self.state is not None and self.lifecycle is not None
        wall = self.lifecycle.deadline(self.state)
        if wall is not None:
            wanted = self.context.clock.to_trio(wall)
            backoff = self._store_backoff
            if backoff is not None and backoff.failing:
                # The last write was refused: an expiry waits for the next try.
                wanted = max(wanted, backoff.due)
        else:
            hibernate_after = self.context.hibernate_after
            wanted = math.inf if hibernate_after is None else self.last_touch + hibernate_after
        retry = self.effects.retry_due
        return wanted if retry is None else min(wanted, retry)

    async def _alarm(self, last: bool = True) -> bool:
        """A wake-up came due: retry what failed, expire the session if its deadline really
        passed (activity may have moved it since), or hibernate (only when nothing was taken
        behind it: ``last``). Returns whether the actor leaves memory."""
        state, lifecycle = self.state, self.lifecycle
        assert state is not None and lifecycle is not None
        now = trio.current_time()
        retry = self.effects.retry_due
        if retry is not None and retry <= now:
            await self.effects.retry(state)
        wall = lifecycle.deadline(state)
        if wall is not None:
            clock = self.context.clock
            backoff = self._store_backoff
            if clock.to_trio(wall) <= now and (backoff is None or backoff.due <= now):
                # Due by the trio clock: stamp it at the deadline even when converting
                # between the clocks rounds the wall time a hair below it. One of a bounded
                # number in flight, so a crowd of expiries finishes a batch per tick.
                slots = self.context.alarms.expiries
                try:
                    # A free slot is taken without a trip through the scheduler (``async
                    # with`` yields even then: one more task step per expiry); none is free
                    # while others wait for one, so the slots still go first come, first served.
                    slots.acquire_nowait()
                except trio.WouldBlock:
                    await slots.acquire()
                try:
                    _, failure = await self._handle_group([_ALARM], max(clock.now(), wall))
                finally:
                    slots.release()
                if failure is not None:
                    raise failure
            return False
        if last and self._may_hibernate():
            self.context.retire(self)
            self._let_go()
            return True
        return False

    async def _reassert(self) -> None:
        state = self.state
        assert state is not None
        request = self.effects.reassert(state)
        if request is not None:
            await self.effects.carry_out(request, state)

    def _may_hibernate(self) -> bool:
        """Quiet for ``hibernate_after`` with nothing in flight. Connected clients do not
        keep a conversation in bot mode: the switchboard keeps its sinks, and hands them to
        the actor its next event starts. An open session keeps its actor (its deadline)."""
        hibernate_after = self.context.hibernate_after
        state = self.state
        return (
            hibernate_after is not None
            and (not self.subscribers or (state is not None and state.session is None))
            and not (self._feeder is not None and self._feeder.busy)
            and not self.effects.pending
            and not self.inbox
            and trio.current_time() >= self.last_touch + hibernate_after
        )

    def refuse_waiting(self, code: str, message: str) -> None:
        for item in self.inbox.take_nowait():
            if isinstance(item, Envelope):
                _answer(item, fx.Refusal(code, message))

    # -- one item ---------------------------------------------------------------------------

    async def _attend(self, item: Subscribe | Unsubscribe | Replay) -> None:
        """Clients coming and going, and one-off replays: nothing the lifecycle sees."""
        if isinstance(item, Subscribe):
            self.subscribers.append(item.sink)
            if item.after_seq is not None:
                await self._replay(item.sink, item.after_seq, Party.USER, None)
            assert self.state is not None
            position = self.effects.position_for(self.state)
            if position is not None and item.sink in self.subscribers:
                self.effects.to_sink(item.sink, position)
        elif isinstance(item, Unsubscribe):
            if item.sink in self.subscribers:
                self.subscribers.remove(item.sink)
                # The delay before it may leave memory counts from the client leaving, even
                # when a wake-up is handled in the same batch.
                self.last_touch = trio.current_time()
        else:
            await self._replay(item.sink, item.after_seq, item.party, item.agent_id)

    async def _replay(self, sink: Sink, after_seq: int, party: Party, agent_id: str | None) -> None:
        assert self.state is not None
        if after_seq >= self.state.next_seq - 1:
            # Nothing after it (every entry before next_seq is stored: the actor records
            # before it attends to anyone): a returning client that missed nothing costs
            # no read.
            return
        with trio.CancelScope(shield=True):
            entries = await self.context.store.entries_after(self.conversation_id, after_seq)
        for entry in entries:
            if entry.visible_to(party, agent_id) and not self.effects.to_sink(sink, entry):
                return

    async def _handle_group(
        self, envelopes: list[Envelope], now: float | None = None
    ) -> tuple[int, Exception | None]:
        """Handle events in order with one store write for all of them.

        The lifecycle runs over every event first (each transition starts from the one
        before), then the final state and every entry are recorded at once, and only then
        are the effects carried out and the senders told, event by event, in order. So
        "acknowledged" still means "committed", and a crash or a refused write leaves the
        state of the last commit: no event of the group has been acknowledged or delivered.
        A resend of a message id already handled (or earlier in the group) is answered with
        the first outcome and takes no part.

        Returns how many events were dealt with and, when the lifecycle failed on one, the
        exception: that event is refused, and the ones after it are left for the restart.
        """
        first = self.state
        lifecycle = self.lifecycle
        assert first is not None and lifecycle is not None
        current = self.context.lifecycle_for(first.bot_id) or lifecycle
        if now is None:
            now = self.context.clock.now()
        if not self._log_read or self._unread_entries:
            refusal = None
            if not self._log_read and self._unknown_id(envelopes):
                refusal = await self._recall_ids(envelopes)
            if refusal is None and self._unread_entries:
                wanted = self._unread(envelopes)
                if wanted:
                    refusal = await self._read_entries(wanted)
            if refusal is not None:
                _refuse_all(envelopes, refusal)
                return len(envelopes), None
        known = self._message_ids
        seen: dict[str, int] | None = None
        state = first
        transitions: list[Transition] = []
        firsts: list[Envelope] = []  # the envelope of each transition
        # Per envelope dealt with: the index of its transition, or the outcome of a resend.
        plan: list[int | fx.Outcome] = []
        failure: Exception | None = None
        routed = False  # some envelope carries an input id (a cluster node's routed input)
        for envelope in envelopes:
            if envelope.input_id is not None:
                routed = True
            key = envelope.message_id
            if key is not None:
                # A resend is the same id with the same event; the same id with another
                # event is a client that reused an id, and its message is taken as new.
                earlier = known.get(key) if known is not None else None
                if earlier is not None and _same(earlier[1], envelope.event):
                    plan.append(earlier[0])
                    continue
                if seen is None:
                    seen = {}
                index = seen.get(key)
                if index is not None and firsts[index].event == envelope.event:
                    plan.append(index)
                    continue
                seen[key] = len(transitions)
            try:
                # The clock's events are judged by the settings their deadline came from;
                # everything else (the sign-off's wording) by the settings in force.
                handler = lifecycle if isinstance(envelope.event, TimerFired) else current
                transition = handler.handle(state, envelope.event, now)
            except Exception as exc:
                # The events before it still count; this one and the rest wait for after.
                failure = exc
                break
            plan.append(len(transitions))
            transitions.append(transition)
            firsts.append(envelope)
            state = transition.state
        done = len(plan)
        if state is not first:
            entries = [
                effect.entry
                for transition in transitions
                for effect in transition.effects
                if isinstance(effect, fx.Emit)
            ]
            if seen is not None and entries:
                # The ids go with the entries they wrote: the log answers a resend later.
                _with_ids(envelopes, plan, transitions, firsts, entries)
            # Durable before anyone hears of it. No timer can cut this write (deadlines come
            # through the inbox, not a cancel scope); only shutting down can, and then the
            # state stays as it was and nobody has been told anything.
            try:
                if routed:
                    # Only a store that gave inputs their ids hands them to actors.
                    inputs = _stored_inputs(envelopes, plan, transitions)
                    await cast(InputStore, self.context.store).record(state, entries, inputs)
                else:
                    await self.context.store.record(state, entries)
            except StoreUnavailable as exc:
                # Nothing changed: the state is still the last stored one. Refuse and go on
                # rather than restart, so a full disk does not escalate every conversation.
                self._store_refused(exc)
                refusal = fx.Refusal("store_unavailable", str(exc))
                for envelope, step in zip(envelopes, plan, strict=False):
                    _answer(envelope, step if isinstance(step, fx.Outcome) else refusal)
                if failure is not None:
                    _refuse_all(envelopes[done : done + 1], _INTERNAL_ERROR)
                return done + (failure is not None), failure
            except Exception:
                _refuse_all(envelopes, _INTERNAL_ERROR)
                raise
            self.state = state
            backoff = self._store_backoff
            if backoff is not None and backoff.succeeded():
                log.info(
                    "the store accepts writes again",
                    extra={"conversation_id": self.conversation_id},
                )
        ran = -1
        runner = self.effects
        for envelope, step in zip(envelopes, plan, strict=False):
            if type(step) is int:
                transition = transitions[step]
                if step > ran:
                    ran = step
                    after = transition.state
                    log_session_steps(transitions[step - 1].state if step else first, transition)
                    event = envelope.event
                    if type(event) in _DECISIONS:
                        runner.applied(event.session_id, event.decision)  # type: ignore[union-attr,arg-type]
                    for effect in transition.effects:
                        if type(effect) is fx.Emit:
                            runner.deliver(effect.entry, after, envelope.origin)
                        else:
                            await runner.carry_out(effect, after)
                    if envelope.message_id is not None:
                        self._remember_id(envelope.message_id, transition.outcome, envelope.event)
                _answer(envelope, transition.outcome)
            else:
                assert not isinstance(step, int)
                _answer(envelope, step)
        if failure is not None:
            _refuse_all(envelopes[done : done + 1], _INTERNAL_ERROR)
        return done + (failure is not None), failure

    def _store_refused(self, exc: StoreUnavailable) -> None:
        if self._store_backoff is None:
            self._store_backoff = Backoff(first=0.1, cap=30.0)
        if self._store_backoff.failed(trio.current_time()):
            log.error(
                "the store refused a write: %s; retrying with backoff",
                exc,
                extra={"conversation_id": self.conversation_id},
            )

    async def _recall_ids(self, envelopes: list[Envelope]) -> fx.Refusal | None:
        """Learn the ids stored in the log before this actor started, once, when a message
        carries an id it does not know: that may be a resend of a message stored before a
        restart, a wake from hibernation or a takeover. One read of the ids of the last
        ``message_ids`` entries (only the ids when the store can: :class:`MessageIdStore`;
        the entries are read for the ids actually resent). What this actor remembers
        itself is newer and wins. Returns the refusal for the group when the store cannot
        be read (nothing is stored then: a resend must not be stored twice, and the client
        tries again)."""
        known = self._message_ids
        state = self.state
        assert state is not None
        limit = self.context.limits.message_ids
        after = state.next_seq - 1 - limit
        store = self.context.store
        recalled: dict[str, tuple[fx.Outcome, Event | Entry | None]] = {}
        try:
            with trio.CancelScope(shield=True):
                if isinstance(store, MessageIdStore):
                    for seq, key in await store.message_ids(self.conversation_id, after):
                        recalled.pop(key, None)
                        recalled[key] = (fx.Accepted(seq), None)
                        self._unread_entries = True
                else:
                    for entry in await store.entries_after(self.conversation_id, after):
                        if entry.message_id is not None:
                            recalled.pop(entry.message_id, None)
                            recalled[entry.message_id] = (fx.Accepted(entry.seq), entry)
        except StoreUnavailable as exc:
            return self._unreadable(exc)
        if known:
            for key, value in known.items():
                recalled.pop(key, None)
                recalled[key] = value
        while len(recalled) > limit:
            del recalled[next(iter(recalled))]
        self._message_ids = recalled
        self._log_read = True
        return None

    def _unknown_id(self, envelopes: list[Envelope]) -> bool:
        """Whether a message in ``envelopes`` carries an id this actor does not know."""
        known = self._message_ids
        for envelope in envelopes:
            key = envelope.message_id
            if key is not None and (known is None or key not in known):
                return True
        return False

    def _unread(self, envelopes: list[Envelope]) -> dict[str, int]:
        """The ids in ``envelopes`` learnt from the log without their entry, with its seq."""
        known = self._message_ids
        assert known is not None
        wanted: dict[str, int] = {}
        for envelope in envelopes:
            key = envelope.message_id
            if key is not None:
                earlier = known.get(key)
                if earlier is not None and earlier[1] is None:
                    outcome = earlier[0]
                    assert isinstance(outcome, fx.Accepted) and outcome.seq is not None
                    wanted[key] = outcome.seq
        return wanted

    async def _read_entries(self, wanted: dict[str, int]) -> fx.Refusal | None:
        """Read the entries of resent ids learnt from the log without them (``wanted``: id
        and seq), so each resend is compared with the message as it was stored. An id whose
        entry is gone (retention pruned it) is forgotten: its message is taken as new."""
        known = self._message_ids
        assert known is not None
        try:
            with trio.CancelScope(shield=True):
                entries = await self.context.store.entries_after(
                    self.conversation_id, min(wanted.values()) - 1
                )
        except StoreUnavailable as exc:
            return self._unreadable(exc)
        by_seq = {entry.seq: entry for entry in entries}
        for key, seq in wanted.items():
            entry = by_seq.get(seq)
            if entry is not None and entry.message_id == key:
                known[key] = (known[key][0], entry)
            else:
                del known[key]
        self._unread_entries = any(value[1] is None for value in known.values())
        return None

    def _unreadable(self, exc: StoreUnavailable) -> fx.Refusal:
        log.warning(
            "the log cannot be read for its message ids: %s",
            exc,
            extra={"conversation_id": self.conversation_id},
        )
        return fx.Refusal("store_unavailable", str(exc))

    def _remember_id(self, message_id: str, outcome: fx.Outcome, event: Event) -> None:
        """Keep an accepted message's outcome under its id, for the last ``message_ids``."""
        if not isinstance(outcome, fx.Accepted):
            return
        known = self._message_ids
        if known is None:
            known = self._message_ids = {}
        known[message_id] = (outcome, event)
        if len(known) > self.context.limits.message_ids:
            del known[next(iter(known))]

    # -- the bot ----------------------------------------------------------------------------

    def feed_bot(self, entry: Entry, state: ConversationState) -> None:
        feeder = self._feeder
        if feeder is None:
            feeder = self._feeder = BotFeeder(
                self.context, self.conversation_id, state.bot_id, self._post
            )
        feeder.feed(entry, state.user_id, state.user_metadata)

    def _post(self, event: Event, reply: Reply | None) -> None:
        self.inbox.put(Envelope(event, reply))
