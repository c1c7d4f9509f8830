"""The WebSocket server over real sockets on 127.0.0.1, with the core running in-process.

Every frame a client made by the harness receives is validated against the protocol's JSON
Schemas (tests/support/ws.py), so each test also checks what the server sends. The tests run
on both listener implementations (the ``listener`` fixture), so both stay honest.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, wrap_client_stream

from actors import SESSION_END, SESSION_START, BotSettings, MemoryStore, StoreUnavailable
from actors.model.records import Entry
from actors.model.state import ConversationState
from transport.client import Closed, Frame, RequestRefused, UserClient, connect_user
from transport.protocol import frames as wire
from transport.protocol import peer as peer_module
from transport.protocol.limits import Limits
from transport.protocol.tokens import ResumeTokens
from transport.servers.websocket import LISTENERS, serve_websockets
from transport.store.sqlite import open_sqlite_store

from .support.ws import (
    WsHarness,
    check_frame,
    close_code_after,
    hello,
    running_ws_server,
)

Predicate = Callable[[Frame], bool]


def text_entry(text: str) -> Predicate:
    return lambda f: f["type"] == "entry" and f["content"].get("text") == text


def notice(code: str) -> Predicate:
    return lambda f: (
        f["type"] == "entry" and f["content_type"] == "notice" and f["content"]["code"] == code
    )


def error(code: str) -> Predicate:
    return lambda f: f["type"] == "error" and f["code"] == code


async def hand_to_alice(harness: WsHarness, user: UserClient) -> Any:
    """Open a session for ``user`` and have alice pick it up; returns alice's client context."""
    await user.click(SESSION_START)
    await user.wait_for(lambda f: f["type"] == "queue")
    return harness.agent("alice")


# -- a whole session ------------------------------------------------------------------------


async def test_a_whole_session_over_sockets(harness: WsHarness) -> None:
    async with harness.user(bot_id="demo", metadata={"name": "Uma"}) as user:
        assert user.welcome["bot_id"] == "demo"
        seq = await user.say_text("hello")
        assert seq == 1
        await user.wait_for(text_entry("echo: hello"))

        await user.click(SESSION_START)
        await user.wait_for(notice("session_started"))
        assert (await user.wait_for(lambda f: f["type"] == "queue"))["position"] == 1
        await user.say_text("anyone there?")

        async with harness.agent("alice") as alice:
            desk = await alice.wait_for(lambda f: f["type"] == "desk")
            assert desk["presence"] == "offline"
            await alice.set_presence("online")
            transcript = await alice.wait_for(lambda f: f["type"] == "transcript")
            assert transcript["user_metadata"] == {"name": "Uma"}
            assert "anyone there?" in [e["content"].get("text") for e in transcript["entries"]]
            conv = transcript["conversation_id"]
            assert conv == user.conversation_id
            joined = await user.wait_for(notice("agent_joined"))
            assert joined["content"]["name"] == "Alice"

            await alice.typing(conv)
            typing = await user.wait_for(lambda f: f["type"] == "typing")
            assert (typing["party"], typing["agent_id"]) == ("agent", "alice")
            await user.typing()
            assert (await alice.wait_for(lambda f: f["type"] == "typing"))["party"] == "user"

            said = await alice.say(conv, "Hi, Alice here")
            entry = await user.wait_for(text_entry("Hi, Alice here"))
            assert (entry["seq"], entry["sender"], entry["agent_id"]) == (said, "agent", "alice")
            await user.say_text("my order is late")
            await alice.wait_for(text_entry("my order is late"))

            await alice.sign_off(conv)
            offer = await user.wait_for(lambda f: f.get("metadata", {}).get("sign_off") is True)
            button = offer["content"]["buttons"][0]["content"]
            assert button["payload"] == SESSION_END
            await user.say_text("wait, one more thing")  # the session goes on
            await alice.wait_for(text_entry("wait, one more thing"))

            await user.click(button["payload"])
            await user.wait_for(notice("session_ended"))
            await alice.wait_for(notice("session_ended"))
            await user.wait_for(text_entry("Welcome back! How else can I help?"))

    texts = [e.content.text_value for e in harness.bot.events]
    assert "anyone there?" not in texts and "my order is late" not in texts
    # The empty dict every user's peer shares until a hello of another role stays empty.
    assert not peer_module._NONE_YET


