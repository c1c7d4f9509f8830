"""A conversation's side of its bot: the queue of events the bot is owed, and the short-lived
task that hands them over one at a time.

The bot runs in a helper task, so a slow bot never holds up its conversation (the user can
still reach a human while the bot thinks). What the bot is owed stays in the store until the
bot has answered (see :class:`~actors.ports.Store`), so an event is marked done only when:

* the bot answered nothing, or its answer was stored (or refused as unwanted);
* the bot failed on a user's message: the user is told the assistant is unavailable, since
  asking again later would answer a question long moved on from.

A session's ending (``LIVECHAT_SESSION_END`` or ``EXPIRED`` from the system) is never given
up: while the bot cannot be reached it is tried again with capped exponential backoff, and
the events after it wait, so the bot hears them in order once it is back.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import trio

from actors.machines.backoff import Backoff
from actors.model import effects as fx
from actors.model.content import SESSION_END, SESSION_EXPIRED
from actors.model.deliveries import BotEvent
from actors.model.events import BotSays, BotUnavailable, Event
from actors.model.records import Entry, Party
from actors.trio.context import ConversationContext

log = logging.getLogger("switchover.conversation")

SYSTEM_METADATA = frozenset({"reason", "session_id", "agent_id", "sender"})
"""Bot event metadata keys only Switchover sets: a user's metadata of that name is dropped."""

_NOT_STORED = frozenset({"store_unavailable"})
"""The store refused the bot's answer: the event it answered stays owed (in the store) and is
delivered again on restart."""

_ASK_AGAIN = frozenset({"internal_error", "conversation_failed"})
"""The conversation failed before it could store the answer and restarts (or is rebuilt):
the event is handed to the bot again, first in line. A conversation that fails whatever it
is given escalates, and its rebuild waits longer each time, so this cannot spin."""

Post = Callable[[Event, Callable[[fx.Outcome], None] | None], None]


def is_session_ending(event: BotEvent) -> bool:
    return event.sender is Party.SYSTEM and (
        event.content.is_payload(SESSION_END) or event.content.is_payload(SESSION_EXPIRED)
    )


class BotFeeder:
    """Owns one conversation's bot queue. ``post`` puts an event into the conversation's
    own inbox (the bot's answers are handled there, like anything else)."""

    __slots__ = ("_backoff", "_busy", "_queue", "bot_id", "context", "conversation_id", "post")

    def __init__(
        self, context: ConversationContext, conversation_id: str, bot_id: str, post: Post
    ) -> None:
        self.context = context
        self.conversation_id = conversation_id
        self.bot_id = bot_id
        self.post = post
        self._queue: deque[tuple[int, BotEvent]] = deque()
        self._busy = False
        self._backoff: Backoff | None = None

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.context.limits.bot_queue

    def feed(self, entry: Entry, user_id: str, user_metadata: Mapping[str, Any]) -> None:
        """Queue ``entry`` for the bot and start the helper task if it is not running."""
        metadata = {
            **{k: v for k, v in user_metadata.items() if k not in SYSTEM_METADATA},
            **entry.metadata,
        }
        self._queue.append(
            (
                entry.seq,
                BotEvent(
                    f"{self.conversation_id}:{entry.seq}",
                    self.conversation_id,
                    self.bot_id,
                    user_id,
                    entry.content,
                    metadata,
                    entry.sender,
                ),
            )
        )
        self._start_delivering()

    def _start_delivering(self) -> None:
        if not self._busy:
            self._busy = True
            self.context.spawn(self._run)

    async def _run(self) -> None:
        """Deliver queued events in order and post the answers back. Exits when the queue
        is empty (or the switchboard stops)."""
        bot = self.context.bot_for(self.bot_id)
        store = self.context.store
        queue = self._queue
        try:
            while queue:
                seq, event = queue[0]
                try:
                    replies = await bot.on_event(event)
                except Exception as exc:
                    if is_session_ending(event):
                        await self._wait_to_retry(event, exc)
                        continue
                    queue.popleft()
                    log.warning(
                        "bot %s failed on event %s: %r",
                        event.bot_id,
                        event.event_id,
                        exc,
                        extra={"conversation_id": self.conversation_id},
                    )
                    self.post(BotUnavailable(repr(exc)), None)
                    store.bot_done(self.conversation_id, seq)
                    continue
                queue.popleft()
                if self._backoff is not None and self._backoff.succeeded():
                    log.info(
                        "bot %s reached again",
                        event.bot_id,
                        extra={"conversation_id": self.conversation_id},
                    )
                if replies:
                    self.post(BotSays(tuple(replies)), self._answered(seq, event))
                else:
                    store.bot_done(self.conversation_id, seq)
        finally:
            self._busy = False

    async def _wait_to_retry(self, event: BotEvent, exc: Exception) -> None:
        if self._backoff is None:
            self._backoff = Backoff(first=1.0, cap=60.0)
        now = trio.current_time()
        if self._backoff.failed(now):
            log.warning(
                "bot %s cannot be reached with %s: %r; retrying with backoff",
                event.bot_id,
                event.event_id,
                exc,
                extra={"conversation_id": self.conversation_id},
            )
        await trio.sleep_until(self._backoff.due)

    def _answered(self, seq: int, event: BotEvent) -> Callable[[fx.Outcome], None]:
        """Once the bot's answer to entry ``seq`` is stored (or turned down), the bot is no
        longer owed that entry."""

        def answered(outcome: fx.Outcome) -> None:
            if isinstance(outcome, fx.Refusal) and outcome.code in _ASK_AGAIN:
                self._queue.appendleft((seq, event))
                self._start_delivering()
                return
            if isinstance(outcome, fx.Refusal):
                log.warning(
                    "bot reply dropped: %s (%s)",
                    outcome.message,
                    outcome.code,
                    extra={"conversation_id": self.conversation_id},
                )
                if outcome.code in _NOT_STORED:
                    return
            self.context.store.bot_done(self.conversation_id, seq)

        return answered
