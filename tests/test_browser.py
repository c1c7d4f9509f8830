"""The agent desk and the chat widget, driven in a real headless Chromium.

A real ``switchover serve`` runs as a subprocess (SQLite store in a temporary directory, a
config with two agents and two bots, one with a very short session timeout), and Playwright's
synchronous API drives a user page and an agent page in two browser contexts, the way two
people would use them. Screenshots of both pages at the key steps go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SWITCHOVER = Path(sys.executable).with_name("switchover")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALICE_TOKEN = "alice-desk-token"
BOB_TOKEN = "bob-desk-token-long"
BOT_TOKEN = "demo-bot-push-token"
END_MESSAGE = "Alice has finished helping you. Anything else? Otherwise click below."
END_LABEL = "Close this chat"
WAIT_MS = 8000
expect.set_options(timeout=WAIT_MS)

CONFIG = f"""
secret = "browser-test-secret"

[bots.demo]
adapter = "demo"
token = "{BOT_TOKEN}"
[bots.demo.settings]
end_message = "{END_MESSAGE}"
end_button_label = "{END_LABEL}"

[bots.quick]
adapter = "demo"
[bots.quick.settings]
session_timeout = 3.0

[agents.alice]
name = "Alice"
token = "{ALICE_TOKEN}"

[agents.bob]
name = "Bob"
token = "{BOB_TOKEN}"
"""

# What the built-in demo bot says (transport/bots/demo.py).
GREETING = "Hi! I'm Switchover's demo bot."
THANKS = "Thanks for chatting with our team!"
HOURS = "Our agents answer Monday to Friday"
APOLOGY = "Sorry, your conversation with our agent timed out"


@attrs.frozen
class Server:
    http_url: str
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real Switchover on free ports, stopped with SIGTERM (a graceful shutdown)."""
    with running_server(tmp_path_factory.mktemp("switchover"), CONFIG) as started:
        yield started


