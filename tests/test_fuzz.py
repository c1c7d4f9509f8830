"""Property-based fuzzing of the WebSocket protocol over real sockets on 127.0.0.1.

Hypothesis builds adversarial frames of every family each role may send (and some no role
may), with hostile strings (lone surrogates, control characters, long text), numbers (beyond
±(2^53 - 1), ``1e400``, ``NaN``), nesting and sizes, and sends them to a real server from a
user, an agent or a connected bot. Beside it a control conversation talks to the bot all
along and a bystander waits. Whatever is sent:

* the server stays up, and the attacker's own connection still answers a ping;
* every answer the attacker gets is a frame its schema allows, and every error carries a
  documented code that blames the input (never ``internal_error`` or ``store_unavailable``);
* the control conversation gets every message acknowledged and echoed, in order;
* the bystander receives nothing at all;
* a hostile hello is closed with a documented code (4400, 4401 or 4404), or welcomed.

bench/fuzz.py runs the same generators for 100,000 frames and more.
"""

from __future__ import annotations

import json
import math
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from actors import SESSION_END, SESSION_START
from transport.protocol import frames as wire
from transport.protocol.limits import Limits
from transport.servers.websocket import LISTENERS

from .support.ws import AGENT_TOKENS, BOT_TOKENS, WsHarness, running_ws_server

#: What hostile input may earn: errors that blame the input, never the server.
INPUT_ERRORS = wire.ERROR_CODES - {"internal_error", "conversation_failed", "store_unavailable"}
HELLO_CLOSES = {4400, 4401, 4404}
LIMITS = Limits(max_frame_bytes=4096, rate=10_000.0, burst=10_000)

# -- strategies -----------------------------------------------------------------------------

# Text a hostile client sends: lone surrogates, controls, protocol words, very long runs.
hostile_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "\ud800",
            "a\udfffb",
            "\udbff\udc00",  # a valid pair, written as two escapes
            "\x00",
            "\u202e",
            "notice",
            SESSION_START,
            SESSION_END,
            "LIVECHAT_SESSION_EXPIRED",
            "flood 3 10",
            "",
        ]
    ),
    st.integers(0, 5000).map(lambda n: "x" * n),
)
# Numbers: in and out of what clients can represent. Placeholders become raw JSON text.
RAW_NUMBERS = {"@1e400@": "1e400", "@-1e400@": "-1e400", "@NaN@": "NaN", "@Inf@": "Infinity"}
hostile_number = st.one_of(
    st.integers(),
    st.sampled_from([2**53 - 1, 2**53, -(2**53), 2**63, 2**64, -1, 0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(list(RAW_NUMBERS)),
)
scalar = st.one_of(st.none(), st.booleans(), hostile_text, hostile_number)


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


json_value = st.one_of(
    st.recursive(
        scalar,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3)
        ),
        max_leaves=6,
    ),
    st.builds(nested, st.integers(25, 40), scalar),
)
content_type = st.one_of(
    st.sampled_from(["text", "payload", "question", "notice", "", "x" * 65]), hostile_text
)
frame_id = st.one_of(hostile_text.filter(lambda t: len(t) <= 70), hostile_number, st.none())
seq = st.one_of(st.integers(-5, 10), hostile_number)


def content_for(kind: str) -> Any:
    good = {
        "text": st.builds(lambda t: {"text": t}, hostile_text),
        "payload": st.sampled_from([{"payload": SESSION_START}, {"payload": SESSION_END}]),
    }
    return st.one_of(good.get(kind, st.just({})), json_value)


def frames_of(kind: str, **fields: Any) -> Any:
    """A frame of ``type`` ``kind``: the fields given, each maybe left out or replaced."""
    optional = {"id": frame_id, "extra": json_value}
    return st.fixed_dictionaries({"type": st.just(kind)}, optional={**fields, **optional})


def message_items() -> Any:
    return st.lists(
        st.fixed_dictionaries(
            {"content_type": content_type, "content": content_for("text")},
            optional={"x": json_value},
        ),
        max_size=22,
    )