# -- resume ---------------------------------------------------------------------------------


async def test_a_reconnect_with_last_seq_misses_nothing(harness: WsHarness) -> None:
    async with harness.agent("alice") as alice:
        await alice.set_presence("online")
        async with harness.user() as user:
            await user.click(SESSION_START)
            await user.wait_for(notice("agent_joined"))
            await user.say_text("before I leave")
            await alice.wait_for(text_entry("before I leave"))
            conv, token, seen = user.conversation_id, user.resume_token, user.last_seq
        # The user is away: the agent goes on writing.
        missed = [await alice.say(conv, f"while away {i}") for i in range(5)]
        async with harness.user(resume_token=token, last_seq=seen) as back:
            assert back.welcome["conversation_id"] == conv
            replayed = [await back.next_frame() for _ in missed]
            assert [f["seq"] for f in replayed] == missed
            assert [f["content"]["text"] for f in replayed] == [f"while away {i}" for i in range(5)]
            assert missed[0] == seen + 1
            live = await alice.say(conv, "and now live")
            assert (await back.next_frame())["seq"] == live
            assert back.last_seq == live


async def test_a_resume_without_last_seq_replays_everything(harness: WsHarness) -> None:
    async with harness.user() as user:
        await user.say_text("one")
        await user.wait_for(text_entry("echo: one"))
        token = user.resume_token
    async with harness.user(resume_token=token) as back:
        first, second = await back.next_frame(), await back.next_frame()
        assert [first["seq"], second["seq"]] == [1, 2]


async def test_a_silent_connected_users_conversation_leaves_memory_and_comes_back(
    listener: str,
) -> None:
    """Two connections of a user who says nothing: the conversation leaves memory anyway;
    when the user writes again, the other connection gets the message and both the answer,
    in order, once, and the writer not its own message back."""
    async with running_ws_server(listener=listener, hibernate_after=0.2) as harness:
        board = harness.services.board
        async with harness.user() as phone:
            assert await phone.say_text("one") == 1
            assert (await phone.next_frame())["seq"] == 2
            async with harness.user(resume_token=phone.resume_token, last_seq=2) as laptop:
                conv = phone.conversation_id
                with trio.fail_after(5):
                    # Leaving memory raises no event to wait on: look until it has happened.
                    while board.is_in_memory(conv):  # noqa: ASYNC110
                        await trio.sleep(0.05)
                assert board.dormant_conversations == 1
                assert await phone.say_text("two") == 3
                mine, answer = await laptop.next_frame(), await laptop.next_frame()
                assert (mine["seq"], mine["content"]["text"]) == (3, "two")
                assert (answer["seq"], answer["content"]["text"]) == (4, "echo: two")
                answer = await phone.next_frame()
                assert (answer["seq"], answer["content"]["text"]) == (4, "echo: two")
                assert phone.take_all() == [] and laptop.take_all() == []


async def test_an_agent_catches_up_on_what_it_missed(harness: WsHarness) -> None:
    async with harness.user() as user:
        async with harness.agent("alice") as alice:
            await alice.set_presence("online")
            await user.click(SESSION_START)
            transcript = await alice.wait_for(lambda f: f["type"] == "transcript")
            conv = transcript["conversation_id"]
            seen = max(e["seq"] for e in transcript["entries"])
        # Alice is away (her chat is kept for the grace period); the user writes on.
        missed = [await user.say_text(f"are you there {i}?") for i in range(3)]
        async with harness.agent("alice", last_seqs={conv: seen}) as back:
            replayed = [await back.wait_for(lambda f: f["type"] == "entry") for _ in missed]
            assert [f["seq"] for f in replayed] == missed
            # An explicit replay sends only Alice's entries, then its ack.
            await back.send_frame(
                {"type": "replay", "id": "r1", "conversation_id": conv, "after_seq": 0}
            )
            frames: list[Frame] = []
            while not frames or frames[-1]["type"] != "ack":
                frames.append(await back.next_frame())
            entries = [f for f in frames if f["type"] == "entry"]
            assert frames[-1]["id"] == "r1"
            assert [f["seq"] for f in entries][-3:] == missed
            assert all(f.get("agent_id") == "alice" for f in entries)


