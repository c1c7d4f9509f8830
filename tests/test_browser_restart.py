"""A server restart in the middle of a live chat, as the agent and the user see it.

A real ``switchover serve`` is killed with SIGKILL (nothing flushed, nothing said to the
clients) while an agent and a user talk, and started again on the same data directory and
ports. The desk shows that it is reconnecting and for how long its chats are kept, then that
it is back; the chat stays with the agent (presence restored, grace period counted from when
the server is ready), the user never reads that the agent left, and the conversation goes on
both ways. A desk signed in afresh after the restart, with nothing saved in its tab, gets the
chat with the user's details and the whole transcript, without picking it up again.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

# Skips this module too when Chromium is missing; ``browser`` and ``contexts`` are fixtures.
from .test_browser import (
    ALICE_TOKEN,
    GREETING,
    SWITCHOVER,
    Server,
    assert_no_duplicates,
    browser,
    contexts,
    open_widget,
    say,
    shot,
    sign_in,
)

pytestmark = pytest.mark.browser
__all__ = ["browser", "contexts"]  # fixtures shared with tests/test_browser.py

#: Long enough for the backoff of both pages to find the server again after the restart.
BACK_MS = 30_000

CONFIG = """
secret = "browser-restart-secret"

[bots.demo]
adapter = "demo"
[bots.demo.settings]
grace_period = {grace}

