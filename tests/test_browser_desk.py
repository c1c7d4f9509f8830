"""The agent desk page in a real headless Chromium: what its lists show, the user's
connection, the tab title, sound and desktop notifications, canned responses, agents' names,
endings, Pick up while offline, switching servers and agents in one tab, and scrolling.

A real ``switchover serve`` runs as a subprocess with its own config (canned responses for
one bot); the browser, the console watch and the page helpers are those of
``tests/test_browser.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.test_browser import (
    ALICE_TOKEN,
    BOB_TOKEN,
    Server,
    browser,
    contexts,
    open_widget,
    running_server,
    say,
    shot,
    sign_in,
    watch_console,
)

pytestmark = pytest.mark.browser
__all__ = ["browser", "contexts"]  # fixtures shared with tests/test_browser.py

REPLY = "Reply to the user"
CONFIG = f"""
secret = "browser-desk-test-secret"

[bots.demo]
adapter = "demo"
[[bots.demo.settings.canned_responses]]
shortcut = "hello"
text = "Hi, thanks for waiting! How can I help?"
[[bots.demo.settings.canned_responses]]
shortcut = "refund"
text = "Refunds take five working days."

[agents.alice]
name = "Alice"
token = "{ALICE_TOKEN}"

[agents.bob]
name = "Bob"
token = "{BOB_TOKEN}"
"""
CAROL_TOKEN = "carol-other-server-token"
OTHER_CONFIG = f"""
secret = "browser-desk-other-secret"

[bots.demo]
adapter = "demo"

[agents.carol]
name = "Carol"
token = "{CAROL_TOKEN}"
"""

# Replaces the Notification API: records what the page shows and grants permission when
# asked, so desktop notifications can be observed in a headless browser. Also makes the page's
# visibility controllable (window.__setHidden) and counts the tones played.
STUBS = """
(() => {
  window.__notifications = [];
  window.__permissionAsked = 0;
  class FakeNotification {
    constructor(title, options) {
      window.__notifications.push({title, body: (options || {}).body || ""});
      this.onclick = null;
    }
    close() {}
    static requestPermission() {
      window.__permissionAsked += 1;
      FakeNotification.permission = "granted";
      return Promise.resolve("granted");
    }
  }
  FakeNotification.permission = "default";
  window.Notification = FakeNotification;
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", {get: () => hidden, configurable: true});
  Object.defineProperty(Document.prototype, "visibilityState", {
    get: () => (hidden ? "hidden" : "visible"),
    configurable: true,
  });
  const realHasFocus = Document.prototype.hasFocus;
  Document.prototype.hasFocus = function () { return hidden ? false : realHasFocus.call(this); };
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
  window.__tones = 0;
  class FakeAudioContext {
    constructor() { this.currentTime = 0; this.destination = {}; }
    createOscillator() {
      const tone = {frequency: {}, connect: (next) => next, stop() {}};
      tone.start = () => { window.__tones += 1; };
      return tone;
    }
    createGain() {
      const gain = {setValueAtTime() {}, exponentialRampToValueAtTime() {}};
      return {gain, connect: (next) => next};
    }
    resume() { return Promise.resolve(); }
  }
  window.AudioContext = FakeAudioContext;
})();
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("switchover-desk"), CONFIG) as running:
        yield running


def ask_for_a_human(user: Page, first: str) -> None:
    """The user says ``first`` to the bot, then clicks its Talk to a human button."""
    say(user, first)
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    # Queued, or straight to an agent who is online.
    expect(user.locator(".so-widget")).to_have_attribute("data-mode", re.compile("queued|live"))


def pick_up(desk: Page) -> None:
    desk.locator("#queue .queue-item").get_by_role("button", name=re.compile("Pick up")).click()
    expect(desk.locator("#chat-state")).to_have_text("Live")


def stubbed_desk(
    context: BrowserContext, server: Server, token: str, problems: list[str], presence: str
) -> Page:
    context.add_init_script(STUBS)
    return sign_in(context, server, token, problems, presence)


def widget_with_name(
    context: BrowserContext, server: Server, name: str, problems: list[str]
) -> Page:
    """The widget page, its conversation opened with the user's ``name`` in its metadata (set
    on the page's widget tag before the widget reads it, at DOMContentLoaded)."""
    page = context.new_page()
    watch_console(page, problems)
    page.add_init_script(
        "document.addEventListener('DOMContentLoaded', () => {"
        " document.querySelector('script[data-bot]').dataset.metadata = "
        f"JSON.stringify({{name: {json.dumps(name)}}}); }});"
    )
    page.goto(f"{server.http_url}/widget")
    expect(page.locator(".so-widget")).to_have_attribute("data-connection", "online")
    return page


