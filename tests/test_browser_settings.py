"""The administrators' settings page in a real headless Chromium, against a real
``switchover serve``: an administrator shortens a bot's session timeout on the page while a
user and an agent talk, and the session expires after the new timeout once someone writes
(its next deadline)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .test_browser import (
    WAIT_MS,
    Server,
    browser,
    open_widget,
    running_server,
    say,
    shot,
    sign_in,
)

pytestmark = pytest.mark.browser

from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

__all__ = ["browser"]  # the module's fixture, shared

AGENT_TOKEN = "carol-desk-token-for-settings"
ADMIN_TOKEN = "root-admin-token-for-settings"
CONFIG = f"""
secret = "browser-settings-test-secret"

[bots.demo]
adapter = "demo"

[agents.carol]
name = "Carol"
token = "{AGENT_TOKEN}"

[admins.root]
name = "Root"
token = "{ADMIN_TOKEN}"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real Switchover with an administrator, stopped with SIGTERM."""
    with running_server(tmp_path_factory.mktemp("switchover-settings"), CONFIG) as started:
        yield started


@pytest.fixture
def contexts(browser: Browser) -> Iterator[tuple[BrowserContext, BrowserContext]]:
    """A phone-sized context for the user, a desktop one for the agent and the admin."""
    user = browser.new_context(viewport={"width": 375, "height": 760}, locale="en-GB")
    staff = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-GB")
    for context in (user, staff):
        context.set_default_timeout(WAIT_MS)
    yield user, staff
    user.close()
    staff.close()


def open_settings(context: BrowserContext, server: Server, problems: list[str]) -> Page:
    """The settings page; its refused requests (401, 403, 422) are expected here, so only
    script errors count as problems."""
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"{page.url}: {error}"))
    page.goto(f"{server.http_url}/settings")
    return page


def test_a_session_timeout_set_on_the_page_applies_from_the_next_deadline(
    server: Server, contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, staff_context = contexts
    problems: list[str] = []
    desk = sign_in(staff_context, server, AGENT_TOKEN, problems, "online")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    say(user, "hi")
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    expect(user.locator(".so-notice-agent_joined")).to_have_count(1)
    expect(desk.locator("#chat-title")).to_be_visible()

    admin = open_settings(staff_context, server, problems)
    # An agent's token does not open the settings.
    admin.get_by_label("Administrator token").fill(AGENT_TOKEN)
    admin.get_by_role("button", name="Sign in").click()
    expect(admin.locator("#signin-problem")).to_have_text(
        "That token is not an administrator's. Agents' tokens open the desk, not this page."
    )
    admin.get_by_label("Administrator token").fill(ADMIN_TOKEN)
    admin.get_by_role("button", name="Sign in").click()
    expect(admin.locator("#who")).to_have_text("Signed in as Root")
    card = admin.get_by_role("region", name="Bot demo")
    timeout = card.get_by_role("textbox", name="Session timeout")
    expect(timeout).to_have_value("3600")

    # A value the config file would refuse is refused in its words, beside the field.
    timeout.fill("-3")
    card.get_by_role("button", name="Save").click()
    expect(card.locator("#bot-demo-session_timeout-error")).to_have_text("must be positive, got -3")
    expect(timeout).to_have_attribute("aria-invalid", "true")
    expect(timeout).to_be_focused()

    timeout.fill("2")
    card.get_by_role("button", name="Save").click()
    expect(card.get_by_role("status")).to_contain_text("Saved.")
    expect(card.locator(".last")).to_contain_text("Last change by Root (root)")
    expect(card.locator(".last")).to_contain_text("Session timeout 3600 → 2")
    expect(card.get_by_role("textbox", name="Session timeout")).to_have_value("2")
    expect(card.locator("#bot-demo-session_timeout-hint")).to_contain_text(
        "the config file says 3600"
    )
    shot(admin, "settings-01-changed")

    # The open session's deadline was armed under the hour; the next one, after this
    # message, is two seconds away.
    expect(user.locator(".so-notice-session_expired")).to_have_count(0)
    say(user, "are you still there?")
    expect(user.locator(".so-notice-session_expired")).to_have_count(1)

    # Back to the config file's value.
    card.get_by_role("button", name="Use the config file's values").click()
    expect(card.get_by_role("status")).to_have_text("Every value is the config file's again.")
    expect(card.get_by_role("textbox", name="Session timeout")).to_have_value("3600")
    admin.set_viewport_size({"width": 375, "height": 760})
    shot(admin, "settings-02-phone-width")
    assert admin.evaluate("document.documentElement.scrollWidth") <= 375
    assert not problems, problems
