"""States and entries as the JSON the engine keeps (compact keys: written per message)."""

from __future__ import annotations

import enum
import json
import typing
from collections.abc import Mapping
from typing import Any

import attrs

from actors import ConversationState, Entry, Party
from actors.model import deliveries, effects, events
from actors.model.agent_request import AgentRequest
from actors.model.content import Content
from actors.model.settings import BotSettings, CannedResponse
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
    if entry.message_id is not None:
        # Never part of what clients are sent (to_json): only the log keeps it.
        data["message_id"] = entry.message_id
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
        data.get("message_id"),
    )


# -- events and outcomes, between nodes ------------------------------------------------------

_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        *typing.get_args(events.Event),
        effects.Accepted,
        effects.Refusal,
        Content,
    )
}


#: What the desk's nodes send each other: its requests, and deliveries to agents.
_DESK_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Entry,
        Party,
        Content,
        AgentRequest,
        BotSettings,
        CannedResponse,
        effects.Refusal,
        deliveries.Typing,
        deliveries.QueuePosition,
        deliveries.Transcript,
        deliveries.WaitingItem,
        deliveries.HeldChat,
        deliveries.Colleague,
        deliveries.DeskStatus,
    )
}


def _plain(value: Any) -> Any:
    """Every object becomes a one-key wrapper ("@" a class, "(" a tuple, "{" a map, "!" an
    enum member, "[" a frozenset), so a user's content can never pass for one of the
    classes."""
    if isinstance(value, enum.Enum):
        return {"!": [type(value).__name__, value.value]}
    if isinstance(value, frozenset):
        return {"[": sorted((_plain(v) for v in value), key=repr)}
    if attrs.has(type(value)):
        fields = {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
        return {"@": [type(value).__name__, fields]}
    if isinstance(value, tuple):
        return {"(": [_plain(v) for v in value]}
    if isinstance(value, Mapping):
        return {"{": {str(k): _plain(v) for k, v in value.items()}}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _rebuilt(value: Any, classes: Mapping[str, type] = _CLASSES) -> Any:
    if isinstance(value, list):
        return [_rebuilt(v, classes) for v in value]
    if not isinstance(value, dict):
        return value
    ((kind, inner),) = value.items()
    if kind == "@":
        name, fields = inner
        cls = classes[name]  # a name this module does not know raises KeyError
        return cls(**{k: _rebuilt(v, classes) for k, v in fields.items()})
    if kind == "(":
        return tuple(_rebuilt(v, classes) for v in inner)
    if kind == "!":
        name, member = inner
        enum_class = classes[name]
        if not issubclass(enum_class, enum.Enum):
            raise KeyError(name)
        return enum_class(member)
    if kind == "[":
        return frozenset(_rebuilt(v, classes) for v in inner)
    return {k: _rebuilt(v, classes) for k, v in inner.items()}


def message_json(value: events.Event | effects.Outcome) -> str:
    """An event or an outcome as JSON, for another node (the events' and outcomes' classes
    only: anything else is refused when read back)."""
    return dumps(_plain(value))


def message_from_json(text: str | bytes) -> Any:
    return _rebuilt(json.loads(text))


def desk_json(value: Any) -> str:
    """A desk request's fields or a delivery to an agent, as JSON for another node (the
    desk's and the deliveries' classes only: anything else is refused when read back)."""
    return dumps(_plain(value))


def desk_from_json(text: str | bytes) -> Any:
    return _rebuilt(json.loads(text), _DESK_CLASSES)