def test_the_lists_show_the_users_name_last_message_and_its_time(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    user = widget_with_name(user_context, server, "Uma Ruiz", problems)
    ask_for_a_human(user, "hello")
    say(user, "My parcel never arrived and I have been waiting for two weeks already, please help")
    waiting = desk.locator("#queue .queue-item")
    expect(waiting).to_have_count(1)
    expect(waiting.locator(".queue-name")).to_have_text("Uma Ruiz")
    expect(waiting.locator(".last-message")).to_contain_text("My parcel never arrived")
    expect(waiting.locator(".last-time")).to_have_text(re.compile(r"^\d\d:\d\d"))
    shot(desk, "desk-01-queue-with-names")

    pick_up(desk)
    tab = desk.locator("#chats .chat-tab").first
    expect(tab.locator(".chat-name")).to_have_text("Uma Ruiz")
    expect(tab.locator(".last-message")).to_contain_text("My parcel never arrived")
    say(user, "Are you there?")
    expect(tab.locator(".last-message")).to_have_text("Are you there?")
    expect(tab.locator(".last-time")).to_have_text(re.compile(r"^\d\d:\d\d"))
    say(desk, "Yes, looking now", REPLY)
    expect(tab.locator(".last-message")).to_have_text("You: Yes, looking now")
    desk.get_by_role("button", name="End chat").click()
    assert not problems, problems


def test_the_agent_sees_whether_the_user_is_connected_and_can_end_the_chat(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user, "hi")
    pick_up(desk)
    presence = desk.locator("#chat-user")
    expect(presence).to_have_text(re.compile(r"^User connected"))
    expect(desk.locator("#chats .chat-tab .user-state")).to_have_text("Connected")

    user.close()
    expect(presence).to_have_text(re.compile(r"^User left (just now|\d+ min ago)$"))
    expect(desk.locator("#chats .chat-tab .user-state")).to_have_text("Left")
    shot(desk, "desk-02-user-left")
    desk.get_by_role("button", name="End chat").click()
    expect(desk.locator("#chat-log .notice-session_ended")).to_have_text("Alice ended the session.")
    expect(desk.locator("#chat-state")).to_have_text("Ended")
    assert not problems, problems


def test_title_count_sound_and_desktop_notifications_while_hidden(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = stubbed_desk(agent_context, server, ALICE_TOKEN, problems, "online")
    expect(desk.get_by_role("checkbox", name="Sound")).to_be_checked()
    # Permission is asked on a gesture (signing in, choosing a presence), never on its own.
    assert desk.evaluate("window.__permissionAsked") >= 1
    expect(desk).to_have_title("Switchover desk")

    desk.evaluate("window.__setHidden(true)")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user, "hi")
    # Online: the chat is assigned at once; hidden, the title counts it and a notification says so.
    expect(desk).to_have_title("(1) Switchover desk")
    desk.wait_for_function("window.__notifications.length >= 1")
    first = desk.evaluate("window.__notifications[0]")
    assert first["title"] == "New chat assigned"
    say(user, "Is anyone there?")
    expect(desk).to_have_title("(2) Switchover desk")
    desk.wait_for_function("window.__notifications.some(n => n.body === 'Is anyone there?')")
    assert desk.evaluate("window.__tones") >= 2

    # Back to the page: the open chat counts as read.
    desk.evaluate("window.__setHidden(false)")
    expect(desk).to_have_title("Switchover desk")
    shown = desk.evaluate("window.__notifications.length")
    say(user, "hello?")
    expect(desk.locator("#chat-log .from-user", has_text="hello?")).to_have_count(1)
    expect(desk).to_have_title("Switchover desk")
    assert desk.evaluate("window.__notifications.length") == shown
    desk.get_by_role("button", name="End chat").click()
    assert not problems, problems


def test_the_sound_switch_is_remembered(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = stubbed_desk(agent_context, server, ALICE_TOKEN, problems, "away")
    sound = desk.get_by_role("checkbox", name="Sound")
    expect(sound).to_be_checked()
    sound.uncheck()
    desk.reload()
    expect(desk.locator("#connection")).to_have_text("Connected")
    expect(sound).not_to_be_checked()
    desk.evaluate("window.__setHidden(true)")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user, "hi")
    expect(desk.locator("#queue .queue-item")).to_have_count(1)
    expect(desk).to_have_title("(1) Switchover desk")
    assert desk.evaluate("window.__tones") == 0
    sound.check()
    desk.reload()
    expect(sound).to_be_checked()
    desk.locator("#queue .queue-item").get_by_role("button", name=re.compile("Pick up")).click()
    desk.get_by_role("button", name="End chat").click()
    assert not problems, problems


def test_canned_responses_are_found_with_a_slash_and_inserted(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user, "hi")
    pick_up(desk)
    reply = desk.get_by_role("textbox", name=REPLY)
    reply.focus()
    reply.press("/")
    listbox = desk.get_by_role("listbox", name="Canned responses")
    expect(listbox).to_be_visible()
    expect(reply).to_have_attribute("aria-expanded", "true")
    options = listbox.get_by_role("option")
    expect(options).to_have_count(3)
    expect(options.nth(2)).to_contain_text("/signoff")
    shot(desk, "desk-03-canned-responses")

    # Filtering as the agent types, then arrows and Enter.
    reply.press_sequentially("re")
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text("/refund")
    reply.fill("")
    reply.press_sequentially("/")
    reply.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    expect(reply).to_have_attribute(
        "aria-activedescendant", options.nth(1).get_attribute("id") or "x"
    )
    reply.press("ArrowUp")
    expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    reply.press("Enter")
    expect(listbox).to_be_hidden()
    expect(reply).to_have_value("Hi, thanks for waiting! How can I help?")
    expect(user.locator(".so-from-agent")).to_have_count(0)  # inserted, not sent
    reply.press("Enter")
    expect(user.locator(".so-from-agent", has_text="thanks for waiting")).to_have_count(1)

    # Escape closes the list and keeps what was typed.
    reply.press_sequentially("/ref")
    expect(listbox).to_be_visible()
    reply.press("Escape")
    expect(listbox).to_be_hidden()
    expect(reply).to_have_value("/ref")
    expect(reply).to_have_attribute("aria-expanded", "false")

    # The sign-off one offers the user the end button.
    reply.fill("")
    reply.press_sequentially("/signoff")
    reply.press("Enter")
    expect(reply).to_have_value(re.compile(r"LIVECHAT_SESSION_END$"))
    reply.press("Enter")
    expect(user.get_by_role("button", name="End conversation")).to_be_visible()
    user.get_by_role("button", name="End conversation").click()
    expect(desk.locator("#chat-state")).to_have_text("Ended")
    assert not problems, problems


def test_system_lines_name_the_agents_and_endings_are_not_errors(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    alice = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    bob = sign_in(agent_context, server, BOB_TOKEN, problems, "online")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    # Bob is online: the chat goes to him.
    ask_for_a_human(user, "hi")
    expect(user.locator(".so-notice-agent_joined")).to_have_text("Bob joined the conversation.")
    expect(bob.locator("#chat-log .notice-agent_joined")).to_have_text(
        "Bob joined the conversation."
    )
    alice.get_by_role("radio", name="Online").check()
    transfer_to = bob.get_by_role("combobox", name="Transfer to")
    expect(transfer_to.locator("option", has_text="Alice")).to_have_count(1)
    transfer_to.select_option(value="alice")
    bob.get_by_role("button", name="Transfer").click()
    expect(bob.locator("#chat-log .notice-transferred")).to_have_text("Transferred to Alice.")
    expect(user.locator(".so-notice-agent_joined").last).to_have_text(
        "Alice joined the conversation."
    )
    expect(alice.locator("#chat-state")).to_have_text("Live")
    say(alice, "Alice here", REPLY)

    # Alice goes back to the queue; Bob is away so nobody takes it: the lines name Alice.
    bob.get_by_role("radio", name="Away").check()
    alice.get_by_role("combobox", name="Transfer to").select_option(label="Back to the queue")
    alice.get_by_role("button", name="Transfer").click()
    expect(user.locator(".so-notice-agent_left")).to_contain_text("Alice left")
    alice.get_by_role("radio", name="Away").check()
    pick_up(alice)
    # The user ends the conversation: an ordinary ending, an information line, not an alert.
    say(user, "bye now")
    alice.get_by_role("button", name="Sign off").click()
    user.get_by_role("button", name="End conversation").click()
    ended = alice.locator("#chat-log .notice-session_ended").last
    expect(ended).to_have_text("The user ended the session.")
    expect(user.locator(".so-notice-session_ended").last).to_have_text(
        "The conversation with Alice has ended."
    )
    expect(alice.locator("#chat-ended")).to_be_visible()
    for page in (alice, bob):
        expect(page.locator("#alert")).to_be_hidden()
    colours = alice.evaluate(
        """() => [document.querySelector('#chat-log .notice-session_ended'),
                  document.querySelector('#chat-ended')].map(n => getComputedStyle(n).color)"""
    )
    bad = alice.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--bad')")
    assert all(colour != "rgb(163, 38, 15)" for colour in colours), (colours, bad)
    assert not problems, problems


def test_pick_up_is_disabled_while_offline(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "offline")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user, "hi")
    button = desk.locator("#queue .queue-item").get_by_role("button", name=re.compile("Pick up"))
    expect(button).to_be_disabled()
    expect(desk.locator("#queue-offline")).to_be_visible()
    expect(desk.locator("#queue-offline")).to_contain_text("You are offline")
    shot(desk, "desk-04-offline")
    desk.get_by_role("radio", name="Away").check()
    expect(button).to_be_enabled()
    expect(desk.locator("#queue-offline")).to_be_hidden()
    button.click()
    expect(desk.locator("#chat-state")).to_have_text("Live")
    desk.get_by_role("button", name="End chat").click()
    assert not problems, problems


def test_switching_servers_and_agents_in_one_tab_raises_no_error(
    server: Server,
    contexts: tuple[BrowserContext, BrowserContext],
    tmp_path: Path,
) -> None:
    """The same tab signs in to one server, then finds the desk's address answered by another
    (a server replaced behind the same address) that refuses the old token; the agent signs
    in there with another token and picks a chat up; then signs out and in as someone else."""
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user, "first server")
    pick_up(desk)
    expect(desk.locator("#chats .chat-tab")).to_have_count(1)
    desk.get_by_role("button", name="End chat").click()
    expect(desk.locator("#chat-state")).to_have_text("Ended")

    with running_server(tmp_path, OTHER_CONFIG) as other:
        other_config = agent_context.request.get(f"{other.http_url}/config.json").text()
        desk.route(
            f"{server.http_url}/config.json",
            lambda route: route.fulfill(
                status=200, content_type="application/json", body=other_config
            ),
        )
        desk.evaluate("switchoverDesk.ws.close()")
        expect(desk.locator("#signin-problem")).to_contain_text("token was not accepted")
        desk.get_by_label("Agent token").fill(CAROL_TOKEN)
        desk.get_by_role("button", name="Sign in").click()
        expect(desk.locator("#who")).to_have_text("Signed in as Carol")
        desk.get_by_role("radio", name="Away").check()
        expect(desk.locator("#chats .chat-tab")).to_have_count(0)
        other_user = open_widget(user_context, f"{other.http_url}/widget", problems)
        ask_for_a_human(other_user, "second server")
        pick_up(desk)
        expect(desk.locator("#chat-log .from-user", has_text="second server")).to_have_count(1)
        desk.get_by_role("button", name="End chat").click()
        expect(desk.locator("#chat-state")).to_have_text("Ended")

        # Sign out, and back to the first server as Bob.
        desk.get_by_role("button", name="Sign out").click()
        desk.unroute(f"{server.http_url}/config.json")
        desk.get_by_label("Agent token").fill(BOB_TOKEN)
        desk.get_by_role("button", name="Sign in").click()
        expect(desk.locator("#who")).to_have_text("Signed in as Bob")
        expect(desk.locator("#chats .chat-tab")).to_have_count(0)
        desk.get_by_role("radio", name="Online").check()
        expect(desk.locator("body")).to_have_attribute("data-presence", "online")
        desk.evaluate("switchoverDesk.ws.close()")
        expect(desk.locator("#connection")).to_have_text("Connected")
        # The first server's chat is Alice's (her grace period), not Bob's.
        expect(desk.locator("#chats .chat-tab")).to_have_count(0)
        other_user.close()
    user.close()
    assert not problems, problems


