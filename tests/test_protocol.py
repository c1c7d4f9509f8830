"""The wire protocol without sockets: parsing, validation, encoding, resume tokens."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import (
    BotEvent,
    Content,
    DeskStatus,
    Entry,
    Party,
    Refusal,
    Transcript,
    Typing,
)
from actors.model.deliveries import Colleague, HeldChat, WaitingItem
from actors.model.settings import CannedResponse
from transport.protocol import frames as wire
from transport.protocol.frames import FrameRefused, parse_frame, parse_hello, strict
from transport.protocol.tokens import ExpiredToken, InvalidToken, ResumeTokens

LIMIT = 64 * 1024
DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def rejection(raw: str | bytes, role: str = "user") -> FrameRefused:
    with pytest.raises(FrameRefused) as caught:
        parse_frame(raw, role, LIMIT)
    return caught.value


# -- schemas ----------------------------------------------------------------------------------


def test_every_schema_is_a_valid_json_schema() -> None:
    assert len(wire.SCHEMAS) >= 20
    for name, schema in wire.SCHEMAS.items():
        jsonschema.validators.validator_for(schema).check_schema(schema)
        assert schema["$id"] == f"urn:switchover:{name}"


def test_every_documented_frame_type_has_a_schema() -> None:
    server_types = {name.split(".", 1)[1] for name in wire.SCHEMAS if name.startswith("server.")}
    assert server_types == {
        "welcome",
        "ack",
        "entry",
        "typing",
        "queue",
        "transcript",
        "desk",
        "event",
        "error",
        "pong",
    }
    text = DOCS.read_text()
    for kind in server_types:
        assert f'"type":"{kind}"' in text


def test_every_client_frame_type_is_documented() -> None:
    text = DOCS.read_text()
    for name, schema in wire.SCHEMAS.items():
        if name.startswith("client."):
            kind = schema["properties"]["type"]["const"]
            assert f'{{"type":"{kind}"' in text, name


# -- parsing: good frames ---------------------------------------------------------------------


def test_a_user_message_becomes_a_say() -> None:
    assert wire._quick_say({"type": "message", "content_type": "text", "content": {}}, "user")
    parsed = parse_frame(
        frame(type="message", id="c1", content_type="text", content={"text": "hi"}), "user", LIMIT
    )
    assert parsed == wire.Say("c1", None, Content.text("hi"))


def test_agent_frames_are_typed() -> None:
    conv = "conv-1"
    cases = {
        frame(type="presence", status="away"): wire.SetPresence(None, "away"),
        frame(type="sign_off", id=3, conversation_id=conv): wire.SignOff(3, conv),
        frame(type="transfer", conversation_id=conv, to_agent=None): wire.Transfer(
            None, conv, None
        ),
        frame(type="transfer", conversation_id=conv, to_agent="bob"): wire.Transfer(
            None, conv, "bob"
        ),
        frame(type="claim", id="x", conversation_id=conv): wire.Claim("x", conv),
        frame(type="replay", conversation_id=conv, after_seq=4): wire.ReplayAfter(None, conv, 4),
        frame(type="typing", conversation_id=conv): wire.TypingNow(None, conv),
        frame(type="ping", id=9): wire.Ping(9),
        frame(
            type="message", conversation_id=conv, content_type="text", content={"text": "yo"}
        ): wire.Say(None, conv, Content.text("yo")),
    }
    for raw, expected in cases.items():
        assert parse_frame(raw, "agent", LIMIT) == expected


def test_a_bot_push_carries_its_messages() -> None:
    raw = frame(
        type="message",
        id="b1",
        conversation_id="c",
        messages=[
            {"content_type": "text", "content": {"text": "a"}},
            {"content_type": "image", "content": {"url": "u"}},
        ],
    )
    assert wire._quick_push(json.loads(raw))  # the common push takes the quick path
    assert parse_frame(raw, "bot", LIMIT) == wire.BotPush(
        "b1", "c", (Content.text("a"), Content("image", {"url": "u"}))
    )


def test_a_bot_acknowledges_an_event() -> None:
    raw = frame(type="event_ack", id="k1", event_id="c9:3")
    assert wire._quick_event_ack(json.loads(raw))  # one per event: the quick path
    assert parse_frame(raw, "bot", LIMIT) == wire.EventAck("k1", "c9:3")
    assert parse_frame(frame(type="event_ack", event_id="c9:3"), "bot", LIMIT) == wire.EventAck(
        None, "c9:3"
    )
    for role in ("user", "agent"):
        assert rejection(raw, role).refusal.code == "unknown_type"


def test_hellos_by_role() -> None:
    assert parse_hello(frame(type="hello", v=1, role="user", bot_id="demo"), LIMIT) == (
        wire.UserHello("demo", {}, None, 0)
    )
    assert parse_hello(
        frame(type="hello", v=1, role="user", resume_token="t", last_seq=7), LIMIT
    ) == wire.UserHello(None, {}, "t", 7)
    assert parse_hello(
        frame(type="hello", v=1, role="agent", token="k", last_seqs={"c": 2}), LIMIT
    ) == wire.AgentHello("k", {"c": 2})
    assert parse_hello(frame(type="hello", v=1, role="bot", token="k"), LIMIT) == wire.BotHello("k")


# -- parsing: bad frames get stable codes -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "role", "code"),
    [
        ("not json", "user", "bad_json"),
        ("[1, 2]", "user", "bad_json"),
        ('{"type":"message","content_type":"t","content":{"x":NaN}}', "user", "bad_json"),
        (b'{"type":"ping"}', "user", "binary_frame"),
        ('{"type":"presence","status":"online"}', "user", "unknown_type"),
        ('{"id":"x"}', "user", "unknown_type"),
        ('{"type":"claim","conversation_id":"c"}', "bot", "unknown_type"),
        ('{"type":"message","content_type":"","content":{}}', "user", "invalid_frame"),
        ('{"type":"message","content_type":"text","content":"hi"}', "user", "invalid_frame"),
        (
            '{"type":"message","content_type":"text","content":{},"extra":1}',
            "user",
            "invalid_frame",
        ),
        ('{"type":"message","content_type":"text","content":{}}', "agent", "invalid_frame"),
        ('{"type":"presence","status":"asleep"}', "agent", "invalid_frame"),
        ('{"type":"message","conversation_id":"c","messages":[]}', "bot", "invalid_frame"),
        ('{"type":"ping","id":true}', "user", "invalid_frame"),
        (
            '{"type":"message","content_type":"t","content":' + "[" * 40 + "]" * 40 + "}",
            "user",
            "invalid_frame",
        ),
    ],
)
def test_bad_frames_get_their_code(raw: str | bytes, role: str, code: str) -> None:
    assert rejection(raw, role).refusal.code == code


def test_errors_carry_a_readable_id() -> None:
    bad = rejection('{"type":"message","id":"c9","content_type":"","content":{}}')
    assert (bad.refusal.code, bad.id) == ("invalid_frame", "c9")
    assert "content_type" in bad.refusal.message


def test_size_is_counted_in_utf8_bytes() -> None:
    small = json.dumps(
        {"type": "message", "content_type": "text", "content": {"text": "é" * 100}},
        ensure_ascii=False,
    )
    parse_frame(small, "user", 300)
    assert rejection_with_limit(small, 200).refusal.code == "frame_too_large"


def rejection_with_limit(raw: str, limit: int) -> FrameRefused:
    with pytest.raises(FrameRefused) as caught:
        parse_frame(raw, "user", limit)
    return caught.value


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"type":"message"}', "first frame must be a hello"),
        ('{"type":"hello","v":1,"role":"admin"}', "role"),
        ('{"type":"hello","v":2,"role":"user"}', "version"),
        ('{"type":"hello","v":1,"role":"agent"}', "token"),
        ('{"type":"hello","v":1,"role":"user","last_seq":-1}', "last_seq"),
    ],
)
def test_bad_hellos_are_refused(raw: str, fragment: str) -> None:
    with pytest.raises(FrameRefused) as caught:
        parse_hello(raw, LIMIT)
    assert fragment in caught.value.refusal.message


# -- the quick path agrees with the schema ----------------------------------------------------


def taken(data: dict[str, Any], schema_ok: bool) -> bool:
    """What the parser must take: what the schema accepts, in strict JSON
    (transport/strict.py: integers within +-(2^53 - 1), valid Unicode, bounded nesting),
    and no message in a content
    type reserved for the system."""
    contents = data.get("messages") if isinstance(data.get("messages"), list) else [data]
    reserved = any(
        isinstance(item, dict) and item.get("content_type") in strict.RESERVED_CONTENT_TYPES
        for item in contents
    )
    return schema_ok and strict.problem(data) is None and not reserved


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
message_like = st.fixed_dictionaries(
    {"type": st.just("message")},
    optional={
        "id": st.one_of(
            st.text(max_size=70),
            st.integers(),
            st.booleans(),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        "conversation_id": st.one_of(st.text(max_size=130), st.none(), st.integers()),
        "content_type": st.one_of(st.text(max_size=70), st.integers()),
        "content": st.one_of(
            st.dictionaries(st.text(max_size=3), json_values, max_size=3), json_values
        ),
        "extra": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(data=message_like, role=st.sampled_from(["user", "agent"]))
def test_the_quick_path_accepts_exactly_what_the_schema_accepts(
    data: dict[str, Any], role: str
) -> None:
    schema_ok = wire.validator(f"client.{role}.message").is_valid(data)
    if wire._quick_say(data, role):
        assert schema_ok
    try:
        parsed = parse_frame(json.dumps(data), role, LIMIT)
    except FrameRefused as bad:
        assert not taken(data, schema_ok)
        assert bad.refusal.code == "invalid_frame"
    else:
        assert taken(data, schema_ok)
        assert isinstance(parsed, wire.Say)
        assert parsed.content == Content(data["content_type"], data["content"])


content_item = st.fixed_dictionaries(
    {},
    optional={
        "content_type": st.one_of(st.text(max_size=70), st.integers()),
        "content": st.one_of(
            st.dictionaries(st.text(max_size=3), json_values, max_size=2), json_values
        ),
        "extra": json_values,
    },
)
push_like = st.fixed_dictionaries(
    {"type": st.just("message")},
    optional={
        "id": st.one_of(st.text(max_size=70), st.integers(), st.booleans()),
        "conversation_id": st.one_of(st.text(max_size=130), st.none()),
        "messages": st.one_of(st.lists(content_item, max_size=22), json_values),
        "content_type": st.just("text"),
    },
)


@settings(max_examples=200, deadline=None)
@given(data=push_like)
def test_the_quick_push_path_accepts_exactly_what_the_schema_accepts(data: dict[str, Any]) -> None:
    schema_ok = wire.validator("client.bot.message").is_valid(data)
    if wire._quick_push(data):
        assert schema_ok
    try:
        parsed = parse_frame(json.dumps(data), "bot", LIMIT)
    except FrameRefused as bad:
        assert not taken(data, schema_ok)
        assert bad.refusal.code == "invalid_frame"
    else:
        assert taken(data, schema_ok)
        assert isinstance(parsed, wire.BotPush)
        assert len(parsed.contents) == len(data["messages"])


event_ack_like = st.fixed_dictionaries(
    {"type": st.just("event_ack")},
    optional={
        "id": st.one_of(st.text(max_size=70), st.integers(), st.booleans()),
        "event_id": st.one_of(st.text(max_size=260), st.integers(), st.none()),
        "conversation_id": st.text(max_size=3),
    },
)


@settings(max_examples=200, deadline=None)
@given(data=event_ack_like)
def test_the_quick_event_ack_path_accepts_exactly_what_the_schema_accepts(
    data: dict[str, Any],
) -> None:
    schema_ok = wire.validator("client.bot.event_ack").is_valid(data)
    if wire._quick_event_ack(data):
        assert schema_ok
    try:
        parsed = parse_frame(json.dumps(data), "bot", LIMIT)
    except FrameRefused as bad:
        assert not schema_ok
        assert bad.refusal.code == "invalid_frame"
    else:
        assert schema_ok
        assert parsed == wire.EventAck(data.get("id"), data["event_id"])


seq_like = st.one_of(st.integers(-2, 3), st.floats(-1, 2), st.booleans(), st.text(max_size=2))
hello_like = st.fixed_dictionaries(
    {
        "type": st.just("hello"),
        "v": st.sampled_from([1, 1.0, True]),
        "role": st.sampled_from(["user", "agent", "bot"]),
    },
    optional={
        "id": st.one_of(st.text(max_size=70), st.integers(), st.booleans(), st.floats(0, 2)),
        "bot_id": st.one_of(st.text(max_size=130), st.none(), st.integers()),
        "metadata": json_values,
        "resume_token": st.one_of(st.text(max_size=3), st.text(min_size=1020, max_size=1030)),
        "last_seq": seq_like,
        "token": st.one_of(st.text(max_size=3), st.integers(), st.none()),
        "last_seqs": st.one_of(
            st.dictionaries(st.text(max_size=130), seq_like, max_size=3),
            st.dictionaries(st.text(min_size=1, max_size=4), st.just(0), min_size=99, max_size=102),
            json_values,
        ),
        "extra": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(data=hello_like)
def test_the_quick_hello_path_accepts_exactly_what_the_schema_accepts(
    data: dict[str, Any],
) -> None:
    role = data["role"]
    schema_ok = wire.validator(f"client.hello.{role}").is_valid(data)
    if wire._quick_hello(data, role):
        assert schema_ok
    try:
        parsed = parse_hello(json.dumps(data), LIMIT)
    except FrameRefused as bad:
        assert not taken(data, schema_ok)
        assert bad.refusal.code == "invalid_frame"
    else:
        assert taken(data, schema_ok)
        assert type(parsed).__name__.lower() == f"{role}hello"


def test_common_hellos_take_the_quick_path() -> None:
    assert wire._quick_hello({"type": "hello", "v": 1, "role": "user"}, "user")
    assert wire._quick_hello(
        {"type": "hello", "v": 1, "role": "user", "resume_token": "t", "last_seq": 3}, "user"
    )
    assert wire._quick_hello(
        {"type": "hello", "v": 1, "role": "agent", "token": "k", "last_seqs": {"c": 2}}, "agent"
    )
    assert wire._quick_hello({"type": "hello", "v": 1, "role": "bot", "token": "k"}, "bot")


# -- encoding: every server frame passes its schema -------------------------------------------


def entry(seq: int = 1, **extra: Any) -> Entry:
    return Entry(
        "conv", seq, 1700000000.5, Party.BOT, Content.text("hi"), frozenset({Party.USER}), **extra
    )


@pytest.mark.parametrize(
    "delivery",
    [
        entry(),
        entry(2, agent_id="alice", session_id="conv/1", metadata={"sign_off": True}),
        Typing("conv", Party.AGENT, "alice"),
        Typing("conv", Party.USER),
        Transcript("conv", "conv/1", "demo", "u1", {"name": "Uma"}, (entry(), entry(2))),
        DeskStatus(
            "alice",
            "Alice",
            "online",
            3,
            (HeldChat("conv", "conv/1", "demo", None),),
            (WaitingItem("c2", "demo", 1700000000.0, 1),),
        ),
        Refusal("not_waiting", "That chat is not waiting.", "conv"),
    ],
)
def test_deliveries_encode_to_valid_frames(delivery: Any) -> None:
    encoded = json.loads(wire.encode(delivery))
    assert list(wire.server_frame_errors(encoded)) == []


def test_the_desk_frame_has_every_field_of_the_view_in_order() -> None:
    """The desk frame is built field by field for speed: it must say what ``attrs.asdict``
    of the view says, key for key and in the same order."""
    status = DeskStatus(
        "alice",
        "Alice",
        "away",
        3,
        (
            HeldChat("conv", "conv/1", "demo", 1700000030.25, True, 1700000000.5),
            HeldChat("c3", "c3/2", "other", None),
        ),
        (WaitingItem("c2", "demo", 1700000000.0, 1, "Uma", "my parcel", 1700000001.5),),
        (Colleague("bob", "Bob", "online", 2), Colleague("carol", "Carol", "offline", 0)),
        {"demo": (CannedResponse("hello", "Hi!"),), "other": ()},
        grace_period=30.0,
    )
    built = wire.desk_frame(status)
    view = attrs.asdict(status)
    expected = {
        "type": "desk",
        **{key: view[key] for key in ("agent_id", "name", "presence", "capacity", "chats")},
        "queue": view["queue"],
        "colleagues": view["colleagues"],
        "canned_responses": {
            bot: [attrs.asdict(r) for r in responses]
            for bot, responses in status.canned_responses.items()
        },
        "grace_period": 30.0,
    }
    assert built == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
    assert list(wire.server_frame_errors(json.loads(built))) == []


def test_built_frames_are_valid() -> None:
    frames = [
        wire.ack_frame("c1", 3),
        wire.ack_frame(7, None),
        wire.pong_frame(None),
        wire.pong_frame("p"),
        wire.error_frame("rate_limited", "slow down", "c1", "conv", retry_after=0.25),
        wire.welcome_frame("user", conversation_id="c", resume_token="t", bot_id="demo"),
        wire.welcome_frame("agent", agent_id="alice", name="Alice"),
        wire.welcome_frame("bot", bot_id="demo"),
        wire.event_frame(
            BotEvent("c:1", "c", "demo", "u", Content.payload("LIVECHAT_SESSION_END"))
        ),
    ]
    for text in frames:
        assert list(wire.server_frame_errors(json.loads(text))) == [], text


def test_a_welcome_missing_its_fields_is_caught_by_the_schema() -> None:
    assert list(wire.server_frame_errors({"type": "welcome", "v": 1, "role": "user"}))
    assert list(wire.server_frame_errors({"type": "bogus"}))


def test_the_same_entry_is_encoded_once() -> None:
    first = entry(5)
    assert wire.encode(first) is wire.encode(first)


# -- every code the server can send is documented ---------------------------------------------


def test_error_codes_are_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(), re.MULTILINE))
    assert documented >= wire.ERROR_CODES


# -- resume tokens ----------------------------------------------------------------------------


def test_a_resume_token_round_trips() -> None:
    tokens = ResumeTokens("s3cret")
    grant = tokens.verify(tokens.issue("conv-1", "demo"))
    assert (grant.conversation_id, grant.bot_id) == ("conv-1", "demo")


def test_tampered_and_foreign_tokens_are_refused() -> None:
    tokens = ResumeTokens("s3cret")
    token = tokens.issue("conv-1", "demo")
    payload, stamp, signature = token.split(".")
    other = ResumeTokens("s3cret").issue("conv-2", "demo").split(".")[0]
    for forged in (
        f"{other}.{stamp}.{signature}",
        f"{payload}.{signature}",
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        ResumeTokens("another secret").issue("conv-1", "demo"),
        "garbage",
        "",
    ):
        with pytest.raises(InvalidToken):
            tokens.verify(forged)
    assert payload


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        ResumeTokens("")


def issued_ago(seconds: float) -> Callable[[], float]:
    """A clock standing ``seconds`` before now, to issue tokens in the past without waiting."""
    return lambda: time.time() - seconds


def test_a_fresh_token_resumes_until_its_max_age() -> None:
    tokens = ResumeTokens("s3cret", max_age=3600)
    almost = ResumeTokens("s3cret", max_age=3600, clock=issued_ago(3500))
    grant = tokens.verify(almost.issue("conv-1", "demo"))
    assert (grant.conversation_id, grant.bot_id) == ("conv-1", "demo")


def test_an_expired_token_is_refused_as_expired() -> None:
    tokens = ResumeTokens("s3cret", max_age=3600)
    old = ResumeTokens("s3cret", clock=issued_ago(3700)).issue("conv-1", "demo")
    with pytest.raises(ExpiredToken, match="expired"):
        tokens.verify(old)
    # The default is thirty days: the same token still opens the conversation there.
    assert ResumeTokens("s3cret").verify(old).conversation_id == "conv-1"
    month = ResumeTokens("s3cret", clock=issued_ago(31 * 24 * 3600)).issue("conv-1", "demo")
    with pytest.raises(ExpiredToken):
        ResumeTokens("s3cret").verify(month)


def test_a_tampered_old_token_is_invalid_not_expired() -> None:
    """Only a genuine signature is told it expired: a forgery learns nothing about age."""
    tokens = ResumeTokens("s3cret", max_age=3600)
    old = ResumeTokens("s3cret", clock=issued_ago(3700)).issue("conv-1", "demo")
    tampered = old[:-2] + ("AA" if not old.endswith("AA") else "BB")
    with pytest.raises(InvalidToken) as refused:
        tokens.verify(tampered)
    assert not isinstance(refused.value, ExpiredToken)
    foreign = ResumeTokens("other", clock=issued_ago(3700)).issue("conv-1", "demo")
    with pytest.raises(InvalidToken) as refused:
        tokens.verify(foreign)
    assert not isinstance(refused.value, ExpiredToken)


@pytest.mark.parametrize("max_age", [0, -1, math.inf, math.nan])
def test_a_max_age_must_be_positive_and_finite(max_age: float) -> None:
    with pytest.raises(ValueError, match="max age"):
        ResumeTokens("s3cret", max_age=max_age)


@pytest.mark.parametrize("after_seq", ["1.0", "1e0", "2.5"])
def test_a_seq_with_a_fraction_or_exponent_is_refused(after_seq: str) -> None:
    raw = '{"type": "replay", "id": "r1", "conversation_id": "c1", "after_seq": ' + after_seq + "}"
    with pytest.raises(wire.FrameRefused) as refused:
        wire.parse_frame(raw, "agent", 65536)
    assert refused.value.refusal.code == "invalid_frame"