[agents.alice]
name = "Alice"
token = "{token}"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Restartable:
    """``switchover serve`` on fixed ports and one data directory, killed and started again."""

    def __init__(self, home: Path, grace: float = 60.0) -> None:
        self.home = home
        self.config = home / "switchover.toml"
        self.config.write_text(CONFIG.format(grace=grace, token=ALICE_TOKEN), encoding="utf-8")
        self.ports = (free_port(), free_port())
        self.process: subprocess.Popen[str] | None = None
        self.runs = 0

    def start(self) -> Server:
        self.runs += 1
        errors = (self.home / f"stderr-{self.runs}.log").open("w", encoding="utf-8")
        ws_port, http_port = self.ports
        process = subprocess.Popen(
            [
                *(str(SWITCHOVER), "serve", "--config", str(self.config)),
                *("--ws-port", str(ws_port), "--http-port", str(http_port)),
                *("--data-dir", str(self.home / "data")),
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=self.home,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        errors.close()
        self.process = process
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        out = process.stdout
        threading.Thread(target=lambda: [lines.put(line) for line in out], daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=20)
            except queue.Empty:
                self.kill()
                log = (self.home / f"stderr-{self.runs}.log").read_text()
                pytest.fail(f"switchover serve did not start:\n{log[-3000:]}")
            found = re.search(r"ready: .*HTTP (http://\S+)", line)
            if found:
                return Server(found.group(1), process)

    def kill(self) -> None:
        """SIGKILL: what a crash or an out-of-memory kill leaves behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def restartable(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Restartable]:
    """The server; parametrized indirectly, the grace period in seconds (else 60)."""
    server = Restartable(tmp_path, getattr(request, "param", 60.0))
    try:
        yield server
    finally:
        server.kill()


def live_chat(
    restartable: Restartable, contexts: tuple[BrowserContext, BrowserContext], problems: list[str]
) -> tuple[Server, Page, Page]:
    """The server started, Alice online at the desk, and a user of the widget talking to her:
    the server, the desk and the user's page."""
    user_context, agent_context = contexts
    server = restartable.start()
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "online")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    log = user.locator(".so-log")
    say(user, "hello")
    expect(log.locator(".so-from-bot", has_text=GREETING)).to_have_count(1)
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    # Alice is online: the chat comes to her at once.
    expect(desk.locator("#chat-state")).to_have_text("Live")
    expect(user.locator(".so-banner")).to_have_text("You are chatting with Alice.")
    say(desk, "Hello, Alice here.", "Reply to the user")
    expect(log.locator(".so-from-agent", has_text="Alice here")).to_have_count(1)
    say(user, "My parcel is late")
    expect(desk.locator("#chat-log .from-user", has_text="My parcel is late")).to_have_count(1)
    return server, desk, user


def test_a_restart_mid_chat_goes_unnoticed_but_for_the_desks_banner(
    restartable: Restartable,
    contexts: tuple[BrowserContext, BrowserContext],
) -> None:
    _, agent_context = contexts
    problems: list[str] = []
    server, desk, user = live_chat(restartable, contexts, problems)
    log = user.locator(".so-log")
    chat_log = desk.locator("#chat-log")

    restartable.kill()
    banner = desk.get_by_role("status").filter(has_text="Connection lost")
    expect(banner).to_contain_text("Reconnecting… your chat is kept for you for 60 s.")
    expect(desk.locator("#reconnecting-left")).to_have_text(re.compile(r"^\(\d+ s left\)$"))
    shot(desk, "restart-01-desk-reconnecting")

    server = restartable.start()
    back = desk.get_by_role("status").filter(has_text="Reconnected")
    expect(back).to_have_text("Reconnected. Your chats are here.", timeout=BACK_MS)
    expect(desk.locator("#connection")).to_have_text("Connected")
    # Alice is online as she left it, and the chat is still hers.
    expect(desk.locator("body")).to_have_attribute("data-presence", "online")
    expect(desk.get_by_role("radio", name="Online")).to_be_checked()
    expect(desk.locator("#chat-state")).to_have_text("Live")
    expect(user.locator(".so-widget")).to_have_attribute(
        "data-connection", "online", timeout=BACK_MS
    )
    shot(desk, "restart-02-desk-back")

    # The conversation goes on both ways.
    say(user, "Are you still there?")
    expect(chat_log.locator(".from-user", has_text="still there")).to_have_count(1)
    say(desk, "Yes: your parcel is on its way.", "Reply to the user")
    expect(log.locator(".so-from-agent", has_text="on its way")).to_have_count(1)
    assert_no_duplicates(desk, "#chat-log")
    assert_no_duplicates(user, ".so-log")

    # A desk signed in afresh, with nothing kept in its tab, gets the chat with the user's
    # details and everything said since the start, without picking it up again.
    fresh_context = agent_context.browser
    assert fresh_context is not None
    other = fresh_context.new_context(viewport={"width": 1200, "height": 820}, locale="en-GB")
    try:
        again = sign_in(other, server, ALICE_TOKEN, problems, "online")
        expect(again.locator("#chat-state")).to_have_text("Live")
        expect(again.locator("#chat-title")).to_have_text("Guest")
        expect(again.locator("#chat-meta")).to_contain_text("demo")
        again_log = again.locator("#chat-log")
        expect(again_log.locator(".from-user", has_text="hello")).to_have_count(1)
        expect(again_log.locator(".from-bot", has_text=GREETING)).to_have_count(1)
        expect(again_log.locator(".from-agent", has_text="Alice here")).to_have_count(1)
        expect(again_log.locator(".from-user", has_text="still there")).to_have_count(1)
        expect(again_log.locator(".from-agent", has_text="on its way")).to_have_count(1)
        shot(again, "restart-03-desk-signed-in-again")
    finally:
        other.close()

    # Nobody ever told the user the agent had left.
    expect(log.locator(".so-notice-agent_left")).to_have_count(0)
    expect(log).not_to_contain_text("The agent left")
    assert problems == []


@pytest.mark.parametrize("restartable", [8.0], indirect=True)
def test_the_grace_period_after_a_restart_counts_from_when_the_server_is_ready(
    restartable: Restartable,
    contexts: tuple[BrowserContext, BrowserContext],
) -> None:
    """The server stays down longer than the grace period: the desk says the chat may have
    gone back to the queue, but the grace period starts again when the server is ready, so
    the desk that comes back at once still has it."""
    problems: list[str] = []
    _, desk, user = live_chat(restartable, contexts, problems)
    restartable.kill()
    banner = desk.locator("#reconnecting[role=status]")
    expect(banner).to_contain_text("Reconnecting… your chat is kept for you for 8 s.")
    expect(banner).to_have_text(
        "Still reconnecting… your chats may have gone back to the queue.", timeout=BACK_MS
    )
    restartable.start()
    back = desk.get_by_role("status").filter(has_text="Reconnected")
    expect(back).to_have_text("Reconnected. Your chats are here.", timeout=BACK_MS)
    expect(desk.locator("#chat-state")).to_have_text("Live")
    expect(user.locator(".so-widget")).to_have_attribute(
        "data-connection", "online", timeout=BACK_MS
    )
    say(user, "Hello again")
    expect(desk.locator("#chat-log .from-user", has_text="Hello again")).to_have_count(1)
    expect(user.locator(".so-log .so-notice-agent_left")).to_have_count(0)
    assert problems == []