def test_an_opened_conversation_shows_its_newest_message(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    ask_for_a_human(user, "hi")
    for number in range(1, 31):
        say(user, f"line {number} of a long story")
    expect(user.locator(".so-from-user", has_text="line 30 of")).to_have_count(1)
    pick_up(desk)
    log = desk.locator("#chat-log")
    last = log.locator(".from-user", has_text="line 30 of")
    expect(last).to_be_in_viewport()
    at_bottom = "log => log.scrollHeight - log.scrollTop - log.clientHeight < 4"
    assert log.evaluate("log => log.scrollHeight > log.clientHeight")
    assert log.evaluate(at_bottom)

    # After looking elsewhere and coming back, the chat opens at its newest message again.
    # A second user, in a browser of their own.
    assert user_context.browser is not None
    second = user_context.browser.new_context(viewport={"width": 375, "height": 760})
    user2 = open_widget(second, f"{server.http_url}/widget", problems)
    ask_for_a_human(user2, "another one")
    pick_up(desk)
    say(user, "line 31, while you were away")
    expect(desk.locator("#chats .badge")).to_have_text("1")
    log.evaluate("log => { log.scrollTop = 0; }")
    desk.locator("#chats .chat-tab", has_text="line 31").click()
    expect(log.locator(".from-user", has_text="line 31")).to_be_in_viewport()
    assert log.evaluate(at_bottom)
    for _ in range(2):
        desk.get_by_role("button", name="End chat").click()
        expect(desk.locator("#chat-state")).to_have_text("Ended")
        desk.get_by_role("button", name="Close").click()
    second.close()
    assert not problems, problems
