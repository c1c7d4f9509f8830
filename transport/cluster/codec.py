"""States and entries as the JSON the engine keeps (compact keys: written per message)."""

from __future__ import annotations

import json
from typing import Any

from actors import ConversationState, Entry, Party
from actors.model.content import Content
from actors.model.state import Session
from transport.strict import compact_encoder

dumps = compact_encoder()


def state_json(state: ConversationState) -> str:
    session = state.session
    return dumps(
        {
            "c": state.conversation_id,
            "b": state.bot_id,
            "u": state.user_id,
            "m": dict(state.user_metadata),
            "n": state.next_seq,
            "o": state.sessions_opened,
            "s": None
            if session is None
            else [
                session.session_id,
                session.started_at,
                session.last_activity,
                session.queued_at,
                session.agent_id,
                session.agent_name,
                session.sign_off_offered,
            ],
        }
    )


def state_from_json(text: str | bytes) -> ConversationState:
    data = json.loads(text)
    session = data["s"]
    return ConversationState(
        data["c"],
        data["b"],
        data["u"],
        data["m"],
        data["n"],
        None if session is None else Session(*session),
        data["o"],
    )


def entry_json(entry: Entry) -> str:
    data: dict[str, Any] = entry.to_json()
    data["audience"] = sorted(party.value for party in entry.audience)
    return dumps(data)


def entry_from_json(text: str | bytes) -> Entry:
    data = json.loads(text)
    return Entry(
        data["conversation_id"],
        data["seq"],
        data["at"],
        Party(data["sender"]),
        Content(data["content_type"], data["content"]),
        frozenset(Party(p) for p in data["audience"]),
        data.get("agent_id"),
        data.get("session_id"),
        data.get("metadata", {}),
    )
