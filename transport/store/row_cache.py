"""What the writer last committed for each conversation, so that a message whose
conversation row would say nothing new writes only its own row (one row per message, not two);
and each conversation's metadata, encoded to JSON once."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from actors import ConversationState, Entry
from actors.model.settings import BotSettings
from actors.model.state import deadline
from transport.store.rows import Rows, conversation_row, dumps, message_rows, row_shape


class RowCache:
    """Builds each ``record`` call's rows (on trio's thread) and learns which rows are on disk
    from :meth:`remember` and :meth:`forget` (in the writer's thread).

    ``settings``: each bot's settings, used only to write each conversation's idle deadline
    as an absolute time.
    """

    def __init__(self, settings: Mapping[str, BotSettings]) -> None:
        self.settings = settings
        self._metadata_cache: dict[str, tuple[Mapping[str, Any], str]] = {}
        self._bot_mode_rows: dict[str, int] = {}
        self._live_rows: dict[str, tuple[Any, ...]] = {}

    def rows(self, state: ConversationState, entries: Sequence[Entry]) -> Rows:
        messages, changes, owed = message_rows(state, entries)
        rows = self._with_conversation_row(state, messages, changes)
        rows.owed_to_bot = owed or None
        return rows

    def _with_conversation_row(
        self,
        state: ConversationState,
        messages: list[tuple[Any, ...]],
        changes: list[tuple[str, tuple[Any, ...]]],
    ) -> Rows:
        """The rows of one call, with the conversation's own row unless the messages already
        say everything that moved."""
        cid = state.conversation_id
        if state.session is None:
            if messages and self._bot_mode_rows.get(cid) == state.sessions_opened:
                # Only next_seq moved, and the messages written with it say it: a bot-mode
                # message costs one row, not two (load takes next_seq from the last message).
                return Rows(None, messages, changes, None)
            mark: tuple[str, int | None] = (cid, state.sessions_opened)
            row = self._conversation_row(state, row_shape(state, self._metadata_json(state)))
            return Rows(row, messages, changes, None, mark)
        session = state.session
        shape = row_shape(state, self._metadata_json(state))
        if (
            messages
            and not changes
            and self._live_rows.get(cid) == shape
            and session.last_activity == max(message[2] for message in messages)
        ):
            # Only next_seq and last_activity moved, and the messages say both: a live
            # message costs one row, not two (load takes them from the messages numbered
            # from the row's next_seq on; should the wall clock step back meanwhile, it
            # takes the latest time seen, a deadline later by at most the step).
            return Rows(None, messages, changes, None)
        row = self._conversation_row(state, shape)
        return Rows(row, messages, changes, None, (cid, None), shape)

    def _metadata_json(self, state: ConversationState) -> str:
        """The user's metadata as JSON, encoded once per conversation: every state of a
        conversation shares the same mapping, and it rarely changes."""
        cached = self._metadata_cache.get(state.conversation_id)
        if cached is not None and cached[0] is state.user_metadata:
            return cached[1]
        if len(self._metadata_cache) >= 10_000:
            self._metadata_cache.clear()
        text = dumps(state.user_metadata)
        self._metadata_cache[state.conversation_id] = (state.user_metadata, text)
        return text

    def _conversation_row(
        self, state: ConversationState, shape: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        settings = self.settings.get(state.bot_id)
        idle_deadline = deadline(state, settings) if settings is not None else None
        session = state.session
        last_activity = None if session is None else session.last_activity
        return conversation_row(shape, state.next_seq, last_activity, idle_deadline, time.time())

    def remember(self, committed: list[Rows]) -> None:
        """Note which conversations now have a bot-mode row on disk (after the commit only:
        a rolled-back row must be written again)."""
        marks = self._bot_mode_rows
        live = self._live_rows
        if len(marks) > 100_000:
            marks.clear()
        if len(live) > 100_000:
            live.clear()
        for rows in committed:
            if rows.bot_mode is not None:
                cid, opened = rows.bot_mode
                if opened is None:
                    marks.pop(cid, None)
                else:
                    marks[cid] = opened
                if rows.live_shape is None:
                    live.pop(cid, None)
                else:
                    live[cid] = rows.live_shape

    def forget(self, conversation_id: str) -> None:
        """The conversation's row is gone: a next message must write it again, not skip it."""
        self._bot_mode_rows.pop(conversation_id, None)
        self._live_rows.pop(conversation_id, None)
