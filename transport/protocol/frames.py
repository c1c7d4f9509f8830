"""The WebSocket wire protocol: client frames in, server frames out (docs/protocol.md).

Inbound, :func:`parse_frame` turns one WebSocket message into a typed frame or raises
:class:`FrameRefused` with its refusal; :func:`parse_hello` does the same for the first frame of
a connection. Every frame is checked against its JSON Schema in ``transport/protocol/schemas/``,
compiled once at import. The common cases, a ``message`` from a user, an agent or a bot and every
hello, are checked by hand first: when that quick check passes, the schema would accept the frame
too, and when it does not, the schema decides (and words the error), so behaviour is the same either
way and the schema costs nothing on the hot path.

Outbound, :func:`encode` turns a core delivery into the text of one frame. Frames are
serialised once: the same entry delivered to a user and to an agent in a row is encoded once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any, Final, Literal

import attrs
import jsonschema
from referencing import Registry, Resource

from actors import (
    BotEvent,
    Content,
    DeskStatus,
    Entry,
    QueuePosition,
    Refusal,
    Transcript,
    Typing,
)
from actors.model.deliveries import Delivery
from transport import strict
from transport.bots.events import event_fields

VERSION: Final = 1
Role = Literal["user", "agent", "bot"]
ROLES: Final = ("user", "agent", "bot")

ERROR_CODES: Final = frozenset(
    {
        # the frame itself
        "bad_json",
        "binary_frame",
        "frame_too_large",
        "unknown_type",
        "invalid_frame",
        "rate_limited",
        "overloaded",
        "forbidden",
        # refusals from the core and the desk
        "not_assigned",
        "session_open",
        "session_already_open",
        "unknown_conversation",
        "transfer_failed",
        "not_waiting",
        "cannot_claim",
        "conversation_failed",
        "internal_error",
        "store_unavailable",
    }
)
"""Every ``code`` an error frame can carry. Clients may branch on them, so they are stable and
each is documented in docs/protocol.md (a test holds the two together)."""
FrameId = str | int

_URN: Final = "urn:switchover:"


# -- schemas ------------------------------------------------------------------------------


def _load_schemas() -> dict[str, dict[str, Any]]:
    folder = resources.files("transport.protocol") / "schemas"
    schemas: dict[str, dict[str, Any]] = {}
    for item in folder.iterdir():
        if item.name.endswith(".json"):
            schemas[item.name[: -len(".json")]] = json.loads(item.read_text("utf-8"))
    return schemas


SCHEMAS: Final = _load_schemas()
_REGISTRY: Final = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)


def _whole_number(_: object, value: object) -> bool:
    return type(value) is int


def validator(name: str) -> jsonschema.protocols.Validator:
    """A compiled validator for the schema ``name`` (a file name without ``.json``).

    ``"integer"`` means a JSON number written without a fraction or exponent: JSON Schema
    also counts ``1.0`` as an integer, which would reach the core as a float (a slice index,
    a seq) from a client's hostile frame."""
    schema = SCHEMAS[name]
    base = jsonschema.validators.validator_for(schema)
    checker = base.TYPE_CHECKER.redefine("integer", _whole_number)
    cls = jsonschema.validators.extend(base, type_checker=checker)
    return cls(schema, registry=_REGISTRY)


# Which frames each role may send after hello, and the schema of each.
_CLIENT_SCHEMAS: Final[dict[str, dict[str, str]]] = {
    "user": {
        "message": "client.user.message",
        "typing": "client.user.typing",
        "ping": "client.ping",
    },
    "agent": {
        "message": "client.agent.message",
        "typing": "client.agent.typing",
        "presence": "client.agent.presence",
        "sign_off": "client.agent.sign_off",
        "end": "client.agent.end",
        "transfer": "client.agent.transfer",
        "claim": "client.agent.claim",
        "replay": "client.agent.replay",
        "ping": "client.ping",
    },
    "bot": {
        "message": "client.bot.message",
        "event_ack": "client.bot.event_ack",
        "ping": "client.ping",
    },
}
_CLIENT_VALIDATORS: Final = {
    role: {kind: validator(name) for kind, name in kinds.items()}
    for role, kinds in _CLIENT_SCHEMAS.items()
}
_HELLO_VALIDATORS: Final = {role: validator(f"client.hello.{role}") for role in ROLES}
SERVER_VALIDATORS: Final = {
    name[len("server.") :]: validator(name) for name in SCHEMAS if name.startswith("server.")
}


