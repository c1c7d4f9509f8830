"""A whole livechat session over real sockets, against the real server, with the demo bot and
the Python client: bot, queue, agent, sign-off, end, and back to the bot; then an expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import SESSION_END, SESSION_START
from transport.bots.demo import APOLOGY, GREETING, HUMAN_BUTTON, THANKS
from transport.client import Frame, connect_agent, connect_user
from transport.config import Config, from_mapping
from transport.protocol.frames import server_frame_errors
from transport.servers.runtime import RunningServer, run_server

ALICE_TOKEN = "alice-token-for-tests"


def check_schema(frame: Frame) -> None:
    """Every frame the server sends must match its published schema."""
    errors = list(server_frame_errors(frame))
    assert not errors, (frame, errors)


def server_config(**settings: Any) -> Config:
    return from_mapping(
        {
            "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
            "bots": {"demo": {"adapter": "demo", "settings": settings}},
            "agents": {"alice": {"name": "Alice", "token": ALICE_TOKEN, "capacity": 2}},
        }
    )


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[RunningServer]:
    settings = getattr(request, "param", {"session_timeout": 3600.0})
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(
            lambda task_status: run_server(
                server_config(**settings), handle_signals=False, task_status=task_status
            )
        )
        yield running
        running.stop()


def entry(sender: str | None = None, **fields: Any) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        if frame["type"] != "entry" or (sender is not None and frame["sender"] != sender):
            return False
        return all(frame.get(key) == value for key, value in fields.items())

    return check


def text(sender: str, said: str) -> Callable[[Frame], bool]:
    return lambda f: entry(sender)(f) and f["content"].get("text") == said


def notice(code: str) -> Callable[[Frame], bool]:
    return lambda f: entry("system", content_type="notice")(f) and f["content"]["code"] == code


def button_payloads(frame: Frame) -> dict[str, str]:
    return {b["content"]["title"]: b["content"]["payload"] for b in frame["content"]["buttons"]}


async def test_a_full_session_from_bot_to_human_and_back(server: RunningServer) -> None:
    url = server.ws_url
    with trio.fail_after(20):
        async with connect_user(
            url, bot_id="demo", metadata={"name": "Uma"}, frame_check=check_schema
        ) as user:
            conv = user.conversation_id
            # The demo bot greets and offers a human.
            await user.say_text("hello")
            await user.wait_for(text("bot", GREETING))
            question = await user.wait_for(entry("bot", content_type="question"))
            assert button_payloads(question)[HUMAN_BUTTON] == SESSION_START

            # The user clicks the button: a session opens and waits in the queue.
            await user.click(SESSION_START)
            await user.wait_for(notice("session_started"))
            queued = await user.wait_for(lambda f: f["type"] == "queue")
            assert queued["position"] == 1
            assert await user.say_text("is anyone there?") == user.last_seq  # acked, not echoed

            async with connect_agent(url, ALICE_TOKEN, frame_check=check_schema) as agent:
                # The desk shows the waiting chat, while the agent is still offline.
                waiting = await agent.wait_for(lambda f: f["type"] == "desk" and f["queue"])
                assert waiting["presence"] == "offline"
                assert waiting["queue"][0]["conversation_id"] == conv

                # Going online picks the waiting chat up, with the transcript so far.
                await agent.set_presence("online")
                transcript = await agent.wait_for(lambda f: f["type"] == "transcript")
                assert transcript["conversation_id"] == conv
                assert transcript["user_metadata"] == {"name": "Uma"}
                said = [e["content"].get("text") for e in transcript["entries"]]
                assert "hello" in said and GREETING in said and "is anyone there?" in said
                joined = await user.wait_for(notice("agent_joined"))
                assert joined["content"]["name"] == "Alice"

                # They talk.
                await agent.say(conv, "Hi Uma, Alice here. How can I help?")
                await user.wait_for(text("agent", "Hi Uma, Alice here. How can I help?"))
                await user.say_text("My parcel is late")
                await agent.wait_for(text("user", "My parcel is late"))

                # The agent signs off: the user is offered the end button...
                await agent.sign_off(conv)
                offer = await user.wait_for(lambda f: entry("system")(f) and f.get("metadata"))
                assert offer["metadata"]["sign_off"] is True
                assert list(button_payloads(offer).values()) == [SESSION_END]

                # ...but says something else instead: the session goes on.
                await user.say_text("Wait, one more thing")
                await agent.wait_for(text("user", "Wait, one more thing"))
                await agent.say(conv, "Sure, go ahead")
                await user.wait_for(text("agent", "Sure, go ahead"))

                # The user clicks the end button: the session ends for both...
                await user.click(SESSION_END)
                await user.wait_for(notice("session_ended"))
                ended = await agent.wait_for(notice("session_ended"))
                assert ended["content"]["reason"] == "user_ended"

            # ...and the bot greets them back.
            await user.wait_for(text("bot", THANKS))
            back = await user.wait_for(entry("bot", content_type="question"))
            assert button_payloads(back)[HUMAN_BUTTON] == SESSION_START
            # Back in bot mode, the bot answers again.
            await user.say_text("hi again")
            await user.wait_for(text("bot", GREETING))

    # Reconnecting from the start replays the whole conversation, in order, with no gap in
    # what the user may see and nothing from the bot while the human had it.
    with trio.fail_after(10):
        async with connect_user(
            url, resume_token=user.resume_token, last_seq=0, frame_check=check_schema
        ) as again:
            assert again.conversation_id == conv
            replayed: list[Frame] = []
            while not replayed or replayed[-1]["seq"] < user.last_seq:
                replayed.append(await again.wait_for(entry()))
    seqs = [frame["seq"] for frame in replayed]
    assert seqs == sorted(set(seqs))
    codes = [f["content"].get("code") for f in replayed if f["content_type"] == "notice"]
    start, end = codes.index("session_started"), codes.index("session_ended")
    assert start < end
    started_at = next(f["seq"] for f in replayed if f["content"].get("code") == "session_started")
    ended_at = next(f["seq"] for f in replayed if f["content"].get("code") == "session_ended")
    assert not [f for f in replayed if f["sender"] == "bot" and started_at < f["seq"] < ended_at]


async def test_a_reconnecting_user_misses_nothing(server: RunningServer) -> None:
    url = server.ws_url
    with trio.fail_after(20):
        async with connect_agent(url, ALICE_TOKEN, frame_check=check_schema) as agent:
            await agent.set_presence("online")
            async with connect_user(url, frame_check=check_schema) as user:
                conv, token = user.conversation_id, user.resume_token
                await user.click(SESSION_START)
                await user.wait_for(notice("agent_joined"))
                await agent.wait_for(lambda f: f["type"] == "transcript")
                seen = user.last_seq
            # While the user is away, the agent writes twice.
            await agent.say(conv, "Are you still there?")
            await agent.say(conv, "I found your parcel")
            async with connect_user(
                url, resume_token=token, last_seq=seen, frame_check=check_schema
            ) as back:
                first = await back.wait_for(entry())
                second = await back.wait_for(entry())
                assert (first["seq"], first["content"]["text"]) == (
                    seen + 1,
                    "Are you still there?",
                )
                assert (second["seq"], second["content"]["text"]) == (
                    seen + 2,
                    "I found your parcel",
                )
                # Then live traffic on the same connection.
                await agent.say(conv, "Live now")
                live = await back.wait_for(entry())
                assert (live["seq"], live["content"]["text"]) == (seen + 3, "Live now")


@pytest.mark.parametrize("server", [{"session_timeout": 1.0}], indirect=True)
async def test_a_silent_session_expires_and_the_bot_apologises(server: RunningServer) -> None:
    url = server.ws_url
    with trio.fail_after(15):
        async with connect_agent(url, ALICE_TOKEN, frame_check=check_schema) as agent:
            await agent.set_presence("online")
            async with connect_user(url, bot_id="demo", frame_check=check_schema) as user:
                await user.click(SESSION_START)
                await user.wait_for(notice("agent_joined"))
                await agent.say(user.conversation_id, "Hello?")
                await user.wait_for(text("agent", "Hello?"))
                # Nobody writes for a second: the session expires for both sides, and the
                # bot receives LIVECHAT_SESSION_EXPIRED, which the demo bot apologises for.
                expired = await user.wait_for(notice("session_expired"), timeout=5)
                assert expired["content"]["reason"] == "idle_timeout"
                await agent.wait_for(notice("session_expired"), timeout=5)
                await user.wait_for(text("bot", APOLOGY), timeout=5)
                assert server.app.services.desk.queue_length == 0


async def test_the_readme_walkthrough_runs_as_printed(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## A full session with the Python client", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    printed = section.split("It prints:\n\n```text\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), namespace)
    with trio.fail_after(20):
        await namespace["main"](server.ws_url, ALICE_TOKEN)
    assert capsys.readouterr().out == printed