# -- hello failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("this is not json", 4400),
        (b"\x00\x01", 4400),
        ('{"type":"message","content_type":"text","content":{}}', 4400),
        (json.dumps({"type": "hello", "v": 2, "role": "user"}), 4400),
        (hello(role="user", bot_id="no-such-bot"), 4404),
        (hello(role="user", resume_token="forged.token"), 4401),
        (hello(role="user", resume_token=ResumeTokens("other").issue("c", "demo")), 4401),
        (hello(role="user", resume_token=ResumeTokens("test-secret").issue("gone", "demo")), 4404),
        (hello(role="agent", token="wrong"), 4401),
        (hello(role="bot", token="wrong"), 4401),
    ],
)
async def test_hello_failures_close_with_their_code(
    harness: WsHarness, first: str | bytes, code: int
) -> None:
    assert await close_code_after(harness.url, first) == code
    async with harness.user() as user:  # the server still serves
        assert await user.say_text("still here") == 1


async def test_no_hello_in_time_closes_with_4400(listener: str) -> None:
    async with running_ws_server(limits=Limits(hello_timeout=0.2), listener=listener) as harness:
        assert await close_code_after(harness.url) == 4400


async def test_an_expired_resume_token_is_refused_and_a_fresh_one_resumes(
    harness: WsHarness,
) -> None:
    async with harness.user() as user:
        await user.say_text("before the month is out")
        conv = user.conversation_id
    month = 30 * 24 * 3600
    signed_by = partial(ResumeTokens, "test-secret")  # the harness server's secret
    old = signed_by(clock=lambda: time.time() - month - 60).issue(conv, "demo")
    recent = signed_by(clock=lambda: time.time() - month + 60).issue(conv, "demo")
    with pytest.raises(Closed) as refused:
        async with harness.user(resume_token=old):
            pass
    assert (refused.value.code, refused.value.reason) == (4401, "the resume token has expired")
    tampered = recent[:-2] + ("AA" if not recent.endswith("AA") else "BB")
    with pytest.raises(Closed) as refused:
        async with harness.user(resume_token=tampered):
            pass
    assert (refused.value.code, refused.value.reason) == (4401, "the resume token is not valid")
    async with harness.user(resume_token=recent) as back:
        assert back.welcome["conversation_id"] == conv
        assert back.resume_token != recent  # a fresh token, whose clock starts now
        assert (await back.next_frame())["content"]["text"] == "before the month is out"


async def test_the_client_reports_a_refused_hello(harness: WsHarness) -> None:
    with pytest.raises(Closed) as refused:
        async with connect_user(harness.url, resume_token="forged"):
            pass
    assert refused.value.code == 4401


# -- bad input after hello ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{nope", "bad_json"),
        ("42", "bad_json"),
        (b'{"type":"ping"}', "binary_frame"),
        (
            '{"type":"message","content_type":"text","content":{"text":"' + "x" * 5000 + '"}}',
            "frame_too_large",
        ),
        ('{"type":"dance"}', "unknown_type"),
        ('{"type":"claim","conversation_id":"x"}', "unknown_type"),
        ('{"type":"message","id":"m1","content_type":"text"}', "invalid_frame"),
        (
            '{"type":"message","content_type":"text","content":{},"conversation_id":"theirs"}',
            "forbidden",
        ),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_keeps_working(
    raw: str | bytes, code: str, listener: str
) -> None:
    limits = Limits(max_frame_bytes=4096, rate=1000, burst=1000)
    async with (
        running_ws_server(limits=limits, listener=listener) as h,
        h.user() as other,
        h.user() as user,
    ):
        await user.send_raw(raw)
        answer = await user.next_frame()
        assert answer["type"] == "error"
        assert answer["code"] == code
        assert answer["message"]
        await user.ping()
        assert await user.say_text("after the bad frame") == 1
        assert await other.say_text("unaffected") == 1
        await other.wait_for(text_entry("echo: unaffected"))


