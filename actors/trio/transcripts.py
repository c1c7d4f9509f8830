"""What an agent is shown of a conversation it holds: the same on pickup and on reconnecting.

Both the conversation (when an agent picks a session up) and the desk (when an agent who holds
chats connects again, after a dropped connection or a server restart) build it here, so a
desk that comes back sees exactly what it saw at pickup: the user's details and the
transcript, including what the user and the bot said before the handoff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.model.deliveries import Transcript
from actors.model.records import Entry, Party
from actors.model.state import ConversationState

#: Reads a conversation's stored entries after a seq (``Store.entries_after``).
ReadEntries = Callable[[str, int], Awaitable[list[Entry]]]


async def read_transcript(
    read: ReadEntries, state: ConversationState, session_id: str, tail: int
) -> Transcript:
    """The session so far and a bounded tail before it (at most ``tail`` entries, up to
    ``state``): the agent asks for more with ``replay``."""
    after = max(0, state.next_seq - 1 - tail)
    entries = await read(state.conversation_id, after)
    # Up to ``state``: entries stored after it reach the agent live.
    shown = tuple(
        e
        for e in entries
        if e.seq < state.next_seq and (e.visible_to(Party.USER) or e.visible_to(Party.AGENT))
    )
    return Transcript(
        state.conversation_id,
        session_id,
        state.bot_id,
        state.user_id,
        state.user_metadata,
        shown,
        truncated=after > 0,
    )
