"""Nothing acknowledged is lost to ``kill -9``: the real server, a real data directory.

The server runs as a subprocess on 127.0.0.1. Users and an agent talk through live and queued
sessions while messages stream; the process is killed with SIGKILL mid-traffic and started
again on the same data directory. Then: every acknowledged message is in the transcript (read
with ``switchover transcript``) and is delivered to a user who resumes; the live session is
the agent's again and the queued ones wait in their order; a session whose deadline fell while
the server was down has expired and its bot answered the expiry; new traffic flows. And an
event a webhook bot had not answered when the server died reaches it again after the restart,
as does one a connected bot had received but not acknowledged.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from actors import SESSION_EXPIRED, SESSION_START
from transport.bots.demo import NOBODY_CAME
from transport.client import Frame, connect_agent, connect_bot, connect_user

from .fakes.asgi_server import serving as serving_http
from .fakes.webhook_bot import SECRET, BotServer
from .support.process import ROOT, SWITCHOVER, serving_process

ALICE = "alice-token-for-durability"
BRIEF_TIMEOUT = 2.5

CONFIG = f"""
[listeners]
host = "127.0.0.1"
ws_port = 0
http_port = 0

[limits]
rate = 1000.0
burst = 1000

[bots.demo]
adapter = "demo"
[bots.demo.settings]
session_timeout = 3600.0

[bots.brief]
adapter = "demo"
[bots.brief.settings]
session_timeout = {BRIEF_TIMEOUT}