async def test_invalid_frames_say_where_and_carry_the_id(harness: WsHarness) -> None:
    async with harness.user() as user:
        with pytest.raises(RequestRefused) as refused:
            await user.request({"type": "message", "content_type": "", "content": {}})
        assert refused.value.code == "invalid_frame"
        assert "content_type" in refused.value.frame["message"]


async def test_a_frame_beyond_the_hard_ceiling_closes_with_1009(harness: WsHarness) -> None:
    async with harness.user() as user:
        with contextlib.suppress(ConnectionClosed):  # closed while it was still sending
            await user.send_raw("x" * (2 << 20))
        assert await user.wait_closed() == 1009


async def test_an_agent_may_only_touch_the_chats_it_holds(harness: WsHarness) -> None:
    async with harness.user() as user, harness.agent("alice") as alice, harness.agent("bob") as bob:
        conv = user.conversation_id
        for attempt in (
            {
                "type": "message",
                "id": "a1",
                "conversation_id": conv,
                "content_type": "text",
                "content": {"text": "hi"},
            },
            {"type": "sign_off", "id": "a2", "conversation_id": conv},
            {"type": "end", "id": "a6", "conversation_id": conv},
            {"type": "transfer", "id": "a3", "conversation_id": conv, "to_agent": None},
            {"type": "typing", "id": "a4", "conversation_id": conv},
            {
                "type": "message",
                "id": "a5",
                "conversation_id": "no-such-chat",
                "content_type": "text",
                "content": {},
            },
        ):
            with pytest.raises(RequestRefused) as refused:
                await alice.request(attempt)
            assert refused.value.code == "not_assigned"
            assert refused.value.frame["id"] == attempt["id"]

        # A chat that is not waiting cannot be claimed; the desk's refusal carries the id.
        await alice.send_frame({"type": "claim", "id": "k1", "conversation_id": conv})
        assert (await alice.wait_for(lambda f: f["type"] == "ack"))["id"] == "k1"
        refusal = await alice.wait_for(error("not_waiting"))
        assert (refusal["id"], refusal["conversation_id"]) == ("k1", conv)

        # Alice takes it; Bob still may not write to it; a transfer to nobody fails.
        await alice.set_presence("online")
        await user.click(SESSION_START)
        await user.wait_for(notice("agent_joined"))
        with pytest.raises(RequestRefused) as refused:
            await bob.say(conv, "let me in")
        assert refused.value.code == "not_assigned"
        with pytest.raises(RequestRefused) as refused:
            await bob.end(conv)
        assert refused.value.code == "not_assigned"
        await alice.send_frame(
            {"type": "transfer", "id": "t1", "conversation_id": conv, "to_agent": "carol"}
        )
        failed = await alice.wait_for(error("transfer_failed"))
        assert failed["id"] == "t1"
        assert await alice.say(conv, "still mine") is not None


async def test_a_user_cannot_restart_an_open_session(harness: WsHarness) -> None:
    async with harness.user() as user:
        await user.click(SESSION_START)
        with pytest.raises(RequestRefused) as refused:
            await user.click(SESSION_START)
        assert refused.value.code == "session_already_open"


# -- rate limit -----------------------------------------------------------------------------


async def test_a_flood_is_rate_limited_and_the_connection_recovers(listener: str) -> None:
    async with (
        running_ws_server(limits=Limits(rate=5.0, burst=5), listener=listener) as harness,
        harness.user() as user,
    ):
        for i in range(12):
            await user.send_frame({"type": "ping", "id": i})
        answers = [await user.next_frame() for _ in range(12)]
        pongs = [f for f in answers if f["type"] == "pong"]
        limited = [f for f in answers if f["type"] == "error"]
        assert 5 <= len(pongs) < 12
        assert limited and all(f["code"] == "rate_limited" for f in limited)
        retry_after = max(f["retry_after"] for f in limited)
        assert 0 < retry_after <= 1
        await trio.sleep(retry_after + 0.05)  # the bucket refills with real time
        await user.ping()


