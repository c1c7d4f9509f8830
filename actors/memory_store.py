"""A store that keeps everything in memory: for tests, embedding and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

from actors.model.records import Entry, Party
from actors.model.state import ConversationState


class MemoryStore:
    """Implements :class:`actors.ports.Store`; nothing survives the process (a new switchboard
    given the same object starts from it, as a restarted server starts from its file)."""

    def __init__(self) -> None:
        self._states: dict[str, ConversationState] = {}
        self._entries: dict[str, list[Entry]] = {}
        self._owed_to_bot: dict[tuple[str, int], Entry] = {}

    async def load(self, conversation_id: str) -> ConversationState | None:
        return self._states.get(conversation_id)

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        self._states[state.conversation_id] = state
        if entries:
            self._entries.setdefault(state.conversation_id, []).extend(entries)
            for entry in entries:
                if Party.BOT in entry.audience:
                    self._owed_to_bot[(entry.conversation_id, entry.seq)] = entry

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]:
        entries = self._entries.get(conversation_id, [])
        # Sequence numbers start at 1 and have no gaps, so the list index is seq - 1.
        return entries[max(after_seq, 0) :]

    async def message_ids(self, conversation_id: str, after_seq: int) -> list[tuple[int, str]]:
        entries = self._entries.get(conversation_id, [])
        return [
            (entry.seq, entry.message_id)
            for entry in entries[max(after_seq, 0) :]
            if entry.message_id is not None
        ]

    async def open_sessions(self) -> list[ConversationState]:
        return [state for state in self._states.values() if state.session is not None]

    def bot_done(self, conversation_id: str, seq: int) -> None:
        self._owed_to_bot.pop((conversation_id, seq), None)

    async def bot_backlog(self) -> list[Entry]:
        return [self._owed_to_bot[key] for key in sorted(self._owed_to_bot)]
