"""Rows and records: how the core's states and entries become the store's rows, and rows
become states and entries again; the column order both directions share is set here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from actors import ConversationState, Entry, Party
from actors.model.content import SESSION_END, SESSION_EXPIRED, Content
from actors.model.state import Session
from transport.strict import bad_text, compact_encoder

MESSAGE_COLUMNS = (
    "conversation_id, seq, at, sender, content_type, content, audience, agent_id, session_id,"
    " metadata, message_id"
)
CONVERSATION_COLUMNS = (
    "id, bot_id, user_id, metadata, next_seq, sessions_opened, mode, session_id, started_at,"
    " last_activity, queued_at, agent_id, agent_name, position, sign_off_offered, deadline,"
    " updated_at"
)
SESSION_STARTED = (
    "INSERT OR IGNORE INTO sessions (session_id, conversation_id, bot_id, started_at, queued_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
SESSION_ASSIGNED = "UPDATE sessions SET agent_id = ? WHERE session_id = ?"
SESSION_ENDED = "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE session_id = ?"

# What it cannot encode (a type JSON does not have, NaN or Infinity, a cycle) makes ``record``
# refuse the message.
dumps = compact_encoder()
_SENDERS = {party: party.value for party in Party}
_AUDIENCES: dict[frozenset[Party], str] = {}


def _audience(parties: frozenset[Party]) -> str:
    """``",".join(sorted(p.value for p in parties))``, kept per audience: there are sixteen
    at most, and every message writes one (bench/README.md, 2026-12-03)."""
    text = _AUDIENCES.get(parties)
    if text is None:
        text = _AUDIENCES[parties] = ",".join(sorted(p.value for p in parties))
    return text


class Rows:
    """One ``record`` call turned into rows (plain slots: built once per message)."""

    __slots__ = (
        "bot_mode",
        "conversation",
        "live_shape",
        "messages",
        "owed_to_bot",
        "presence",
        "session_changes",
    )

    def __init__(
        self,
        conversation: tuple[Any, ...] | None,
        messages: list[tuple[Any, ...]],
        session_changes: list[tuple[str, tuple[Any, ...]]],
        presence: tuple[str, str, float] | None,
        bot_mode: tuple[str, int | None] | None = None,
        live_shape: tuple[Any, ...] | None = None,
        owed_to_bot: list[tuple[str, int]] | None = None,
    ) -> None:
        self.conversation = conversation
        self.messages = messages
        self.session_changes = session_changes
        self.presence = presence
        # (conversation id, seq) of the messages the bot must see: written to its outbox in
        # the same transaction.
        self.owed_to_bot = owed_to_bot
        # (conversation id, sessions opened) when the row written is in bot mode; (id, None)
        # when it has a session.
        self.bot_mode = bot_mode
        # The row written for a session, less what its messages say on their own (next_seq,
        # last_activity, deadline, updated_at): what a live message must leave unchanged for
        # the row to be skipped.
        self.live_shape = live_shape


def writable(rows: Rows) -> bool:
    """Whether every string of ``rows`` can be written as UTF-8 (no lone surrogate): checked
    before the rows join a batch, so one call's text cannot fail everyone's commit. An ASCII
    string (nearly all of them) is passed over without a call: three times faster for a
    session's end, whose rows hold some thirty strings."""
    rows_written = [row for row in (rows.conversation, *rows.messages) if row is not None]
    rows_written.extend(parameters for _, parameters in rows.session_changes)
    for row in rows_written:
        for value in row:
            if type(value) is str and not value.isascii() and bad_text(value):
                return False
    return True


def message_rows(
    state: ConversationState, entries: Sequence[Entry]
) -> tuple[list[tuple[Any, ...]], list[tuple[str, tuple[Any, ...]]], list[tuple[str, int]]]:
    """The ``messages`` rows of ``entries``, the changes to the ``sessions`` table they mark,
    and (conversation id, seq) of those the bot must see."""
    messages = []
    changes: list[tuple[str, tuple[Any, ...]]] = []
    owed: list[tuple[str, int]] = []
    for entry in entries:
        if Party.BOT in entry.audience:
            owed.append((entry.conversation_id, entry.seq))
        messages.append(
            (
                entry.conversation_id,
                entry.seq,
                entry.at,
                _SENDERS[entry.sender],
                entry.content.content_type,
                dumps(entry.content.content),
                _audience(entry.audience),
                entry.agent_id,
                entry.session_id,
                dumps(entry.metadata) if entry.metadata else None,
                entry.message_id,
            )
        )
        change = session_change(state, entry)
        if change is not None:
            changes.append(change)
    return messages, changes, owed