# -- slow readers ---------------------------------------------------------------------------


async def test_a_slow_reader_is_closed_with_4408_and_others_go_on(listener: str) -> None:
    limits = Limits(rate=1000.0, burst=1000, max_buffered=20)
    async with (
        running_ws_server(limits=limits, listener=listener) as harness,
        harness.user() as other,
    ):
        port = int(harness.url.rsplit(":", 1)[1].strip("/"))
        sock = trio.socket.socket()
        # A tiny receive window: the kernel stops taking the server's frames almost at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        async with trio.open_nursery() as nursery:
            slow = await wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/")
            await slow.send_message(hello(role="user"))
            flood = json.dumps(
                {"type": "message", "content_type": "text", "content": {"text": "flood 10 16000"}}
            )
            for _ in range(30):
                await slow.send_message(flood)
            # While it is stuck, everyone else is served promptly.
            with trio.fail_after(2):
                assert await other.say_text("am I slowed down?") == 1
                await other.wait_for(text_entry("echo: am I slowed down?"))
            # Now the slow client reads: the backlog, then the close.
            frames: list[Frame] = []
            with trio.fail_after(5):
                try:
                    while True:
                        frames.append(json.loads(await slow.get_message()))
                except ConnectionClosed as closed:
                    assert closed.reason is not None and closed.reason.code == 4408
            nursery.cancel_scope.cancel()
        for frame in frames:
            check_frame(frame)
        welcome = frames[0]
        seen = max(f["seq"] for f in frames if f["type"] == "entry")
        # It resumes by seq and gets exactly what it missed.
        async with harness.user(resume_token=welcome["resume_token"], last_seq=seen) as back:
            store = harness.services.board.store
            recorded = await store.entries_after(welcome["conversation_id"], seen)
            assert recorded, "the conversation went on while its client was stuck"
            replayed = [await back.next_frame() for _ in recorded]
            assert [f["seq"] for f in replayed] == [e.seq for e in recorded]
            assert replayed[0]["seq"] == seen + 1


# -- bots that connect ----------------------------------------------------------------------


async def test_a_connected_bot_gets_events_and_pushes_replies(harness: WsHarness) -> None:
    async with harness.connected_bot("relay") as bot, harness.user(bot_id="relay") as user:
        await user.say_text("hi relay")
        event = await bot.wait_for(lambda f: f["type"] == "event")
        assert (event["conversation_id"], event["content"]) == (
            user.conversation_id,
            {"text": "hi relay"},
        )
        seq = await bot.push_text(user.conversation_id, "hello from a connected bot")
        assert (await user.wait_for(text_entry("hello from a connected bot")))["seq"] == seq
        await bot.ack_event(event["event_id"])

        async with harness.user(bot_id="demo") as stranger:
            with pytest.raises(RequestRefused) as refused:
                await bot.push_text(stranger.conversation_id, "not mine")
            assert refused.value.code == "forbidden"

        await user.click(SESSION_START)
        await user.wait_for(notice("session_started"))
        with pytest.raises(RequestRefused) as refused:
            await bot.push_text(user.conversation_id, "during the session")
        assert refused.value.code == "session_open"


async def test_with_no_bot_connected_the_user_hears_it_is_unavailable(listener: str) -> None:
    # Only once the bot's connect window (short here) passes with no connection.
    async with (
        running_ws_server(listener=listener, connect_wait=0.2) as harness,
        harness.user(bot_id="relay") as user,
    ):
        await user.say_text("anyone?")
        told = await user.wait_for(lambda f: f.get("metadata", {}).get("code") == "bot_unavailable")
        assert told["sender"] == "system"
        assert harness.services.bot_connections.unacknowledged("relay") == []


def is_event(text: str) -> Predicate:
    return lambda f: f["type"] == "event" and f["content"].get("text") == text


