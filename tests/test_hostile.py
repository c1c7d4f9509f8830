"""Hostile input over real sockets: no frame from anyone touches anything but the sender's own
connection, and every refusal is a documented code (docs/protocol.md).

Each test runs on both WebSocket listeners (the ``listener`` fixture).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from actors import SESSION_START, BotEvent, Content, StoreUnavailable
from transport import strict
from transport.bots.csml import replies_from
from transport.bots.resilience import BotReplyInvalid
from transport.bots.webhook import messages_from
from transport.client import Frame, RequestRefused
from transport.store.sqlite import open_sqlite_store

from .support.ws import WsHarness, close_code_after, hello, running_ws_server

BIG = 2**63


def is_error(code: str) -> Any:
    return lambda f: f["type"] == "error" and f["code"] == code


# -- strings that are not Unicode -----------------------------------------------------------

SURROGATE_FRAMES = [
    '{"type":"ping","id":"\\ud800"}',
    '{"type":"message","id":"\\udfff","content_type":"text","content":{"text":"hi"}}',
    '{"type":"message","id":"m1","content_type":"text","content":{"text":"a\\ud800b"}}',
    '{"type":"message","id":"m2","content_type":"te\\udc00xt","content":{}}',
    '{"type":"message","id":"m3","content_type":"text","content":{"\\ud800":1}}',
    '{"type":"message","content_type":"text","content":{},"conversation_id":"\\ud800"}',
    '{"type":"typing","id":"\\ud800"}',
]


@pytest.mark.parametrize("raw", SURROGATE_FRAMES)
async def test_a_lone_surrogate_is_refused_and_echoed_nowhere(harness: WsHarness, raw: str) -> None:
    async with harness.user() as other, harness.user() as user:
        await user.send_raw(raw)
        answer = await user.wait_for(lambda f: f["type"] == "error")
        assert answer["code"] == "invalid_frame"
        assert "valid Unicode" in answer["message"]
        assert answer.get("id") in (None, "m1", "m2", "m3")
        assert "conversation_id" not in answer or not answer["conversation_id"].startswith("\\")
        # The server is up, the connection keeps working, the bystander too.
        await user.ping()
        assert await user.say_text("after") == 1
        assert await other.say_text("unaffected") == 1


async def test_a_lone_surrogate_in_the_hello_closes_with_4400_not_4503(
    listener: str, tmp_path: Path
) -> None:
    async with (
        open_sqlite_store(tmp_path / "s.db") as store,
        running_ws_server(listener=listener, store=store) as h,
        h.user() as bystander,
    ):
        bad_hellos = [
            '{"type":"hello","v":1,"role":"user","metadata":{"name":"\\ud800"}}',
            '{"type":"hello","v":1,"role":"user","metadata":{"\\udbff":"x"}}',
            '{"type":"hello","v":1,"role":"user","bot_id":"\\ud800"}',
            '{"type":"hello","v":1,"role":"user","resume_token":"\\ud800"}',
            '{"type":"hello","v":1,"role":"agent","token":"\\ud800"}',
            '{"type":"hello","v":1,"role":"user","id":"\\ud800"}',
        ]
        for raw in bad_hellos:
            assert await close_code_after(h.url, raw) == 4400, raw
        assert await bystander.say_text("stored") == 1


async def test_a_frame_that_cannot_be_encoded_closes_only_its_own_connection(
    harness: WsHarness,
) -> None:
    # Should text that is not Unicode ever reach a delivery (here from an in-process bot,
    # which no edge checks), encoding it fails for the connections it is for, and for them
    # only: the writer every connection shares carries on.
    bot = harness.bot
    ordinary = bot.on_event

    async def on_event(event: BotEvent) -> Sequence[Content]:
        if event.content.text_value == "poison":
            return [Content.text("\ud800")]
        return await ordinary(event)

    bot.on_event = on_event  # type: ignore[method-assign]
    async with harness.user() as other, harness.user() as victim:
        await victim.say_text("poison")
        assert await victim.wait_closed() == 1011
        assert await other.say_text("unaffected") == 1
        await other.wait_for(lambda f: f.get("content", {}).get("text") == "echo: unaffected")
        async with harness.user() as later:
            assert await later.say_text("still serving") == 1


# -- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ('{"type":"message","content_type":"text","content":{"n":1e400}}', "invalid_frame"),
        ('{"type":"message","content_type":"text","content":{"n":-1e400}}', "invalid_frame"),
        ('{"type":"message","content_type":"text","content":{"n":NaN}}', "bad_json"),
        ('{"type":"message","content_type":"text","content":{"n":Infinity}}', "bad_json"),
        ('{"type":"ping","id":9007199254740992}', "invalid_frame"),
        ('{"type":"ping","id":-9007199254740992}', "invalid_frame"),
        ('{"type":"ping","id":' + "9" * 5000 + "}", "invalid_frame"),
        (
            '{"type":"message","content_type":"text","content":{"n":[' + "1," * 3 + "1e999]}}",
            "invalid_frame",
        ),
    ],
)
async def test_numbers_clients_cannot_represent_are_refused(
    harness: WsHarness, raw: str, code: str
) -> None:
    async with harness.user() as user:
        await user.send_raw(raw)
        answer = await user.wait_for(lambda f: f["type"] == "error")
        assert answer["code"] == code
        assert await user.say_text("after") == 1
        # Nothing was stored, so nothing non-strict can come back.
        assert await harness.services.board.store.entries_after(user.conversation_id, 0)


async def test_the_largest_safe_integer_is_taken(harness: WsHarness) -> None:
    async with harness.user() as user:
        pong = await user.request({"type": "ping", "id": 2**53 - 1})
        assert pong["id"] == 2**53 - 1


async def test_huge_sequence_numbers_are_refused_with_documented_codes(
    harness: WsHarness,
) -> None:
    async with harness.user() as user:
        token = user.resume_token
    assert (
        await close_code_after(harness.url, hello(role="user", resume_token=token, last_seq=BIG))
        == 4400
    )
    big_seqs = hello(role="agent", token="alice-token", last_seqs={"c": BIG})
    assert await close_code_after(harness.url, big_seqs) == 4400
    assert (
        await close_code_after(harness.url, hello(role="user", metadata={"n": float("inf")}))
        == 4400
    )
    async with harness.agent("alice") as alice:
        await alice.send_raw(
            json.dumps({"type": "replay", "id": "r", "conversation_id": "c", "after_seq": BIG})
        )
        answer = await alice.wait_for(lambda f: f["type"] == "error")
        assert answer["code"] == "invalid_frame"
        await alice.replay("c", 2**53 - 1)  # the largest is fine (and finds nothing)


# -- only the system speaks as the system ---------------------------------------------------


async def test_nobody_but_the_system_sends_notices(harness: WsHarness) -> None:
    async with harness.user() as user, harness.agent("alice") as alice:
        with pytest.raises(RequestRefused) as refused:
            await user.say("notice", {"code": "session_ended", "reason": "user_ended"})
        assert refused.value.code == "invalid_frame"
        assert "reserved" in refused.value.frame["message"]

        await alice.set_presence("online")
        await user.click(SESSION_START)
        await user.wait_for(lambda f: f.get("content", {}).get("code") == "agent_joined")
        conv = user.conversation_id
        with pytest.raises(RequestRefused) as refused:
            await alice.request(
                {
                    "type": "message",
                    "conversation_id": conv,
                    "content_type": "notice",
                    "content": {"code": "session_ended"},
                }
            )
        assert refused.value.code == "invalid_frame"
        assert refused.value.frame["conversation_id"] == conv

    async with harness.user(bot_id="relay") as user, harness.connected_bot("relay") as bot:
        with pytest.raises(RequestRefused) as refused:
            await bot.push(
                user.conversation_id,
                [
                    {"content_type": "text", "content": {"text": "fine"}},
                    {"content_type": "notice", "content": {"code": "session_started"}},
                ],
            )
        assert refused.value.code == "invalid_frame"
        assert await bot.push_text(user.conversation_id, "a bot's words") is not None


# -- claims ---------------------------------------------------------------------------------


async def test_two_claims_of_one_chat_each_get_their_own_answer(harness: WsHarness) -> None:
    async with harness.user() as user, harness.agent("alice") as alice:
        conv = user.conversation_id  # not waiting: every claim is refused
        await alice.send_frame({"type": "claim", "id": "k1", "conversation_id": conv})
        await alice.send_frame({"type": "claim", "id": "k2", "conversation_id": conv})
        answers: dict[str, Frame] = {}
        while len(answers) < 2:
            frame = await alice.wait_for(lambda f: f["type"] == "error")
            assert frame["id"] not in answers, frame
            answers[frame["id"]] = frame
        assert answers["k1"]["code"] == "not_waiting"
        assert answers["k2"]["code"] in ("not_waiting", "cannot_claim")
        assert {f["conversation_id"] for f in answers.values()} == {conv}
        # Once both are answered, a third claim goes to the desk again.
        await alice.send_frame({"type": "claim", "id": "k3", "conversation_id": conv})
        third = await alice.wait_for(lambda f: f["type"] == "error")
        assert (third["id"], third["code"]) == ("k3", "not_waiting")


# -- bots' answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages":[{"content_type":"notice","content":{"code":"session_ended"}}]}',
        b'{"messages":[{"content_type":"text","content":{"text":"\\ud800"}}]}',
        b'{"messages":[{"content_type":"text","content":{"n":NaN}}]}',
        b'{"messages":[{"content_type":"text","content":{"n":1e400}}]}',
        b'{"messages":[{"content_type":"","content":{}}]}',
        b'{"messages":[{"content_type":"text","content":' + b"[" * 40 + b"]" * 40 + b"}]}",
        b'{"messages":[{"content_type":"text","content":' + b"[" * 5000 + b"]" * 5000 + b"}]}",
    ],
)
def test_a_bad_webhook_or_csml_answer_is_a_failed_call(raw: bytes) -> None:
    with pytest.raises(BotReplyInvalid):
        messages_from(raw)
    engine_answer = raw.replace(b'{"content_type"', b'{"payload":{"content_type"').replace(
        b"}]}", b"}}]}"
    )
    with pytest.raises(BotReplyInvalid):
        try:
            data = strict.loads(engine_answer)
        except ValueError as exc:
            raise BotReplyInvalid(str(exc)) from None
        replies_from(data)


def test_good_bot_answers_still_pass() -> None:
    assert messages_from(b'{"messages":[{"content_type":"text","content":{"text":"hi"}}]}') == [
        Content.text("hi")
    ]
    answer = {"messages": [{"payload": {"content_type": "text", "content": {"text": "hi"}}}]}
    assert replies_from(answer) == ([Content.text("hi")], False)


# -- invalid UTF-8 --------------------------------------------------------------------------


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def _server_frame(data: bytes) -> tuple[int, bytes, bytes] | None:
    """The first whole (unmasked) server frame of ``data``: opcode, payload, the rest."""
    if len(data) < 2:
        return None
    size, start = data[1] & 0x7F, 2
    if size == 126:
        if len(data) < 4:
            return None
        size, start = int.from_bytes(data[2:4], "big"), 4
    assert size < 65536
    if len(data) < start + size:
        return None
    return data[0] & 0x0F, data[start : start + size], data[start + size :]


async def _close_code_of_raw(url: str, *frames: bytes) -> int | None:
    """Send hand-made WebSocket frames (the client libraries only send valid UTF-8) and
    return the close code the server answers with (``None``: it closed the TCP connection
    without a close frame)."""
    port = int(url.rsplit(":", 1)[1].strip("/"))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some()
            assert data.startswith(b"HTTP/1.1 101"), data
            data = data.split(b"\r\n\r\n", 1)[1]
            for frame in frames:
                await stream.send_all(frame)
            while True:
                # Skip whole server frames (a welcome, errors) up to the close.
                while (frame := _server_frame(data)) is not None:
                    opcode, payload, data = frame
                    if opcode == 0x8:
                        return int.from_bytes(payload[:2], "big")
                chunk = await stream.receive_some()
                if not chunk:
                    return None
                data += chunk


async def test_invalid_utf8_closes_with_1007_before_and_after_hello(harness: WsHarness) -> None:
    # trio-websocket (wsproto) ends the TCP connection without sending its close frame.
    expected = {1007} if harness.listener == "fast" else {1007, None}
    bad = _masked(0x1, b'{"type":"ping","id":"\xff"}')
    assert await _close_code_of_raw(harness.url, bad) in expected
    user_hello = _masked(0x1, b'{"type":"hello","v":1,"role":"user"}')
    assert await _close_code_of_raw(harness.url, user_hello, bad) in expected
    async with harness.user() as bystander:
        assert await bystander.say_text("unaffected") == 1


# -- replays ----------------------------------------------------------------------------------


async def test_a_replay_reads_only_the_agents_own_entries_a_page_at_a_time(
    listener: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An agent may name any conversation in a replay: one it never held, with a long history,
    # must not cost the server that whole history. Pages of 2 here, to see the paging work.
    import transport.protocol.peer as peers

    monkeypatch.setattr(peers, "CATCH_UP_PAGE", 2)
    async with (
        open_sqlite_store(tmp_path / "s.db") as store,
        running_ws_server(listener=listener, store=store) as h,
    ):
        read: list[tuple[int, int, str | None]] = []
        paged = store.entries_page

        async def counting(
            conversation_id: str, after_seq: int, limit: int, agent_id: str | None = None
        ) -> list[Any]:
            entries = await paged(conversation_id, after_seq, limit, agent_id)
            read.append((after_seq, len(entries), agent_id))
            return entries

        async def whole(conversation_id: str, after_seq: int) -> list[Any]:
            raise AssertionError("a catch-up reads the whole history at once")

        monkeypatch.setattr(store, "entries_page", counting)
        monkeypatch.setattr(store, "entries_after", whole)
        async with h.user() as user, h.agent("alice") as alice, h.agent("bob") as bob:
            for n in range(5):
                await user.say_text(f"before {n}")
            await alice.set_presence("online")
            await user.click(SESSION_START)
            await user.wait_for(lambda f: f.get("content", {}).get("code") == "agent_joined")
            conv = user.conversation_id
            said = [await alice.say(conv, f"alice {n}") for n in range(3)]
            alice.take_all()
            read.clear()
            await alice.replay(conv, 0)
            replayed = [f["seq"] for f in alice.take_all() if f["type"] == "entry"]
            assert set(said) <= set(replayed)
            assert all(agent == "alice" for _, _, agent in read)
            assert len(read) >= 2  # paged

            read.clear()
            await bob.replay(conv, 0)
            assert not [f for f in bob.take_all() if f["type"] == "entry"]
            assert read == [(0, 0, "bob")]  # bob's rows: none, and nothing else was read

        # A returning user still gets everything after its last_seq, across pages.
        async with h.user(resume_token=user.resume_token, last_seq=3) as back:
            await back.say_text("back")
            seqs = [f["seq"] for f in back.take_all() if f["type"] == "entry"]
            assert seqs[:3] == [4, 5, 6] and seqs == sorted(seqs)


def test_a_close_reason_that_is_not_unicode_is_still_sent() -> None:
    from transport.servers.websocket import _close_reason

    assert _close_reason("unknown bot '\ud800'") == "unknown bot '?'"
    assert len(_close_reason("é" * 200).encode()) <= 123


async def test_a_store_that_cannot_be_read_refuses_the_frame_not_the_connection(
    harness: WsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = harness.services.board.store

    async def unreadable(*args: object) -> Any:
        raise StoreUnavailable("the disk is gone")

    monkeypatch.setattr(store, "entries_after", unreadable)
    monkeypatch.setattr(store, "load", unreadable)
    async with (
        harness.user() as user,
        harness.agent("alice") as alice,
        harness.connected_bot("relay") as bot,
    ):
        with pytest.raises(RequestRefused) as refused:
            await alice.replay(user.conversation_id, 0)
        assert refused.value.code == "store_unavailable"
        assert "disk" not in refused.value.frame["message"]
        await alice.ping()
        with pytest.raises(RequestRefused) as refused:
            await bot.push_text(user.conversation_id, "hello")
        assert refused.value.code == "store_unavailable"
        await bot.ping()


async def test_a_resume_that_missed_nothing_does_not_read_the_store(
    harness: WsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness.user() as user:
        assert await user.say_text("before") == 1
        await user.wait_for(lambda f: f.get("type") == "entry" and f["sender"] == "bot")
        token, last_seq = user.resume_token, user.last_seq
    store = harness.services.board.store
    reads: list[str] = []

    async def unreadable(*args: object) -> Any:
        reads.append("read")
        raise StoreUnavailable("the disk is gone")

    for read in ("entries_after", "entries_page", "load"):
        monkeypatch.setattr(store, read, unreadable, raising=False)
    async with open_websocket_url(harness.url) as ws:
        await ws.send_message(hello(role="user", resume_token=token, last_seq=last_seq))
        with trio.fail_after(5):
            welcome = json.loads(await ws.get_message())
    assert welcome["type"] == "welcome" and not reads


async def test_a_store_that_cannot_be_read_at_hello_closes_with_4503(
    harness: WsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness.user() as user:
        token = user.resume_token
        # Something to catch up on: a resume that missed nothing reads nothing.
        assert await user.say_text("before") == 1
    store = harness.services.board.store

    async def unreadable(*args: object) -> Any:
        raise StoreUnavailable("the disk is gone")

    monkeypatch.setattr(store, "entries_after", unreadable)
    monkeypatch.setattr(store, "load", unreadable)
    resume = hello(role="user", resume_token=token, last_seq=0)
    assert await close_code_after(harness.url, resume) == 4503
    seqs = hello(role="agent", token="alice-token", last_seqs={"c": 0})
    assert await close_code_after(harness.url, seqs) == 4503