def role_frames(role: str, own: str) -> Any:
    """Every frame family a ``role`` may send, aimed at its own conversation, at the control
    conversation (``@control@``) or at nothing."""
    target = st.sampled_from([own, "@control@", "no-such-chat", ""]) | hostile_text
    say = frames_of(
        "message", conversation_id=target, content_type=content_type, content=json_value
    )
    common = [frames_of("ping"), frames_of("hello", v=seq, role=hostile_text), frames_of("dance")]
    families = {
        "user": [say, frames_of("typing", conversation_id=target)],
        "agent": [
            say,
            frames_of("typing", conversation_id=target),
            frames_of("presence", status=st.sampled_from(["online", "away", "offline", "gone"])),
            frames_of("sign_off", conversation_id=target),
            frames_of("transfer", conversation_id=target, to_agent=st.none() | hostile_text),
            frames_of("claim", conversation_id=target),
            frames_of("replay", conversation_id=target, after_seq=seq),
        ],
        "bot": [frames_of("message", conversation_id=target, messages=message_items())],
    }
    return st.one_of(*families[role], *common)


def encode(frame: Any, control: str) -> str:
    """The frame's text, with the control conversation's id and raw numbers put in."""
    text = json.dumps(frame)  # surrogates become \\ud800 escapes, as a hostile client sends
    text = text.replace('"@control@"', json.dumps(control))
    for placeholder, raw in RAW_NUMBERS.items():
        text = text.replace(f'"{placeholder}"', raw)
    return text


hostile_hello = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("hello"), "v": st.just(1), "role": st.just("user")},
        optional={
            "bot_id": st.sampled_from(["demo", "relay"]) | hostile_text,
            "metadata": json_value,
            "resume_token": hostile_text,
            "last_seq": seq,
            "id": frame_id,
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("hello"), "v": st.just(1), "role": st.sampled_from(["agent", "bot"])},
        optional={
            "token": st.sampled_from([*AGENT_TOKENS, *BOT_TOKENS]) | hostile_text,
            "last_seqs": st.dictionaries(hostile_text, seq, max_size=3),
            "id": frame_id,
        },
    ),
    json_value,
)


# -- the property ---------------------------------------------------------------------------


async def hello_close_code(url: str, raw: str) -> int | None:
    """The close code a hostile hello gets; ``None`` when it was welcomed."""
    async with open_websocket_url(url) as ws:
        await ws.send_message(raw)
        try:
            with trio.fail_after(5):
                first = json.loads(await ws.get_message())
            assert first["type"] == "welcome", first
            return None
        except ConnectionClosed as closed:
            return closed.reason.code if closed.reason else None


def attacker(harness: WsHarness, role: str) -> Any:
    opened = {"user": harness.user, "agent": harness.agent, "bot": harness.connected_bot}
    return opened[role]()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    role=st.sampled_from(["user", "agent", "bot"]),
    listener=st.sampled_from(LISTENERS),
    data=st.data(),
)
async def test_hostile_frames_touch_nothing_but_their_sender(
    role: str, listener: str, data: st.DataObject
) -> None:
    with trio.fail_after(30):
        async with (
            running_ws_server(limits=LIMITS, listener=listener) as harness,
            harness.user() as bystander,
            harness.user() as control,
            attacker(harness, role) as client,
        ):
            own = getattr(client, "conversation_id", "")
            frames = data.draw(st.lists(role_frames(role, own), min_size=1, max_size=12))
            bystander.take_all()
            seqs: list[int] = []
            for number, frame in enumerate(frames):
                await client.send_raw(encode(frame, control.conversation_id))
                seq_of = await control.say_text(f"control {number}")
                assert seq_of is not None
                seqs.append(seq_of)
            await client.ping()  # it handled all of it, and still answers
            assert not client.closed
            for frame in client.take_all():
                if frame["type"] == "error":
                    assert frame["code"] in INPUT_ERRORS, frame
            # The control conversation: every message acknowledged in order, every echo too.
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            echoes: list[str] = []
            while len(echoes) < len(frames):
                entry = await control.wait_for(
                    lambda f: f["type"] == "entry" and f["sender"] == "bot"
                )
                echoes.append(entry["content"]["text"])
            assert echoes == [f"echo: control {n}" for n in range(len(frames))]
            assert not [f for f in control.take_all() if f["type"] == "error"]
            assert bystander.take_all() == []

            hello = data.draw(hostile_hello)
            code = await hello_close_code(harness.url, encode(hello, control.conversation_id))
            assert code is None or code in HELLO_CLOSES, (code, hello)
            # Still serving.
            async with harness.user() as after:
                assert await after.say_text("after") == 1


def test_raw_numbers_are_what_they_say() -> None:
    assert math.isinf(json.loads(encode({"n": "@1e400@"}, "c"))["n"])