async def test_an_event_dropped_unacknowledged_goes_to_the_bots_next_connection(
    harness: WsHarness,
) -> None:
    registry = harness.services.bot_connections
    async with harness.user(bot_id="relay") as user:
        async with harness.connected_bot("relay") as first:
            await user.say_text("are you there?")
            lost = await first.wait_for(is_event("are you there?"))
        # Closed without acknowledging: the event waits for the bot to come back.
        async with harness.connected_bot("relay") as second:
            again = await second.wait_for(lambda f: f["type"] == "event")
            assert again == lost, "the same event, same event_id, so the bot can de-duplicate"
            await second.push_text(user.conversation_id, "yes, here")
            await second.ack_event(again["event_id"])
            assert registry.unacknowledged("relay") == []
            await user.wait_for(text_entry("yes, here"))
        assert not [f for f in user.take_all() if f.get("metadata", {}).get("code")]


async def test_an_event_moves_to_another_open_connection_of_the_bot(harness: WsHarness) -> None:
    async with (
        harness.user(bot_id="relay") as user,
        harness.connected_bot("relay") as older,
        harness.connected_bot("relay") as newer,
    ):
        await user.say_text("one")
        held = await older.wait_for(is_event("one"))  # events go to the oldest
        await older.close()
        moved = await newer.wait_for(is_event("one"))
        assert moved["event_id"] == held["event_id"]
        await newer.push_text(user.conversation_id, "one, answered")
        await newer.ack_event(moved["event_id"])
        await user.wait_for(text_entry("one, answered"))


async def test_an_event_owed_before_the_bot_connects_is_delivered_when_it_does(
    harness: WsHarness,
) -> None:
    registry = harness.services.bot_connections
    async with harness.user(bot_id="relay") as user:
        seq = await user.say_text("hello, anyone?")
        await trio.testing.wait_all_tasks_blocked()
        owed = f"{user.conversation_id}:{seq}"
        assert registry.unacknowledged("relay") == [owed]
        async with harness.connected_bot("relay") as bot:
            event = await bot.wait_for(lambda f: f["type"] == "event")
            assert (event["event_id"], event["content"]) == (owed, {"text": "hello, anyone?"})
            await bot.push_text(user.conversation_id, "here now")
            await bot.ack_event(owed)
            await user.wait_for(text_entry("here now"))
        assert not [f for f in user.take_all() if f.get("metadata", {}).get("code")]


async def test_an_acknowledged_event_is_not_delivered_again(harness: WsHarness) -> None:
    async with harness.user(bot_id="relay") as user:
        async with harness.connected_bot("relay") as bot:
            await user.say_text("first")
            await user.say_text("second")
            first = await bot.wait_for(lambda f: f["type"] == "event")
            assert first["content"] == {"text": "first"}
            # One event of a conversation at a time: the next waits for this one's ack.
            await trio.testing.wait_all_tasks_blocked()
            assert not [f for f in bot.take_all() if f["type"] == "event"]
            await bot.ack_event(first["event_id"])
            await bot.ack_event(first["event_id"])  # twice: harmless, still answered
        async with harness.connected_bot("relay") as back:
            event = await back.wait_for(lambda f: f["type"] == "event")
            assert event["content"] == {"text": "second"}, "not the acknowledged one again"
            await back.ack_event(event["event_id"])
            await back.ping()
            assert not [f for f in back.take_all() if f["type"] == "event"]


# -- shutdown -------------------------------------------------------------------------------


async def test_shutdown_closes_every_connection_with_1001(listener: str) -> None:
    async with running_ws_server(listener=listener) as harness:
        async with trio.open_nursery() as nursery:
            serve = partial(serve_websockets, listener=listener)
            port: int = await nursery.start(serve, harness.services, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}/"
            async with (
                connect_user(url, frame_check=check_frame) as user,
                connect_user(url) as second,
            ):
                await user.say_text("before shutdown")
                nursery.cancel_scope.cancel()
                assert await user.wait_closed() == 1001
                assert await second.wait_closed() == 1001
        # The other listener was not touched.
        async with harness.user() as after:
            assert await after.say_text("still served") == 1


