"""The chat widget in a real headless Chromium: the greeting on open, quick replies, the queue
line, leaving the queue, "New chat" during a session, messages written offline, a 375 px
screen and the floating launcher.

It runs its own ``switchover serve`` (one agent with a single slot, so a queue forms behind
her), started and driven with the helpers of ``tests/test_browser.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import count
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from .test_browser import (
    WAIT_MS,
    Server,
    assert_no_duplicates,
    browser,  # noqa: F401 (a fixture)
    open_widget,
    routed_page,
    running_server,
    say,
    shot,
    sign_in,
    watch_console,
)

pytestmark = pytest.mark.browser

ALICE_TOKEN = "alice-widget-desk-token"
BOT_TOKEN = "widget-demo-bot-push-token"
CONFIG = f"""
secret = "browser-widget-test-secret"

[bots.demo]
adapter = "demo"
token = "{BOT_TOKEN}"

[agents.alice]
name = "Alice"
token = "{ALICE_TOKEN}"
capacity = 1
"""

# What the demo bot says (transport/bots/demo.py).
WELCOME = "Welcome! I'm Switchover's demo bot."
HOURS = "Our agents answer Monday to Friday"
HELP = 'I can tell you our opening "hours"'
LEFT_QUEUE = "All right, you are out of the queue."
THANKS = "Thanks for chatting with our team!"
NOBODY = "Nobody is available right now."

_keys = count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("switchover-widget"), CONFIG) as started:
        yield started


@pytest.fixture
def user_context(browser: Browser) -> Iterator[BrowserContext]:  # noqa: F811
    """A phone-sized user, 375 px wide."""
    context = browser.new_context(viewport={"width": 375, "height": 700}, locale="en-GB")
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


@pytest.fixture
def agent_context(browser: Browser) -> Iterator[BrowserContext]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1200, "height": 820}, locale="en-GB")
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


def mounted(page: Page, server: Server, **options: Any) -> Page:
    """The widget mounted from code on a page of the server's origin, with its own saved
    conversation (each call is another user), and ``options`` passed to Switchover.mount."""
    page.goto(f"{server.http_url}/healthz")
    settings = {"bot": "demo", "title": "Help", "storageKey": f"widget-test-{next(_keys)}"}
    settings.update(options)
    page.set_content(
        '<!doctype html><meta name="viewport" content="width=device-width">'
        '<div id="help" style="height:640px"></div>'
        f'<script src="{server.http_url}/static/widget.js"></script>'
        f"<script>window.chat = Switchover.mount(document.querySelector('#help'),"
        f" {json.dumps(settings)});</script>"
    )
    expect(page.locator(".so-widget")).to_have_attribute("data-connection", "online")
    return page


def new_user(context: BrowserContext, server: Server, problems: list[str], **options: Any) -> Page:
    page = context.new_page()
    watch_console(page, problems)
    return mounted(page, server, **options)


def ask_for_a_human(page: Page) -> None:
    expect(page.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    page.get_by_role("button", name="Talk to a human").click()
    expect(page.locator(".so-banner")).to_have_text(re.compile(r"You are number \d+ in the queue"))


def go_offline(context: BrowserContext, page: Page) -> None:
    context.set_offline(True)
    page.evaluate("chat.ws.close()")
    expect(page.locator(".so-widget")).to_have_attribute("data-connection", "offline")


def replayed_from_the_server(page: Page, server: Server) -> Page:
    """Mount the same conversation again with its saved transcript emptied: everything shown
    then came from the server, so it shows what the server stored."""
    key = page.evaluate(
        """() => {
          const key = chat.storageKey;
          const saved = JSON.parse(localStorage.getItem(key));
          localStorage.setItem(key, JSON.stringify({...saved, entries: [], last_seq: 0}));
          chat.destroy();
          return key;
        }"""
    )
    return mounted(page, server, storageKey=key)


def test_the_greeting_shows_on_open_with_the_human_choice(
    server: Server, user_context: BrowserContext
) -> None:
    problems: list[str] = []
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    log = user.locator(".so-log")
    # The bot speaks first: no need to type anything to see the way to a human.
    expect(log.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    expect(user.get_by_role("button", name="Talk to a human")).to_be_visible()
    expect(log.locator(".so-from-user")).to_have_count(0)
    shot(user, "widget-01-greeting")
    # A reload (or a resumed conversation) is not greeted again.
    before = assert_no_duplicates(user, ".so-log")
    user.reload()
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    expect(user.locator(".so-log > li")).to_have_count(len(before))
    expect(log.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    assert not problems, problems


def test_quick_replies_do_not_pile_up(server: Server, user_context: BrowserContext) -> None:
    problems: list[str] = []
    user = new_user(user_context, server, problems)
    log = user.locator(".so-log")
    choices = log.locator(".so-choice")
    expect(log.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    expect(choices).to_have_count(3)
    user.get_by_role("button", name="Opening hours").click()
    expect(log.locator(".so-from-bot", has_text=HOURS)).to_have_count(1)
    expect(log.locator(".so-question", has_text="Anything else?")).to_have_count(1)
    # Only the newest question has buttons; the first one's are gone.
    expect(choices).to_have_count(3)
    expect(log.locator(".so-entry").filter(has=user.locator(".so-choice"))).to_have_count(1)
    expect(log.locator(".so-entry").last.locator(".so-choice")).to_have_count(3)
    user.get_by_role("button", name="Help").click()
    expect(log.locator(".so-from-bot", has_text=HELP)).to_have_count(1)
    expect(log.locator(".so-question")).to_have_count(3)
    expect(choices).to_have_count(3)
    # Writing instead of clicking answers the question too: its buttons go.
    say(user, "qwertyuiop")
    expect(log.locator(".so-from-user", has_text="qwertyuiop")).to_have_count(1)
    expect(log.locator(".so-question")).to_have_count(4)
    expect(choices).to_have_count(3)
    expect(log.locator(".so-entry").last.locator(".so-choice")).to_have_count(3)
    shot(user, "widget-02-quick-replies")
    assert not problems, problems


def test_the_queue_line_says_the_place_the_wait_and_when_nobody_is_there(
    server: Server, user_context: BrowserContext, agent_context: BrowserContext
) -> None:
    problems: list[str] = []
    first = new_user(user_context, server, problems)
    ask_for_a_human(first)
    expect(first.locator(".so-banner")).to_have_text("You are number 1 in the queue.")
    expect(first.locator(".so-wait")).to_contain_text(NOBODY)
    expect(first.get_by_role("button", name="Leave the queue")).to_be_visible()
    shot(first, "widget-03-queue-nobody")

    # Alice is there but away: still nobody available. She picks two chats up by hand,
    # which sets the pace of the queue.
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    waiting = desk.locator("#queue .queue-item")
    expect(waiting).to_have_count(1)
    waiting.get_by_role("button", name=re.compile("Pick up")).click()
    expect(first.locator(".so-notice-agent_joined")).to_have_count(1)
    second = new_user(user_context, server, problems)
    ask_for_a_human(second)
    expect(second.locator(".so-banner")).to_have_text("You are number 1 in the queue.")
    expect(second.locator(".so-wait")).to_contain_text(NOBODY)
    desk.get_by_role("button", name="End chat").click()
    expect(first.locator(".so-notice-session_ended")).to_have_count(1)
    waiting.get_by_role("button", name=re.compile("Pick up")).click()
    expect(second.locator(".so-notice-agent_joined")).to_have_count(1)

    # Alice goes online, busy with her one slot: the next user waits with an estimate.
    desk.get_by_role("radio", name="Online").check()
    third = new_user(user_context, server, problems)
    ask_for_a_human(third)
    expect(third.locator(".so-banner")).to_have_text("You are number 1 in the queue.")
    expect(third.locator(".so-wait")).to_have_text(re.compile(r"^Estimated wait: "))
    expect(third.locator(".so-wait")).not_to_contain_text(NOBODY)
    shot(third, "widget-04-queue-estimate")
    # She goes offline: the waiting user hears at once that nobody is available.
    desk.get_by_role("radio", name="Offline").check()
    expect(third.locator(".so-wait")).to_contain_text(NOBODY)
    expect(third.locator(".so-banner")).to_have_text("You are number 1 in the queue.")

    # Leaving the queue: the widget says so, and the bot blames no agent.
    third.get_by_role("button", name="Leave the queue").click()
    expect(third.locator(".so-notice-session_ended")).to_have_text("You left the queue.")
    expect(third.locator(".so-from-bot", has_text=LEFT_QUEUE)).to_have_count(1)
    expect(third.locator(".so-queue")).to_be_hidden()
    expect(third.locator(".so-leave")).to_be_hidden()
    second.get_by_role("button", name="New chat").click()
    second.get_by_role("button", name="End it and start a new chat").click()
    expect(desk.locator("#chat-state")).to_have_text("Ended")
    assert not problems, problems


def test_new_chat_during_a_session_asks_first_and_ends_it_for_the_agent(
    server: Server, user_context: BrowserContext, agent_context: BrowserContext
) -> None:
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user)
    say(user, "Where is my parcel?")
    waiting = desk.locator("#queue .queue-item")
    expect(waiting).to_have_count(1)
    waiting.get_by_role("button", name=re.compile("Pick up")).click()
    expect(user.locator(".so-banner")).to_have_text("You are chatting with Alice.")
    old = user.locator(".so-widget").get_attribute("data-conversation")

    # Asked first, in the widget; "Keep this chat" (or Escape) changes nothing.
    user.get_by_role("button", name="New chat").click()
    dialog = user.get_by_role("alertdialog", name="Start a new chat?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("This ends your conversation with Alice.")
    expect(dialog.get_by_role("button", name="Keep this chat")).to_be_focused()
    shot(user, "widget-05-new-chat-confirm")
    dialog.press("Escape")
    expect(dialog).to_be_hidden()
    expect(user.get_by_role("button", name="New chat")).to_be_focused()
    user.get_by_role("button", name="New chat").click()
    dialog.get_by_role("button", name="Keep this chat").click()
    expect(dialog).to_be_hidden()
    expect(desk.locator("#chat-state")).to_have_text("Live")

    # Confirmed: the session ends as the user ending it, the agent sees it, a new chat starts.
    user.get_by_role("button", name="New chat").click()
    dialog.get_by_role("button", name="End it and start a new chat").click()
    expect(desk.locator("#chat-state")).to_have_text("Ended")
    expect(user.locator(".so-widget")).not_to_have_attribute("data-conversation", old or "")
    expect(user.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    expect(user.locator(".so-from-user")).to_have_count(0)
    expect(user.locator(".so-queue")).to_be_hidden()
    assert not problems, problems


def test_a_message_written_offline_is_sent_once_the_connection_is_back(
    server: Server, user_context: BrowserContext
) -> None:
    problems: list[str] = []
    user = new_user(user_context, server, problems)
    expect(user.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    go_offline(user_context, user)
    say(user, "written while offline")
    pending = user.locator(".so-pending", has_text="written while offline")
    expect(pending).to_contain_text("Sending…")
    shot(user, "widget-06-sending")
    user_context.set_offline(False)
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    sent = user.locator(".so-from-user[data-seq]", has_text="written while offline")
    expect(sent).to_have_count(1)
    expect(pending).to_have_count(0)
    # The bot answered it, once.
    expect(user.locator(".so-from-bot", has_text="didn't get that")).to_have_count(1)
    replayed_from_the_server(user, server)
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    expect(user.locator(".so-from-bot", has_text="didn't get that")).to_have_count(1)
    expect(sent).to_have_count(1)
    assert_no_duplicates(user, ".so-log")
    assert not problems, problems


def test_a_message_whose_ack_was_lost_is_resent_and_stored_once(
    server: Server, user_context: BrowserContext
) -> None:
    # The connection drops right after the message left, before its ack: the widget resends
    # it with the same id on the next connection, racing the replay of what was stored.
    problems: list[str] = []
    page, _ = routed_page(user_context, problems)
    dropped: list[str] = []

    def cut_after_sending(ws: Any) -> None:
        server_side = ws.connect_to_server()

        def forward(message: str | bytes) -> None:
            server_side.send(message)
            if isinstance(message, str) and "race the ack" in message and not dropped:
                dropped.append(message)
                ws.close(code=4000, reason="cut")

        ws.on_message(forward)

    page.route_web_socket(re.compile(r"^wss?://"), cut_after_sending)
    mounted(page, server)
    expect(page.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    say(page, "race the ack")
    sent = page.locator(".so-from-user[data-seq]", has_text="race the ack")
    expect(sent).to_have_count(1)
    assert len(dropped) == 1
    expect(page.locator(".so-pending")).to_have_count(0)
    replayed_from_the_server(page, server)
    expect(page.locator(".so-widget")).to_have_attribute("data-connection", "online")
    expect(page.locator(".so-from-bot", has_text="didn't get that")).to_have_count(1)
    expect(sent).to_have_count(1)
    assert not problems, problems


def test_a_message_not_sent_in_time_is_marked_and_retried(
    server: Server, user_context: BrowserContext
) -> None:
    problems: list[str] = []
    user = new_user(user_context, server, problems, sendTimeout=1000)
    expect(user.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    go_offline(user_context, user)
    say(user, "please retry me")
    failed = user.locator(".so-not-sent", has_text="please retry me")
    expect(failed).to_contain_text("Not sent")
    shot(user, "widget-07-not-sent")
    user_context.set_offline(False)
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    # Not sent by itself once back: the user decides.
    expect(failed).to_have_count(1)
    failed.get_by_role("button", name="Retry sending this message").click()
    expect(user.locator(".so-from-user[data-seq]", has_text="please retry me")).to_have_count(1)
    expect(user.locator(".so-pending")).to_have_count(0)
    expect(user.get_by_role("textbox", name="Message", exact=True)).to_be_focused()
    replayed_from_the_server(user, server)
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    expect(user.locator(".so-from-bot", has_text="didn't get that")).to_have_count(1)
    expect(user.locator(".so-from-user[data-seq]", has_text="please retry me")).to_have_count(1)
    assert not problems, problems


def test_the_widget_fits_a_375_px_screen(server: Server, user_context: BrowserContext) -> None:
    problems: list[str] = []
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user)
    user.get_by_role("button", name="New chat").click()
    expect(user.get_by_role("alertdialog")).to_be_visible()
    say(user, "A rather long message without spaces: " + "x" * 120)
    shot(user, "widget-08-375px")
    assert user.evaluate("document.documentElement.scrollWidth") <= 375
    widget = user.locator(".so-widget")
    assert widget.evaluate("w => w.scrollWidth <= w.clientWidth")
    for button in user.locator(".so-widget button:visible").all():
        box = button.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, button.text_content()
        assert box["height"] >= 32, button.text_content()
    user.get_by_role("button", name="Keep this chat").click()
    user.get_by_role("button", name="Leave the queue").click()
    expect(user.locator(".so-notice-session_ended")).to_have_count(1)
    assert not problems, problems


def test_the_floating_launcher_opens_the_chat_and_counts_unread_messages(
    server: Server, user_context: BrowserContext
) -> None:
    problems: list[str] = []
    user = user_context.new_page()
    watch_console(user, problems)
    user.goto(f"{server.http_url}/healthz")
    user.set_content(
        '<!doctype html><meta name="viewport" content="width=device-width">'
        f'<script src="{server.http_url}/static/widget.js" data-bot="demo"></script>'
    )
    launcher = user.get_by_role("button", name="Open chat", exact=True)
    expect(launcher).to_be_visible()
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    box = launcher.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 375
    assert abs(box["width"] - box["height"]) < 1  # round, not a pill
    launcher.click()
    panel = user.locator(".so-floating-panel")
    expect(panel).to_be_visible()
    # Greeted when opened, not before.
    expect(panel.locator(".so-from-bot", has_text=WELCOME)).to_have_count(1)
    expect(user.get_by_role("textbox", name="Message", exact=True)).to_be_focused()
    assert user.evaluate("document.documentElement.scrollWidth") <= 375
    user.get_by_role("button", name="Close chat").click()
    expect(panel).to_be_hidden()

    # The bot writes twice while the window is closed.
    conversation = panel.get_attribute("data-conversation")
    response = httpx.post(
        f"{server.http_url}/v1/bots/demo/messages",
        headers={"Authorization": f"Bearer {BOT_TOKEN}"},
        json={
            "conversation_id": conversation,
            "messages": [
                {"content_type": "text", "content": {"text": "Your parcel has shipped."}},
                {"content_type": "text", "content": {"text": "It arrives tomorrow."}},
            ],
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    unread = user.get_by_role("button", name="Open chat, 2 unread")
    expect(unread).to_be_visible()
    expect(user.locator(".so-unread")).to_have_text("2")
    shot(user, "widget-09-launcher-unread")
    unread.press("Enter")
    expect(panel.locator(".so-from-bot", has_text="arrives tomorrow")).to_be_visible()
    expect(user.locator(".so-unread")).to_be_hidden()
    user.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(user.get_by_role("button", name="Open chat", exact=True)).to_be_focused()
    assert not problems, problems