# A conversation's session columns, less last_activity, in bot mode: session_id, started_at,
# queued_at, agent_id, agent_name, position, sign_off_offered.
_NO_SESSION = (None, None, None, None, None, None, 0)


def row_shape(state: ConversationState, metadata: str) -> tuple[Any, ...]:
    """The ``conversations`` row of ``state`` less what its messages say on their own
    (``next_seq``, ``last_activity``) and what is worked out as it is written (``deadline``,
    ``updated_at``), given the user's metadata as JSON: while it stays the same, a live
    message need not rewrite the row."""
    head = (
        state.conversation_id,
        state.bot_id,
        state.user_id,
        metadata,
        state.sessions_opened,
        state.mode.value,
    )
    session = state.session
    if session is None:
        return head + _NO_SESSION
    return (
        *head,
        session.session_id,
        session.started_at,
        session.queued_at,
        session.agent_id,
        session.agent_name,
        None,  # the queue position is no longer stored (it is ephemeral)
        int(session.sign_off_offered),
    )


def conversation_row(
    shape: tuple[Any, ...],
    next_seq: int,
    last_activity: float | None,
    idle_deadline: float | None,
    now: float,
) -> tuple[Any, ...]:
    """The ``conversations`` row (:data:`CONVERSATION_COLUMNS`) of a conversation of that
    :func:`row_shape`, with what the shape leaves out: the open session's deadline as an
    absolute time, and the time now."""
    # next_seq goes after metadata, last_activity after started_at.
    return (*shape[:4], next_seq, *shape[4:8], last_activity, *shape[8:], idle_deadline, now)


def session_change(state: ConversationState, entry: Entry) -> tuple[str, tuple[Any, ...]] | None:
    """The change to the ``sessions`` table an entry marks: the session's start, an agent
    joining it, its end and reason. Derived from the entries, in their order, so a session
    that opens and ends within one batch is still recorded whole."""
    content = entry.content
    session_id = entry.session_id
    if session_id is None:
        return None
    if entry.sender is Party.SYSTEM and content.content_type == "notice":
        code = content.content.get("code")
        if code == "session_started":
            return (
                SESSION_STARTED,
                (session_id, state.conversation_id, state.bot_id, entry.at, entry.at),
            )
        if code == "agent_joined":
            return (SESSION_ASSIGNED, (content.content.get("agent_id"), session_id))
        return None
    if Party.BOT in entry.audience and (
        content.is_payload(SESSION_END) or content.is_payload(SESSION_EXPIRED)
    ):
        return (SESSION_ENDED, (entry.at, entry.metadata.get("reason"), session_id))
    return None


def state_from_row(row: Sequence[Any]) -> ConversationState:
    """A conversation's state from its row, followed by the seq of its last message and the
    time of its newest message numbered from the row's ``next_seq`` on."""
    (
        conversation_id,
        bot_id,
        user_id,
        metadata,
        next_seq,
        sessions_opened,
        _mode,
        session_id,
        started_at,
        last_activity,
        queued_at,
        agent_id,
        agent_name,
        _position,
        sign_off_offered,
        _deadline,
        _updated_at,
        last_seq,
        later_activity,
    ) = row
    session = None
    if session_id is not None:
        session = Session(
            session_id,
            started_at,
            last_activity if later_activity is None else max(last_activity, later_activity),
            queued_at,
            agent_id,
            agent_name or "",
            bool(sign_off_offered),
        )
    return ConversationState(
        conversation_id,
        bot_id,
        user_id,
        json.loads(metadata),
        max(next_seq, (last_seq or 0) + 1),
        session,
        sessions_opened,
    )


def entry_from_row(row: Sequence[Any]) -> Entry:
    """An entry from its ``messages`` row (:data:`MESSAGE_COLUMNS`)."""
    (
        conversation_id,
        seq,
        at,
        sender,
        content_type,
        content,
        audience,
        agent_id,
        session_id,
        meta,
        message_id,
    ) = row
    return Entry(
        conversation_id,
        seq,
        at,
        Party(sender),
        Content(content_type, json.loads(content)),
        frozenset(Party(p) for p in audience.split(",") if p),
        agent_id,
        session_id,
        json.loads(meta) if meta else {},
        message_id,
    )