# -- random frames --------------------------------------------------------------------------


# What random input may earn: never a failure of the server itself.
INPUT_ERRORS = wire.ERROR_CODES - {"internal_error", "conversation_failed", "store_unavailable"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
framey = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["message", "typing", "ping", "presence", "claim", "event_ack", "hello", "x"]
        )
    },
    optional={
        "id": st.one_of(st.text(max_size=8), st.integers()),
        "content_type": st.sampled_from(["text", "payload", ""]),
        "content": st.one_of(
            st.just({"payload": SESSION_START}), st.just({"payload": SESSION_END}), json_values
        ),
        "conversation_id": st.text(max_size=8),
        "event_id": st.one_of(st.text(max_size=8), st.integers()),
        "status": st.sampled_from(["online", "away", "gone"]),
        "v": st.integers(0, 2),
    },
)
random_frame = st.one_of(
    framey.map(json.dumps),
    st.text(max_size=40),
    st.binary(max_size=40),
    json_values.map(json.dumps),
)


@pytest.mark.parametrize("listener", LISTENERS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(random_frame, min_size=1, max_size=8),
    role=st.sampled_from(["user", "agent", "bot"]),
)
async def test_random_frames_never_break_the_server(
    frames: list[str | bytes], role: str, listener: str
) -> None:
    # A server per example: hypothesis runs each example in a trio run of its own.
    with trio.fail_after(10):
        async with running_ws_server(listener=listener) as harness:
            opened = {"user": harness.user, "agent": harness.agent, "bot": harness.connected_bot}
            async with opened[role]() as client:
                for raw in frames:
                    await client.send_raw(raw)
                await client.ping()  # everything before it was handled, and it still answers
                for frame in client.take_all():
                    if frame["type"] == "error":
                        assert frame["code"] in INPUT_ERRORS, frame
            # The same garbage before a hello closes with 4400 and nothing else.
            assert await close_code_after(harness.url, frames[0]) == 4400
            async with harness.user() as user:
                assert await user.say_text("a normal session") is not None
                await user.wait_for(text_entry("echo: a normal session"))


async def test_expiry_pushes_session_expired_to_the_bot(listener: str) -> None:
    settings_ = BotSettings(session_timeout=0.3, grace_period=30)
    async with (
        running_ws_server(settings=settings_, listener=listener) as harness,
        harness.agent() as alice,
    ):
        await alice.set_presence("online")
        async with harness.user() as user:
            await user.click(SESSION_START)
            await user.wait_for(notice("agent_joined"))
            await user.wait_for(notice("session_expired"))
            await user.wait_for(text_entry("Sorry, nobody could answer in time."))
        event = await harness.bot.wait_for_event(
            lambda e: e.content.content.get("payload") == "LIVECHAT_SESSION_EXPIRED"
        )
        assert event.metadata["reason"] == "idle_timeout"


# -- own messages, store trouble, presence ----------------------------------------------------


def recorder(into: list[Frame]) -> Callable[[Frame], None]:
    """A frame check that also keeps every frame a client receives."""

    def record(frame: Frame) -> None:
        check_frame(frame)
        into.append(frame)

    return record


def texts_of(frames: list[Frame]) -> list[str | None]:
    return [f["content"].get("text") for f in frames if f["type"] == "entry"]