# -- typed client frames ------------------------------------------------------------------


@attrs.frozen
class UserHello:
    """A user's hello: a new conversation (``resume_token`` is ``None``) or a return."""

    bot_id: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    resume_token: str | None = None
    last_seq: int = 0


@attrs.frozen
class AgentHello:
    token: str
    last_seqs: Mapping[str, int] = attrs.field(factory=dict)


@attrs.frozen
class BotHello:
    token: str


Hello = UserHello | AgentHello | BotHello


@attrs.frozen
class Say:
    """A user's or an agent's message. ``conversation_id`` is required from agents."""

    id: FrameId | None
    conversation_id: str | None
    content: Content


@attrs.frozen
class TypingNow:
    id: FrameId | None
    conversation_id: str | None


@attrs.frozen
class SetPresence:
    id: FrameId | None
    status: str


@attrs.frozen
class SignOff:
    id: FrameId | None
    conversation_id: str


@attrs.frozen
class EndSession:
    id: FrameId | None
    conversation_id: str


@attrs.frozen
class Transfer:
    id: FrameId | None
    conversation_id: str
    to_agent: str | None


@attrs.frozen
class Claim:
    id: FrameId | None
    conversation_id: str


@attrs.frozen
class ReplayAfter:
    id: FrameId | None
    conversation_id: str
    after_seq: int


@attrs.frozen
class BotPush:
    id: FrameId | None
    conversation_id: str
    contents: tuple[Content, ...]


@attrs.frozen
class EventAck:
    """A connected bot acknowledges the event ``event_id``."""

    id: FrameId | None
    event_id: str


@attrs.frozen
class Ping:
    id: FrameId | None


Frame = (
    Say
    | TypingNow
    | SetPresence
    | SignOff
    | EndSession
    | Transfer
    | Claim
    | ReplayAfter
    | BotPush
    | EventAck
    | Ping
)


class FrameRefused(Exception):
    """A frame that cannot be taken. ``refusal`` says why (its stable ``code``, its
    ``message``, and the ``conversation_id`` the frame named, when it could be read); ``id``
    is the frame's id when it could be read."""

    def __init__(
        self,
        code: str,
        message: str,
        frame_id: FrameId | None = None,
        conversation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.refusal = Refusal(code, message, conversation_id)
        self.id = frame_id


# -- parsing --------------------------------------------------------------------------------


MAX_DEPTH: Final = strict.MAX_DEPTH
_SAY_KEYS: Final = frozenset({"type", "id", "conversation_id", "content_type", "content"})


def _readable_id(data: Mapping[str, Any]) -> FrameId | None:
    """The frame's id if it is a valid one (so an error can carry it), else ``None``."""
    value = data.get("id")
    if isinstance(value, str) and len(value) <= 64 and not strict.bad_text(value):
        return value
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -strict.MAX_SAFE_INTEGER <= value <= strict.MAX_SAFE_INTEGER
    ):
        return value
    return None


def _quick_say(data: dict[str, Any], role: str) -> bool:
    """True only if the message frame surely passes its schema (the hot path)."""
    if not _SAY_KEYS.issuperset(data):
        return False
    content_type = data.get("content_type")
    if not (
        isinstance(content_type, str)
        and 0 < len(content_type) <= 64
        and type(data.get("content")) is dict
    ):
        return False
    if "id" in data and _readable_id(data) is None:
        return False
    conversation_id = data.get("conversation_id")
    if conversation_id is None:
        return role == "user" and "conversation_id" not in data
    return isinstance(conversation_id, str) and 0 < len(conversation_id) <= 128