@contextmanager
def running_server(home: Path, config_text: str) -> Iterator[Server]:
    """``switchover serve`` with ``config_text`` on free ports, its data under ``home``."""
    config = home / "switchover.toml"
    config.write_text(config_text, encoding="utf-8")
    errors = (home / "stderr.log").open("w+", encoding="utf-8")
    process = subprocess.Popen(
        [
            str(SWITCHOVER),
            "serve",
            "--config",
            str(config),
            "--ws-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(home / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        cwd=home,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    http_url = None
    try:
        while http_url is None:
            try:
                line = lines.get(timeout=15)
            except queue.Empty:
                break
            found = re.search(r"ready: .*HTTP (http://\S+)", line)
            http_url = found.group(1) if found else None
        if http_url is None:
            process.kill()
            process.wait(5)
            errors.seek(0)
            pytest.fail(f"switchover serve did not start:\n{errors.read()[-3000:]}")
        yield Server(http_url, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        errors.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def contexts(browser: Browser) -> Iterator[tuple[BrowserContext, BrowserContext]]:
    """A phone-sized context for the user and a desktop one for the agent."""
    user = browser.new_context(viewport={"width": 375, "height": 760}, locale="en-GB")
    agent = browser.new_context(viewport={"width": 1200, "height": 820}, locale="en-GB")
    for context in (user, agent):
        context.set_default_timeout(WAIT_MS)
    yield user, agent
    user.close()
    agent.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def watch_console(page: Page, problems: list[str]) -> None:
    """Collect script errors and failed loads, so a broken page fails the test instead of just
    looking odd. (The browser's own favicon request and WebSocket retries are not problems.)"""
    page.on("pageerror", lambda error: problems.append(f"{page.url}: {error}"))
    page.on(
        "response",
        lambda response: (
            problems.append(f"{response.status} for {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.on(
        "console",
        lambda message: (
            problems.append(f"{page.url}: {message.text}")
            if message.type == "error"
            and "WebSocket" not in message.text
            and "Failed to load resource" not in message.text
            else None
        ),
    )


def open_widget(context: BrowserContext, url: str, problems: list[str]) -> Page:
    page = context.new_page()
    watch_console(page, problems)
    page.goto(url)
    expect(page.locator(".so-widget")).to_have_attribute("data-connection", "online")
    return page


def sign_in(
    context: BrowserContext, server: Server, token: str, problems: list[str], presence: str
) -> Page:
    """Sign in at the desk. "Away" gets no chats automatically, so the queue can be seen and
    a chat picked up by hand."""
    page = context.new_page()
    watch_console(page, problems)
    page.goto(f"{server.http_url}/desk")
    page.get_by_label("Agent token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_text("Connected")
    page.get_by_role("radio", name=presence.capitalize()).check()
    expect(page.locator("body")).to_have_attribute("data-presence", presence)
    return page


def say(page: Page, text: str, field: str = "Message") -> None:
    """Type into the composer and press Enter, as a keyboard user would."""
    box = page.get_by_role("textbox", name=field, exact=True)
    box.fill(text)
    box.press("Enter")


def seqs(page: Page, log: str) -> list[int]:
    values = page.locator(f"{log} > li[data-seq]").evaluate_all(
        "items => items.map(item => Number(item.dataset.seq))"
    )
    return [int(value) for value in values]


def assert_no_duplicates(page: Page, log: str) -> list[int]:
    shown = seqs(page, log)
    assert shown == sorted(set(shown)), f"entries repeated or out of order in {log}: {shown}"
    return shown


def test_a_whole_session_between_a_user_and_an_agent(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    expect(desk.locator("#who")).to_have_text("Signed in as Alice")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    log = user.locator(".so-log")

    # The bot answers, and offers a human.
    say(user, "hello")
    expect(log.locator(".so-from-bot", has_text=GREETING)).to_have_count(1)
    expect(log.locator(".so-from-user", has_text="hello")).to_have_count(1)
    shot(user, "01-user-bot-greeting")

    user.locator(".so-choice", has_text="Talk to a human").last.click()
    expect(user.locator(".so-banner")).to_have_text("You are number 1 in the queue.")
    say(user, "My parcel never arrived")

    # The agent sees the waiting conversation, with the title badge, and picks it up.
    waiting = desk.locator("#queue .queue-item")
    expect(waiting).to_have_count(1)
    expect(waiting.locator(".wait")).to_have_text(re.compile(r"^\d+:\d\d$"))
    expect(desk).to_have_title(re.compile(r"^\(1\) Switchover desk$"))
    shot(desk, "02-desk-queue")
    waiting.get_by_role("button", name=re.compile("Pick up")).click()

    chat_log = desk.locator("#chat-log")
    expect(desk.locator("#chat-state")).to_have_text("Live")
    # Picking up takes the agent to the chat, ready to type.
    expect(desk.get_by_role("textbox", name="Reply to the user")).to_be_focused()
    expect(desk.locator("#chat-title")).to_have_text("Guest")
    expect(desk.locator("#chat-meta")).to_contain_text("Guest")
    expect(chat_log.locator(".from-user", has_text="hello")).to_have_count(1)
    expect(chat_log.locator(".from-bot", has_text=GREETING)).to_have_count(1)
    # The widget's greeting request reads as what it is, not as a button's payload.
    expect(chat_log.locator(".from-user", has_text="opened the chat")).to_have_count(1)
    expect(chat_log.locator(".from-user", has_text="CONVERSATION_START")).to_have_count(0)
    expect(chat_log.locator(".from-user", has_text="My parcel never arrived")).to_have_count(1)
    expect(desk.locator("#queue .queue-item")).to_have_count(0)
    expect(log.locator(".so-notice-agent_joined")).to_have_text("Alice joined the conversation.")
    expect(user.locator(".so-banner")).to_have_text("You are chatting with Alice.")

    # Messages both ways, and typing indicators both ways.
    say(desk, "Hello, Alice here. Let me look at your order.", "Reply to the user")
    expect(log.locator(".so-from-agent", has_text="Alice here")).to_have_count(1)
    # The desk shows its own reply once, from the ack (the server does not echo it back).
    expect(chat_log.locator(".from-agent", has_text="Alice here")).to_have_count(1)
    user.get_by_role("textbox", name="Message", exact=True).press_sequentially("It was order 12")
    expect(desk.locator("#chat-typing")).to_have_text("Guest is typing…")
    user.get_by_role("textbox", name="Message", exact=True).press("Enter")
    expect(chat_log.locator(".from-user", has_text="It was order 12")).to_have_count(1)
    desk.get_by_role("textbox", name="Reply to the user").press_sequentially("Found")
    expect(user.locator(".so-typing")).to_have_text("Alice is typing…")
    desk.get_by_role("textbox", name="Reply to the user").press("Enter")
    expect(log.locator(".so-from-agent", has_text="Found")).to_have_count(1)
    shot(user, "03-user-live-chat")
    shot(desk, "03-desk-live-chat")

    # A reload on the user's side loses nothing and shows nothing twice.
    before = assert_no_duplicates(user, ".so-log")
    user.reload()
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    expect(user.locator(".so-log > li")).to_have_count(len(before))
    assert assert_no_duplicates(user, ".so-log") == before
    expect(user.locator(".so-banner")).to_have_text("You are chatting with Alice.")
    say(desk, "Your parcel is on its way.", "Reply to the user")
    expect(user.locator(".so-from-agent", has_text="on its way")).to_have_count(1)

    # A reload on the agent's side too: the transcript from before the pickup is still there.
    before = assert_no_duplicates(desk, "#chat-log")
    desk.reload()
    expect(desk.locator("#connection")).to_have_text("Connected")
    expect(desk.locator("#chat-state")).to_have_text("Live")
    expect(desk.locator("#chat-log > li")).to_have_count(len(before))
    assert assert_no_duplicates(desk, "#chat-log") == before
    say(user, "Thank you!")
    expect(desk.locator("#chat-log .from-user", has_text="Thank you!")).to_have_count(1)
    assert_no_duplicates(desk, "#chat-log")

    # Sign off: the user sees the configured text and button, says something else, and the
    # session simply continues.
    desk.get_by_role("button", name="Sign off").click()
    sign_off = user.locator(".so-sign-off")
    expect(sign_off.locator(".so-question")).to_have_text(END_MESSAGE)
    expect(sign_off.get_by_role("button", name=END_LABEL)).to_be_enabled()
    shot(user, "04-user-sign-off")
    say(user, "Actually, one more question")
    expect(desk.locator("#chat-log .from-user", has_text="one more question")).to_have_count(1)
    expect(desk.locator("#chat-state")).to_have_text("Live")
    say(desk, "Of course, go ahead.", "Reply to the user")
    expect(user.locator(".so-from-agent", has_text="go ahead")).to_have_count(1)

    # The user clicks the end button: the session ends on both sides and the bot is back.
    user.get_by_role("button", name=END_LABEL).last.click()
    expect(user.locator(".so-notice-session_ended")).to_have_count(1)
    expect(user.locator(".so-from-bot", has_text=THANKS)).to_have_count(1)
    expect(sign_off.get_by_role("button", name=END_LABEL)).to_be_disabled()
    # The clicked button is disabled now; the keyboard's place moved to the message box.
    expect(user.get_by_role("textbox", name="Message", exact=True)).to_be_focused()
    expect(desk.locator("#chat-state")).to_have_text("Ended")
    expect(desk.locator("#chat-ended")).to_contain_text("ended")
    expect(desk.get_by_role("textbox", name="Reply to the user")).to_be_disabled()
    say(user, "What are your opening hours?")
    expect(user.locator(".so-from-bot", has_text=HOURS)).to_have_count(1)
    shot(user, "05-user-bot-resumed")
    shot(desk, "05-desk-ended")
    assert_no_duplicates(user, ".so-log")
    assert not problems, problems


def test_an_expired_session_shows_as_expired_on_both_sides(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, BOB_TOKEN, problems, "away")
    # A team's own page embedding the widget for another bot with one script tag. (It is
    # written into a page of the server's origin: Chromium refuses loopback connections from
    # a page that came from nowhere.)
    user = user_context.new_page()
    watch_console(user, problems)
    user.goto(f"{server.http_url}/healthz")
    user.set_content(
        '<!doctype html><meta name="viewport" content="width=device-width">'
        '<div id="help" style="height:600px"></div>'
        f'<script src="{server.http_url}/static/widget.js" data-bot="quick" data-target="#help"'
        ' data-metadata=\'{"name": "Quinn"}\'></script>'
    )
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    say(user, "hi")
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    waiting = desk.locator("#queue .queue-item", has_text="quick")
    waiting.get_by_role("button", name=re.compile("Pick up")).click()
    expect(desk.locator("#chat-title")).to_have_text("Quinn")
    expect(user.locator(".so-notice-agent_joined")).to_have_count(1)

    # Nobody writes for longer than the three-second session timeout.
    expect(user.locator(".so-notice-session_expired")).to_have_count(1)
    expect(user.locator(".so-from-bot", has_text=APOLOGY)).to_have_count(1)
    expect(desk.locator("#chat-state")).to_have_text("Expired")
    expect(desk.locator("#chat-ended")).to_contain_text("expired (nobody wrote for too long)")
    expect(desk.get_by_role("button", name="Sign off")).to_be_disabled()
    shot(user, "06-user-expired")
    shot(desk, "06-desk-expired")
    desk.set_viewport_size({"width": 375, "height": 760})
    desk.locator("#chat-ended").scroll_into_view_if_needed()
    expect(desk.locator("#chat-ended")).to_be_in_viewport()
    shot(desk, "07-desk-phone-width")
    assert desk.evaluate("document.documentElement.scrollWidth") <= 375
    assert not problems, problems


def test_an_agent_ends_a_chat_whose_user_is_gone(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    say(user, "hello")
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    say(user, "brb")
    waiting = desk.locator("#queue .queue-item")
    expect(waiting).to_have_count(1)
    waiting.get_by_role("button", name=re.compile("Pick up")).click()
    expect(desk.locator("#chat-state")).to_have_text("Live")
    desk.get_by_role("button", name="End chat").click()
    expect(user.locator(".so-notice-session_ended")).to_have_count(1)
    expect(desk.locator("#chat-ended")).to_contain_text("the agent closed it")
    expect(desk.get_by_role("button", name="End chat")).to_be_disabled()
    assert problems == []


def test_an_expiry_while_waiting_blames_no_agent(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, _ = contexts
    problems: list[str] = []
    user = user_context.new_page()
    watch_console(user, problems)
    user.goto(f"{server.http_url}/healthz")
    user.set_content(
        '<!doctype html><div id="help" style="height:600px"></div>'
        f'<script src="{server.http_url}/static/widget.js" data-bot="quick"'
        ' data-target="#help"></script>'
    )
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    say(user, "hi")
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    expect(user.locator(".so-notice-session_started")).to_have_count(1)
    # Nobody picks it up within the three-second session timeout.
    expired = user.locator(".so-notice-session_expired")
    expect(expired).to_have_text(
        "No agent could take your conversation in time. You are back with the assistant."
    )
    assert problems == []


def test_a_wrong_agent_token_is_refused_clearly(browser: Browser, server: Server) -> None:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"{server.http_url}/desk")
    page.get_by_label("Agent token").fill("not-a-token")
    page.get_by_label("Agent token").press("Enter")
    expect(page.locator("#signin-problem")).to_have_text(re.compile("not accepted"))
    expect(page.get_by_label("Agent token")).to_be_visible()
    context.close()


def test_transfer_and_reconnecting_without_a_reload(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    alice = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    bob = sign_in(agent_context, server, BOB_TOKEN, problems, "away")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    user.get_by_role("button", name="New chat").click()
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    say(user, "I need a person")
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    alice.locator("#queue .queue-item").get_by_role("button", name=re.compile("Pick up")).click()
    expect(user.locator(".so-notice-agent_joined")).to_have_text("Alice joined the conversation.")

    # Alice's colleagues are offered once online; she hands the chat to Bob by keyboard, and
    # he gets it with its transcript.
    transfer_to = alice.get_by_role("combobox", name="Transfer to")
    expect(transfer_to.locator("option", has_text="Bob")).to_have_count(0)
    # The conversation log is a live region: a desk frame must not redraw (and so have a
    # screen reader read out again) the entries already shown.
    alice.locator("#chat-log > li").first.evaluate("item => { item.dataset.kept = 'yes'; }")
    bob.get_by_role("radio", name="Online").check()
    expect(bob.locator("body")).to_have_attribute("data-presence", "online")
    expect(transfer_to.locator("option", has_text="Bob")).to_have_text("Bob (3 free)")
    expect(alice.locator("#chat-log > li[data-kept=yes]")).to_have_count(1)
    expect(alice.locator("#team [data-agent=bob]")).to_have_text(re.compile("Bob.*Online, 3 free"))
    shot(alice, "08-desk-transfer-choices")
    transfer_to.select_option(value="bob")
    transfer_to.press("Enter")
    expect(alice.locator("#chat-state")).to_have_text("Transferred")
    expect(bob.locator("#chat-state")).to_have_text("Live")
    expect(bob.locator("#chat-log .from-user", has_text="I need a person")).to_have_count(1)
    expect(user.locator(".so-banner")).to_have_text("You are chatting with Bob.")

    # The user's connection drops; what Bob says meanwhile arrives once it comes back.
    user_context.set_offline(True)
    user.evaluate("Switchover.widget.ws.close()")
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "offline")
    say(bob, "Bob here, are you still there?", "Reply to the user")
    user_context.set_offline(False)
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    expect(user.locator(".so-from-agent", has_text="still there?")).to_have_count(1)

    # Bob's connection drops; what the user says meanwhile reaches him once he is back.
    agent_context.set_offline(True)
    bob.evaluate("switchoverDesk.ws.close()")
    expect(bob.locator("#connection")).not_to_have_text("Connected")
    say(user, "Yes, still here")
    agent_context.set_offline(False)
    expect(bob.locator("#connection")).to_have_text("Connected")
    expect(bob.locator("#chat-log .from-user", has_text="still here")).to_have_count(1)
    assert_no_duplicates(bob, "#chat-log")
    assert_no_duplicates(user, ".so-log")

    # Back to the queue: Bob lets go, and the chat waits for the next agent again.
    bob.get_by_role("combobox", name="Transfer to").select_option(label="Back to the queue")
    bob.get_by_role("button", name="Transfer").click()
    expect(bob.locator("#chat-state")).to_have_text("Back in queue")
    expect(alice.locator("#queue .queue-item")).to_have_count(1)
    shot(alice, "08-desk-transferred")
    shot(bob, "08-desk-back-to-queue")
    assert not problems, problems


def test_the_widget_renders_images_links_and_files_and_never_script_links(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, _ = contexts
    problems: list[str] = []
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    say(user, "hello")
    expect(user.locator(".so-from-bot", has_text=GREETING)).to_have_count(1)
    conversation = user.locator(".so-widget").get_attribute("data-conversation")
    pixel = (
        "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRo"
        "PSI4MCIgaGVpZ2h0PSI0MCI+PHJlY3Qgd2lkdGg9IjgwIiBoZWlnaHQ9IjQwIiBmaWxsPSIjNGE4Ii8+PC9zdmc+"
    )
    messages = [
        {"content_type": "image", "content": {"url": pixel, "title": "A green box"}},
        {"content_type": "url", "content": {"url": "https://example.com/track", "text": "Track"}},
        {"content_type": "file", "content": {"url": "https://example.com/r.pdf", "title": "r.pdf"}},
        {"content_type": "text", "content": {"text": "See https://example.com/faq for more"}},
        {"content_type": "url", "content": {"url": "javascript:alert(1)", "text": "Evil"}},
    ]
    response = httpx.post(
        f"{server.http_url}/v1/bots/demo/messages",
        headers={"Authorization": f"Bearer {BOT_TOKEN}"},
        json={"conversation_id": conversation, "messages": messages},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    log = user.locator(".so-log")
    expect(log.get_by_role("img", name="A green box")).to_be_visible()
    expect(log.get_by_role("link", name="Track")).to_have_attribute(
        "href", "https://example.com/track"
    )
    expect(log.get_by_role("link", name="r.pdf")).to_have_attribute("download", "")
    expect(log.get_by_role("link", name="https://example.com/faq")).to_be_visible()
    expect(log.locator(".so-bubble", has_text="Evil")).to_have_count(1)
    assert log.locator("a", has_text="Evil").count() == 0
    shot(user, "09-user-attachments")
    assert not problems, problems


def test_the_widget_mounted_from_code_right_after_its_script_tag(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    """widget.js fetches the script it shares with the desk by itself; a page that calls
    Switchover.mount straight after the tag still gets a working widget, and the shared
    script is loaded once."""
    user_context, _ = contexts
    problems: list[str] = []
    user = user_context.new_page()
    watch_console(user, problems)
    user.goto(f"{server.http_url}/healthz")
    user.set_content(
        '<!doctype html><div id="help" style="height:500px"></div>'
        f'<script src="{server.http_url}/static/widget.js"></script>'
        "<script>window.chat = Switchover.mount(document.querySelector('#help'),"
        " {bot: 'demo', title: 'Help', storageKey: 'mounted-from-code'});</script>"
    )
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    expect(user.get_by_role("heading", name="Help")).to_be_visible()
    say(user, "hello")
    expect(user.locator(".so-from-bot", has_text=GREETING)).to_have_count(1)
    assert user.locator("script[src$='/static/switchover-common.js']").count() == 1
    user.evaluate("chat.destroy()")
    user.wait_for_function("chat.ws.readyState === WebSocket.CLOSED", timeout=WAIT_MS)
    assert not problems, problems


def routed_page(context: BrowserContext, problems: list[str]) -> tuple[Page, list[Any]]:
    """A page whose WebSockets reach the real server through Playwright's route, so a test
    can hand the page a frame the server would never send; the routes, newest last."""
    page = context.new_page()
    watch_console(page, problems)
    routes: list[Any] = []

    def forward(ws: Any) -> None:
        ws.connect_to_server()
        routes.append(ws)

    page.route_web_socket(re.compile(r"^wss?://"), forward)
    return page, routes


def test_a_user_message_shaped_like_a_notice_shows_as_the_users_text(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    # The server refuses notices from anyone but the system; should one still arrive (an
    # older server, a stored entry), the widget shows it as its sender's words, and it
    # changes nothing. The page talks to the real server through Playwright's WebSocket
    # route, which then hands it the entry a user could have shaped.
    user_context, _ = contexts
    problems: list[str] = []
    page, routes = routed_page(user_context, problems)
    page.goto(f"{server.http_url}/widget")
    widget = page.locator(".so-widget")
    expect(widget).to_have_attribute("data-connection", "online")
    say(page, "hello")
    expect(page.locator(".so-from-bot", has_text=GREETING)).to_have_count(1)
    conversation = widget.get_attribute("data-conversation")
    mode = widget.get_attribute("data-mode")
    forged = {
        "type": "entry",
        "conversation_id": conversation,
        "seq": 90,
        "at": 1764083695.2,
        "sender": "user",
        "content_type": "notice",
        "content": {"code": "agent_joined", "name": "Mallory", "text": "I am not the system"},
    }
    assert routes
    routes[-1].send(json.dumps(forged))
    log = page.locator(".so-log")
    expect(log.locator(".so-from-user", has_text="I am not the system")).to_have_count(1)
    assert log.locator(".so-notice").count() == 0
    assert widget.get_attribute("data-mode") == mode
    assert not problems, problems


def test_the_desk_shows_a_user_message_shaped_like_a_notice_as_the_users_text(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    # The desk's side of the same rule: such an entry is the user's words, and it does not
    # end the chat (a real session_ended notice would).
    user_context, agent_context = contexts
    problems: list[str] = []
    desk, routes = routed_page(agent_context, problems)
    desk.goto(f"{server.http_url}/desk")
    desk.get_by_label("Agent token").fill(ALICE_TOKEN)
    desk.get_by_role("button", name="Sign in").click()
    expect(desk.locator("#connection")).to_have_text("Connected")
    desk.get_by_role("radio", name="Away").check()
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    say(user, "hello")
    expect(user.locator(".so-from-bot", has_text=GREETING)).to_have_count(1)
    waiting = desk.locator("#queue .queue-item")
    before = waiting.count()  # earlier tests may have left sessions waiting
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    conversation = user.locator(".so-widget").get_attribute("data-conversation")
    expect(waiting).to_have_count(before + 1)
    waiting.last.get_by_role("button", name=re.compile("Pick up")).click()
    expect(desk.locator("#chat-state")).to_have_text("Live")
    forged = {
        "type": "entry",
        "conversation_id": conversation,
        "seq": 900,
        "at": 1764083695.2,
        "sender": "user",
        "content_type": "notice",
        "content": {"code": "session_ended", "reason": "user_ended", "text": "I ended nothing"},
    }
    assert routes
    routes[-1].send(json.dumps(forged))
    chat_log = desk.locator("#chat-log")
    expect(chat_log.locator(".from-user", has_text="I ended nothing")).to_have_count(1)
    assert chat_log.locator(".notice-session_ended").count() == 0
    expect(desk.locator("#chat-state")).to_have_text("Live")
    assert not problems, problems