async def test_a_message_with_an_id_is_not_echoed_to_its_own_connection(
    harness: WsHarness,
) -> None:
    to_user: list[Frame] = []
    to_alice: list[Frame] = []
    async with (
        harness.agent("alice", frame_check=recorder(to_alice)) as alice,
        harness.agent("alice") as alice_too,
    ):
        await alice.set_presence("online")
        async with harness.user(frame_check=recorder(to_user)) as user:
            await user.click(SESSION_START)
            conv = (await alice.wait_for(lambda f: f["type"] == "transcript"))["conversation_id"]
            await user.wait_for(notice("agent_joined"))
            async with harness.user(resume_token=user.resume_token, last_seq=0) as phone:
                seq = await user.say_text("from my laptop")
                assert seq is not None and user.last_seq == seq
                # The user's other connection and the agent get it; the sender has the ack.
                assert (await phone.wait_for(text_entry("from my laptop")))["seq"] == seq
                assert (await alice.wait_for(text_entry("from my laptop")))["seq"] == seq

                said = await alice.say(conv, "from the desk")
                assert (await alice_too.wait_for(text_entry("from the desk")))["seq"] == said
                assert (await user.wait_for(text_entry("from the desk")))["seq"] == said

                # Without an id there is no ack to carry the seq: the entry comes back.
                await user.send_frame(
                    {"type": "message", "content_type": "text", "content": {"text": "no id"}}
                )
                await user.wait_for(text_entry("no id"))
                await alice.wait_for(text_entry("no id"))
    assert "from my laptop" not in texts_of(to_user)
    assert "from the desk" not in texts_of(to_alice)
    # The clicked button is the user's own too: its notices come, the click does not.
    assert SESSION_START not in [
        f["content"].get("payload") for f in to_user if f["type"] == "entry"
    ]


class FullDisk(MemoryStore):
    """A memory store that cannot take new conversations, as a full disk would."""

    async def record(self, state: ConversationState, entries: list[Entry]) -> None:
        if not entries:
            raise StoreUnavailable("disk full")
        await super().record(state, entries)


async def test_a_hello_the_store_cannot_keep_closes_with_4503(listener: str) -> None:
    async with running_ws_server(listener=listener, store=FullDisk()) as harness:
        with pytest.raises(Closed) as refused:
            async with harness.user():
                pass
        assert refused.value.code == 4503
        assert refused.value.reason is not None and "store_unavailable" in refused.value.reason
        async with harness.agent("alice") as alice:  # the rest of the server goes on
            await alice.set_presence("online")


async def test_presence_changes_are_kept_by_a_store_that_keeps_them(
    listener: str, tmp_path: Any
) -> None:
    async with (
        open_sqlite_store(tmp_path / "switchover.db") as store,
        running_ws_server(listener=listener, store=store) as harness,
        harness.agent("alice") as alice,
    ):
        await alice.set_presence("online")
        assert (await store.last_presences())["alice"][0] == "online"
        await alice.set_presence("away")
        assert (await store.last_presences())["alice"][0] == "away"


TCP_CLOSE = 7  # include/net/tcp_states.h


def tcp_state(sock: trio.socket.SocketType) -> int:
    """The kernel's TCP state of ``sock`` (Linux: the first byte of TCP_INFO)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="reads the TCP state (Linux)")
async def test_a_reader_that_never_reads_is_cut_off_after_the_close_grace() -> None:
    """The 4408 close frame cannot reach a client whose buffers are full: the fast listener
    aborts the TCP connection once the grace has passed, instead of holding it open."""
    limits = Limits(rate=1000.0, burst=1000, max_buffered=20)
    grace = 0.5
    async with running_ws_server(limits=limits, listener="fast", close_grace=grace) as harness:
        port = int(harness.url.rsplit(":", 1)[1].strip("/"))
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        async with trio.open_nursery() as nursery:
            stuck = await wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/")
            await stuck.send_message(hello(role="user"))
            flood = json.dumps(
                {"type": "message", "content_type": "text", "content": {"text": "flood 10 16000"}}
            )
            for _ in range(30):
                await stuck.send_message(flood)
            nursery.cancel_scope.cancel()
        # The client never reads. Once the grace has passed, the server resets the TCP
        # connection: the client's kernel sees it (state TCP_CLOSE) with the frames unread.
        started = trio.current_time()
        with trio.fail_after(grace + 5):
            while tcp_state(sock) != TCP_CLOSE:  # noqa: ASYNC110 (no event tells of it)
                await trio.sleep(0.05)
        assert trio.current_time() - started >= grace * 0.5
        with pytest.raises(ConnectionResetError), trio.fail_after(5):
            while await sock.recv(1 << 16):
                pass
        sock.close()
        async with harness.user() as user:  # nothing else was affected
            assert await user.say_text("still served") == 1