_PUSH_KEYS: Final = frozenset({"type", "id", "conversation_id", "messages"})
_ITEM_KEYS: Final = frozenset({"content_type", "content"})


def _quick_push(data: dict[str, Any]) -> bool:
    """True only if a bot's message frame surely passes its schema (a connected bot answers
    every event with one)."""
    if not _PUSH_KEYS.issuperset(data):
        return False
    if "id" in data and _readable_id(data) is None:
        return False
    conversation_id = data.get("conversation_id")
    messages = data.get("messages")
    if not (
        isinstance(conversation_id, str)
        and 0 < len(conversation_id) <= 128
        and type(messages) is list
        and 0 < len(messages) <= 20
    ):
        return False
    for item in messages:
        if type(item) is not dict or item.keys() != _ITEM_KEYS:
            return False
        content_type = item["content_type"]
        if not (
            isinstance(content_type, str)
            and 0 < len(content_type) <= 64
            and type(item["content"]) is dict
        ):
            return False
    return True


_EVENT_ACK_KEYS: Final = frozenset({"type", "id", "event_id"})


def _quick_event_ack(data: dict[str, Any]) -> bool:
    """True only if a bot's event_ack surely passes its schema (one per event)."""
    return (
        _EVENT_ACK_KEYS.issuperset(data)
        and _text(data.get("event_id"), 256)
        and ("id" not in data or _readable_id(data) is not None)
    )


_PING_KEYS: Final = frozenset({"type", "id"})


def _quick_ping(data: dict[str, Any]) -> bool:
    """True only if a ping surely passes its schema: a ping must not wait behind the
    schema walk (a heartbeat measures the server, not the validator)."""
    return _PING_KEYS.issuperset(data) and ("id" not in data or _readable_id(data) is not None)


_HELLO_KEYS: Final = {
    "user": frozenset(
        {"type", "v", "role", "id", "bot_id", "metadata", "resume_token", "last_seq"}
    ),
    "agent": frozenset({"type", "v", "role", "id", "token", "last_seqs"}),
    "bot": frozenset({"type", "v", "role", "id", "token"}),
}
_MAX_LAST_SEQS: Final = 100