[agents.alice]
name = "Alice"
token = "{ALICE}"
capacity = 1
bots = ["demo"]
"""


def serving(tmp_path: Path, run: int, text: str = CONFIG) -> Any:
    return serving_process(tmp_path, run, text)


def transcript(tmp_path: Path, conversation_id: str) -> list[dict[str, Any]]:
    data = tmp_path / "data"
    result = subprocess.run(
        [*SWITCHOVER, "transcript", conversation_id, "--format=json", f"--data-dir={data}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return entries


def entry(sender: str | None = None, **fields: Any) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        if frame["type"] != "entry" or (sender is not None and frame["sender"] != sender):
            return False
        return all(frame.get(key) == value for key, value in fields.items())

    return check


def text_entry(text: str) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "entry" and f.get("content", {}).get("text") == text


def notice(code: str) -> Callable[[Frame], bool]:
    return lambda f: (
        f["type"] == "entry" and f["content_type"] == "notice" and f["content"].get("code") == code
    )


class Acked:
    """What the server acknowledged, per conversation: ``seq -> text``; and an event set once
    every sender has had ``wanted`` acknowledgements."""

    def __init__(self) -> None:
        self.by_conversation: dict[str, dict[int, str]] = {}
        self.per_sender: dict[str, int] = {}
        self.enough = trio.Event()
        self.wanted = 0

    def add(self, conversation_id: str, seq: int | None, text: str, sender: str = "") -> None:
        assert seq is not None
        self.by_conversation.setdefault(conversation_id, {})[seq] = text
        self.per_sender[sender] = self.per_sender.get(sender, 0) + 1
        if self.wanted and all(
            self.per_sender.get(name, 0) >= self.wanted for name in ("user", "agent", "chatty")
        ):
            self.enough.set()


async def chatter(send: Callable[[int], Any], stop_after: int) -> None:
    """Send numbered messages until the connection dies (the server is killed)."""
    try:
        for n in range(stop_after):
            await send(n)
    except Exception:
        return  # the server went away mid-request: that message was never acknowledged


async def test_kill_nine_loses_nothing_acknowledged(tmp_path: Path) -> None:
    acked = Acked()
    tokens: dict[str, str] = {}

    async with serving(tmp_path, 1) as server:
        url = server.ws_url
        async with (
            connect_user(url, bot_id="demo") as live,
            connect_user(url, bot_id="demo") as first,
            connect_user(url, bot_id="demo") as second,
            connect_user(url, bot_id="brief") as brief,
            connect_user(url, bot_id="demo") as chatty,
            connect_agent(url, ALICE) as alice,
        ):
            users = {"live": live, "first": first, "second": second, "brief": brief}
            acked.add(live.conversation_id, await live.click(SESSION_START), SESSION_START)
            await alice.set_presence("online")
            await live.wait_for(notice("agent_joined"))
            # alice is full (capacity 1): these wait, in this order.
            await first.click(SESSION_START)
            await first.wait_for(lambda f: f["type"] == "queue")
            await second.click(SESSION_START)
            await second.wait_for(lambda f: f["type"] == "queue")
            brief_seq = await brief.click(SESSION_START)  # nobody serves "brief"
            acked.add(brief.conversation_id, brief_seq, SESSION_START)
            for name, user in users.items():
                tokens[name] = user.resume_token
            tokens["chatty"] = chatty.resume_token

            async def user_says(n: int) -> None:
                text = f"user {n}"
                acked.add(live.conversation_id, await live.say_text(text), text, "user")

            async def agent_says(n: int) -> None:
                text = f"agent {n}"
                seq = await alice.say(live.conversation_id, text)
                acked.add(live.conversation_id, seq, text, "agent")

            async def chatty_says(n: int) -> None:
                text = f"chatty {n}"
                acked.add(chatty.conversation_id, await chatty.say_text(text), text, "chatty")

            acked.wanted = 15
            async with trio.open_nursery() as nursery:
                for send in (user_says, agent_says, chatty_says):
                    nursery.start_soon(chatter, send, 10_000)
                with trio.fail_after(10):
                    await acked.enough.wait()
                server.process.send_signal(signal.SIGKILL)  # mid-traffic
                killed_at = time.time()
                await trio.to_thread.run_sync(server.process.wait)
            ids = {name: user.conversation_id for name, user in users.items()}
            ids["chatty"] = chatty.conversation_id

    # Down. Let the "brief" session's stored deadline pass before starting again.
    with sqlite3.connect(tmp_path / "data" / "switchover.db") as db:
        (deadline,) = db.execute(
            "SELECT deadline FROM conversations WHERE id = ?", (ids["brief"],)
        ).fetchone()
    assert deadline is not None
    await trio.sleep(max(0.0, deadline - time.time() + 0.2))

    async with serving(tmp_path, 2) as server:
        url = server.ws_url
        # Every acknowledged message is in the transcript, with the seq it was acked with.
        for conversation_id, messages in acked.by_conversation.items():
            printed = await trio.to_thread.run_sync(transcript, tmp_path, conversation_id)
            stored = {
                e["seq"]: e["content"].get("text", e["content"].get("payload")) for e in printed
            }
            for seq, text in messages.items():
                assert stored.get(seq) == text, (conversation_id, seq, text)

        # ... and delivered to a user who resumes.
        async with connect_user(url, resume_token=tokens["chatty"], last_seq=0) as chatty:
            last = max(acked.by_conversation[ids["chatty"]])
            await chatty.wait_for(entry("user", seq=last))
            # New traffic flows: the demo bot still answers.
            await chatty.say_text("hello again")
            await chatty.wait_for(entry("bot"))

        # The live session is alice's again; the queued ones wait in their order.
        async with connect_agent(url, ALICE) as alice:
            desk = await alice.wait_for(lambda f: f["type"] == "desk")
            assert [c["conversation_id"] for c in desk["chats"]] == [ids["live"]]
            assert [w["conversation_id"] for w in desk["queue"]] == [ids["first"], ids["second"]]
            async with connect_user(url, resume_token=tokens["live"], last_seq=0) as live:
                await live.wait_for(entry("agent"))
                seq = await alice.say(ids["live"], "still here after the restart")
                await live.wait_for(entry("agent", seq=seq))
                assert seq is not None  # alice's own copy is the ack's seq (no echo)

        # The "brief" session expired while the server was down, and its bot was told.
        async with connect_user(url, resume_token=tokens["brief"], last_seq=0) as brief:
            expired = await brief.wait_for(notice("session_expired"))
            assert expired["content"]["reason"] == "idle_timeout"
            # Nobody ever held it: the demo bot blames no agent.
            await brief.wait_for(text_entry(NOBODY_CAME))
        stored = await trio.to_thread.run_sync(transcript, tmp_path, ids["brief"])
        to_bot = [e for e in stored if e["content"].get("payload") == SESSION_EXPIRED]
        assert len(to_bot) == 1 and to_bot[0]["metadata"]["reason"] == "idle_timeout"
        assert to_bot[0]["at"] >= deadline > killed_at, "it expired while the server was down"


async def test_kill_nine_hands_a_bot_the_event_it_had_not_answered(tmp_path: Path) -> None:
    hook = BotServer(mode="slow")  # answers nothing while the first server lives
    async with serving_http(hook) as bot_url:
        config = f"""
[listeners]
host = "127.0.0.1"
ws_port = 0
http_port = 0