def _text(value: object, longest: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= longest


def _seq(value: object) -> bool:
    return type(value) is int and 0 <= value <= strict.MAX_SAFE_INTEGER


def _quick_hello(data: dict[str, Any], role: str) -> bool:
    """True only if the hello surely passes its schema (``type``, ``role`` and ``v`` are
    already known to match). Every connection sends one, and jsonschema's validator costs
    more than the rest of a hello's parsing; it now only words the error of a bad one."""
    if not _HELLO_KEYS[role].issuperset(data) or type(data["v"]) is not int:
        return False
    if "id" in data and _readable_id(data) is None:
        return False
    if role == "user":
        return (
            ("bot_id" not in data or _text(data["bot_id"], 128))
            and ("metadata" not in data or type(data["metadata"]) is dict)
            and ("resume_token" not in data or _text(data["resume_token"], 1024))
            and ("last_seq" not in data or _seq(data["last_seq"]))
        )
    if not _text(data.get("token"), 1024):
        return False
    if role == "agent" and "last_seqs" in data:
        seqs = data["last_seqs"]
        return (
            type(seqs) is dict
            and len(seqs) <= _MAX_LAST_SEQS
            and all(_text(name, 128) and _seq(seq) for name, seq in seqs.items())
        )
    return True


def _describe_schema_error(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{where or 'frame'}: {error.message}"[:300]


def _check(data: dict[str, Any], check: jsonschema.protocols.Validator) -> None:
    error = jsonschema.exceptions.best_match(check.iter_errors(data))
    if error is not None:
        raise FrameRefused("invalid_frame", _describe_schema_error(error), _readable_id(data))


def _decode(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(raw, str):
        raise FrameRefused("binary_frame", "Binary frames are not part of the protocol; send text.")
    # A str of n characters holds at most 4n bytes of UTF-8: only long frames are encoded.
    if len(raw) * 4 > max_bytes and len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
        raise FrameRefused("frame_too_large", f"Frames are limited to {max_bytes} bytes.")
    try:
        data = strict.loads(raw)
    except strict.Unrepresentable as exc:
        raise FrameRefused("invalid_frame", f"The frame cannot be taken: {exc}.") from None
    except ValueError as exc:
        raise FrameRefused("bad_json", f"The frame is not valid JSON: {exc}"[:300]) from None
    if not isinstance(data, dict):
        raise FrameRefused("bad_json", "A frame must be a JSON object.")
    # Deep nesting is cheap to send and costly to carry around: refuse it outright. Counting
    # brackets first keeps the common, shallow frame from paying for the walk.
    if raw.count("{") + raw.count("[") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise FrameRefused(
            "invalid_frame", f"The frame nests deeper than {MAX_DEPTH} levels.", _readable_id(data)
        )
    # A lone surrogate can only come from a \u escape (text from the socket is valid UTF-8):
    # only a frame with one, or a str that did not come from a socket, pays for the walk.
    if ("\\u" in raw or (not raw.isascii() and strict.bad_text(raw))) and (
        found := strict.problem(data)
    ):
        raise FrameRefused(
            "invalid_frame", f"The frame cannot be taken: {found}.", _readable_id(data)
        )
    return data


def _depth(value: object, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_frame(raw: str | bytes, role: str, max_bytes: int) -> Frame:
    """Read one frame sent by a client of ``role`` after its hello."""
    data = _decode(raw, max_bytes)
    kind = data.get("type")
    validators = _CLIENT_VALIDATORS[role]
    if kind == "message" and role != "bot" and _quick_say(data, role):
        return _unreserved(
            Say(
                data.get("id"),
                data.get("conversation_id"),
                Content(data["content_type"], data["content"]),
            )
        )
    if kind == "message" and role == "bot" and _quick_push(data):
        return _unreserved(_build(kind, data))
    if kind == "event_ack" and role == "bot" and _quick_event_ack(data):
        return EventAck(data.get("id"), data["event_id"])
    if kind == "ping" and _quick_ping(data):
        return Ping(data.get("id"))
    check = validators.get(kind) if isinstance(kind, str) else None
    if check is None:
        allowed = ", ".join(sorted(validators))
        raise FrameRefused(
            "unknown_type",
            f"A {role} may send frames of type {allowed}; got {str(kind)[:40]!r}.",
            _readable_id(data),
        )
    _check(data, check)
    assert isinstance(kind, str)
    return _unreserved(_build(kind, data))


def _unreserved(frame: Frame) -> Frame:
    """Refuse a message in a content type only the system may use (its notices)."""
    if isinstance(frame, Say):
        types: tuple[str, ...] = (frame.content.content_type,)
    elif isinstance(frame, BotPush):
        types = tuple(content.content_type for content in frame.contents)
    else:
        return frame
    for content_type in types:
        if content_type in strict.RESERVED_CONTENT_TYPES:
            raise FrameRefused(
                "invalid_frame",
                f"content_type {content_type!r} is reserved for the system.",
                frame.id,
                frame.conversation_id,
            )
    return frame


def _build(kind: str, data: dict[str, Any]) -> Frame:
    frame_id = data.get("id")
    conversation_id = data.get("conversation_id")
    if kind == "message":
        if "messages" in data:
            contents = tuple(Content(m["content_type"], m["content"]) for m in data["messages"])
            return BotPush(frame_id, data["conversation_id"], contents)
        return Say(frame_id, conversation_id, Content(data["content_type"], data["content"]))
    if kind == "typing":
        return TypingNow(frame_id, conversation_id)
    if kind == "presence":
        return SetPresence(frame_id, data["status"])
    if kind == "sign_off":
        return SignOff(frame_id, data["conversation_id"])
    if kind == "end":
        return EndSession(frame_id, data["conversation_id"])
    if kind == "transfer":
        return Transfer(frame_id, data["conversation_id"], data["to_agent"])
    if kind == "claim":
        return Claim(frame_id, data["conversation_id"])
    if kind == "replay":
        return ReplayAfter(frame_id, data["conversation_id"], data["after_seq"])
    if kind == "event_ack":
        return EventAck(frame_id, data["event_id"])
    return Ping(frame_id)


def parse_hello(raw: str | bytes, max_bytes: int) -> Hello:
    """Read a connection's first frame. Any :class:`FrameRefused` here closes with 4400."""
    data = _decode(raw, max_bytes)
    if data.get("type") != "hello":
        raise FrameRefused("unknown_type", "The first frame must be a hello.", _readable_id(data))
    role = data.get("role")
    if role not in ROLES:
        raise FrameRefused("invalid_frame", "hello needs a role: user, agent or bot.")
    if data.get("v") != VERSION:
        raise FrameRefused(
            "invalid_frame", f"Unsupported protocol version; this server speaks {VERSION}."
        )
    if not _quick_hello(data, role):
        _check(data, _HELLO_VALIDATORS[role])
    if role == "user":
        return UserHello(
            data.get("bot_id"),
            data.get("metadata", {}),
            data.get("resume_token"),
            data.get("last_seq", 0),
        )
    if role == "agent":
        return AgentHello(data["token"], data.get("last_seqs", {}))
    return BotHello(data["token"])


# -- building server frames -----------------------------------------------------------------

# What the server sends is strict JSON (no NaN or Infinity), or it is not sent.
_dumps = strict.compact_encoder(default=str)


def dumps(frame: Mapping[str, Any]) -> str:
    """Serialise a server frame (compact, UTF-8 friendly)."""
    return _dumps(frame)


def _entry_frame_text(entry: Entry) -> str:
    """The frame of one entry, encoded."""
    return _dumps({"type": "entry", **entry.to_json()})


class _LastEntryFrame:
    """The entry encoded last and its frame (one for the whole process)."""

    __slots__ = ("entry", "text")

    def __init__(self) -> None:
        self.entry: Entry | None = None
        self.text = ""


_last_entry_frame = _LastEntryFrame()


def _entry_frame_reusing_last(entry: Entry) -> str:
    """:func:`_entry_frame_text`, reused for the entry encoded last: a conversation hands each
    entry to its user's and its agent's connections in a row (bench/README.md, 2026-12-03)."""
    last = _last_entry_frame
    if entry is last.entry:
        return last.text
    text = _entry_frame_text(entry)
    last.entry = entry
    last.text = text
    return text


#: The frame of one entry.
entry_frame = _entry_frame_reusing_last


def typing_frame(typing: Typing) -> str:
    data: dict[str, Any] = {
        "type": "typing",
        "conversation_id": typing.conversation_id,
        "party": typing.party.value,
    }
    if typing.agent_id is not None:
        data["agent_id"] = typing.agent_id
    return _dumps(data)


def queue_frame(position: QueuePosition) -> str:
    return _dumps(
        {
            "type": "queue",
            "conversation_id": position.conversation_id,
            "session_id": position.session_id,
            "position": position.position,
            "estimated_wait": position.estimated_wait,
            "agents_available": position.agents_available,
        }
    )


def transcript_frame(transcript: Transcript) -> str:
    return _dumps(
        {
            "type": "transcript",
            "conversation_id": transcript.conversation_id,
            "session_id": transcript.session_id,
            "bot_id": transcript.bot_id,
            "user_id": transcript.user_id,
            "user_metadata": dict(transcript.user_metadata),
            "entries": [entry.to_json() for entry in transcript.entries],
            "truncated": transcript.truncated,
        }
    )


def desk_frame(status: DeskStatus) -> str:
    """An agent's view of the desk. Its lists are built field by field, in the classes' field
    order (the frame ``attrs.asdict`` would give): a view of 100 chats is re-sent to every
    agent of a bot while a crowd of sessions ends, and ``asdict`` made it five times dearer
    (bench/README.md, 2026-12-03 (evening))."""
    return _dumps(
        {
            "type": "desk",
            "agent_id": status.agent_id,
            "name": status.name,
            "presence": status.presence,
            "capacity": status.capacity,
            "chats": [
                {
                    "conversation_id": c.conversation_id,
                    "session_id": c.session_id,
                    "bot_id": c.bot_id,
                    "grace_until": c.grace_until,
                    "user_connected": c.user_connected,
                    "user_since": c.user_since,
                }
                for c in status.chats
            ],
            "queue": [
                {
                    "conversation_id": w.conversation_id,
                    "bot_id": w.bot_id,
                    "queued_at": w.queued_at,
                    "position": w.position,
                    "user_name": w.user_name,
                    "last_message": w.last_message,
                    "last_message_at": w.last_message_at,
                }
                for w in status.queue
            ],
            "colleagues": [
                {
                    "agent_id": c.agent_id,
                    "name": c.name,
                    "presence": c.presence,
                    "free_slots": c.free_slots,
                }
                for c in status.colleagues
            ],
            "canned_responses": {
                bot_id: [{"shortcut": r.shortcut, "text": r.text} for r in responses]
                for bot_id, responses in status.canned_responses.items()
            },
            "grace_period": status.grace_period,
        }
    )


def error_frame(
    code: str,
    message: str,
    frame_id: FrameId | None = None,
    conversation_id: str | None = None,
    retry_after: float | None = None,
) -> str:
    data: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if frame_id is not None:
        data["id"] = frame_id
    if conversation_id is not None:
        data["conversation_id"] = conversation_id
    if retry_after is not None:
        data["retry_after"] = round(retry_after, 3)
    return _dumps(data)


def ack_frame(frame_id: FrameId, seq: int | None) -> str:
    """``dumps({"type": "ack", "id": frame_id, "seq": seq})``, written directly: every message
    sent with an id is answered with one (bench/README.md, 2026-12-03)."""
    return f'{{"type":"ack","id":{_dumps(frame_id)},"seq":{"null" if seq is None else seq}}}'


def pong_frame(frame_id: FrameId | None) -> str:
    """``dumps({"type": "pong", "id": frame_id})`` (no ``id`` without one), written directly
    as :func:`ack_frame` is."""
    return '{"type":"pong"}' if frame_id is None else f'{{"type":"pong","id":{_dumps(frame_id)}}}'


def welcome_frame(role: Role, **fields: str) -> str:
    return _dumps({"type": "welcome", "v": VERSION, "role": role, **fields})


def event_frame(event: BotEvent) -> str:
    """What a connected bot receives for one event."""
    return _dumps(
        {
            **event_fields(event),
            "content_type": event.content.content_type,
            "content": dict(event.content.content),
            "metadata": dict(event.metadata),
        }
    )


def encode(item: Delivery) -> str:
    """The frame for one core delivery."""
    if isinstance(item, Entry):
        return entry_frame(item)
    if isinstance(item, QueuePosition):
        return queue_frame(item)
    if isinstance(item, Typing):
        return typing_frame(item)
    if isinstance(item, Transcript):
        return transcript_frame(item)
    if isinstance(item, DeskStatus):
        return desk_frame(item)
    assert isinstance(item, Refusal)
    return error_frame(item.code, item.message, conversation_id=item.conversation_id)


def server_frame_errors(frame: Mapping[str, Any]) -> Iterator[str]:
    """Why a server frame breaks its schema (empty when it is valid). For tests and tools."""
    kind = frame.get("type")
    check = SERVER_VALIDATORS.get(kind) if isinstance(kind, str) else None
    if check is None:
        yield f"unknown server frame type {kind!r}"
        return
    for error in check.iter_errors(frame):
        yield _describe_schema_error(error)


__all__ = [
    "ROLES",
    "SCHEMAS",
    "VERSION",
    "AgentHello",
    "BotHello",
    "BotPush",
    "Claim",
    "EndSession",
    "EventAck",
    "Frame",
    "FrameId",
    "FrameRefused",
    "Hello",
    "Ping",
    "ReplayAfter",
    "Say",
    "SetPresence",
    "SignOff",
    "Transfer",
    "TypingNow",
    "UserHello",
    "dumps",
    "encode",
    "parse_frame",
    "parse_hello",
    "server_frame_errors",
]