[bots.hooked]
adapter = "webhook"
[bots.hooked.options]
url = "{bot_url}/events"
secret = "{SECRET}"
timeout = 60.0
attempts = 1
"""
        async with serving(tmp_path, 1, config) as server:
            async with connect_user(server.ws_url, bot_id="hooked") as user:
                token = user.resume_token
                assert await user.say_text("are you there?") is not None  # stored
                await hook.wait_for_calls(1)
            server.process.send_signal(signal.SIGKILL)  # while the bot is still thinking
            await trio.to_thread.run_sync(server.process.wait)

        hook.mode = "ok"
        async with serving(tmp_path, 2, config) as server:
            await hook.wait_for_calls(2, timeout=20)  # the restore, then the call
            first, again = hook.events
            assert again["event_id"] == first["event_id"], "the same event, so a bot can dedupe"
            assert again["content"]["content"]["text"] == "are you there?"
            async with connect_user(server.ws_url, resume_token=token, last_seq=0) as user:
                await user.wait_for(text_entry("echo: are you there?"))


RELAY = "relay-token-for-durability"
CONNECTED = f"""
[listeners]
host = "127.0.0.1"
ws_port = 0
http_port = 0

[bots.relay]
adapter = "connected"
token = "{RELAY}"
[bots.relay.options]
connect_wait = 60.0
"""


async def test_kill_nine_hands_a_connected_bot_the_event_it_had_not_acknowledged(
    tmp_path: Path,
) -> None:
    async with (
        serving(tmp_path, 1, CONNECTED) as server,
        connect_user(server.ws_url, bot_id="relay") as user,
        connect_bot(server.ws_url, RELAY) as bot,
    ):
        token, conversation_id = user.resume_token, user.conversation_id
        assert await user.say_text("are you there?") is not None  # stored
        held = await bot.wait_for(lambda f: f["type"] == "event")
        server.process.send_signal(signal.SIGKILL)  # the bot holds it, unacknowledged
        await trio.to_thread.run_sync(server.process.wait)
        await bot.wait_closed()

    async with serving(tmp_path, 2, CONNECTED) as server:
        # The restart hands the event over again; it waits for the bot to reconnect.
        async with connect_bot(server.ws_url, RELAY) as bot:
            again = await bot.wait_for(lambda f: f["type"] == "event", timeout=20)
            assert again == held, "the same event, same event_id: the bot can de-duplicate"
            await bot.push_text(conversation_id, "yes, still here")
            await bot.ack_event(again["event_id"])
        async with connect_user(server.ws_url, resume_token=token, last_seq=0) as user:
            await user.wait_for(text_entry("yes, still here"))


async def wait_for_log(tmp_path: Path, run: int, text: str, timeout: float = 20.0) -> None:
    """Wait until the server's log of ``run`` says ``text`` (the server is another process:
    its log is the event to wait on)."""
    log = tmp_path / f"server-{run}.log"
    with trio.fail_after(timeout):
        while text not in log.read_text():  # noqa: ASYNC110
            await trio.sleep(0.05)


# The relay bot again, with a connect window shorter than the restart and a one-second session.
EXPIRING = CONNECTED.replace("connect_wait = 60.0", "connect_wait = 0.5") + (
    "[bots.relay.settings]\nsession_timeout = 1.0\n"
)


async def test_kill_nine_then_an_expiry_reaches_a_bot_that_connects_late(tmp_path: Path) -> None:
    """The deadline passes while the server is down; at start-up no bot is connected, so the
    EXPIRED cannot be handed over: it stays owed, is retried with backoff, and reaches the
    bot once it connects."""
    async with (
        serving(tmp_path, 1, EXPIRING) as server,
        connect_user(server.ws_url, bot_id="relay") as user,
    ):
        conversation_id = user.conversation_id
        await user.click(SESSION_START)
        await user.wait_for(notice("session_started"))
        server.process.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(server.process.wait)

    async with serving(tmp_path, 2, EXPIRING) as server:
        # The session expired at start-up and the bot was not there to be told.
        await wait_for_log(tmp_path, 2, "retrying with backoff")
        async with connect_bot(server.ws_url, RELAY) as bot:
            event = await bot.wait_for(lambda f: f["type"] == "event", timeout=120)
            assert event["conversation_id"] == conversation_id
            assert event["content"] == {"payload": SESSION_EXPIRED}
            assert (event["sender"], event["metadata"]["reason"]) == ("system", "idle_timeout")
            await bot.ack_event(event["event_id"])
