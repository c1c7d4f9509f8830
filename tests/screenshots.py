"""Screenshots of the widget (desktop and 375 px), the desk and the settings page at the main
steps of a handoff, for docs/web.md.

Run from the repository's root: ``.venv/bin/python -m tests.screenshots`` (Debian's Chromium
and the test extras installed, as ``bash scripts/test.sh`` does). It starts a real
``switchover serve`` on free ports with a data directory of its own, drives the pages in
headless Chromium as a user, an agent and an administrator would, and writes the pictures to
``docs/images/`` (or the folder given as the only argument). Each step waits on what the page
shows, as the browser tests do, so a picture never shows a page half drawn.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from .test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    WAIT_MS,
    open_widget,
    running_server,
    say,
    sign_in,
)
from .test_browser_attachments import png

ALICE_TOKEN = "alice-screenshots-token"
ADMIN_TOKEN = "admin-screenshots-token"
CONFIG = f"""
secret = "screenshots-secret"

[bots.demo]
adapter = "demo"
[bots.demo.settings]
end_message = "Alice has finished helping you. Anything else? Otherwise click below."
end_button_label = "Close this chat"
[[bots.demo.settings.canned_responses]]
shortcut = "hello"
text = "Hi, thanks for waiting! How can I help?"
[[bots.demo.settings.canned_responses]]
shortcut = "parcel"
text = "Parcels usually arrive within three working days."

[agents.alice]
name = "Alice"
token = "{ALICE_TOKEN}"

[admins.root]
name = "Robin"
token = "{ADMIN_TOKEN}"
"""
REPLY = "Reply to the user"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 720}


def take(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"))
    print(f"wrote {folder / name}.png")


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="switchover-screenshots-") as home,
        running_server(Path(home), CONFIG) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)

        def context(viewport: dict[str, int]) -> BrowserContext:
            made = browser.new_context(viewport=viewport, locale="en-GB")  # type: ignore[arg-type]
            made.set_default_timeout(WAIT_MS)
            return made

        # The widget on a desktop site: the launcher, then the window open with the greeting.
        site = context(DESKTOP).new_page()
        site.goto(f"{server.http_url}/healthz")
        site.set_content(
            '<!doctype html><meta name="viewport" content="width=device-width">'
            "<h1>Example shop</h1><p>Everything you need, delivered.</p>"
            f'<script src="{server.http_url}/static/widget.js" data-bot="demo"></script>'
        )
        launcher = site.get_by_role("button", name="Open chat", exact=True)
        expect(launcher).to_be_visible()
        take(site, folder, "widget-desktop-launcher")
        launcher.click()
        expect(site.locator(".so-choice", has_text="Talk to a human")).to_be_visible()
        take(site, folder, "widget-desktop-greeting")

        # A user on a phone: the greeting, nobody available, then the queue with an agent.
        user = open_widget(context(PHONE), f"{server.http_url}/widget", problems)
        expect(user.locator(".so-choice", has_text="Talk to a human")).to_be_visible()
        take(user, folder, "widget-phone-greeting")
        user.locator(".so-choice", has_text="Talk to a human").last.click()
        expect(user.locator(".so-wait")).to_contain_text("Nobody is available")
        say(user, "My parcel never arrived")
        take(user, folder, "widget-phone-nobody-available")

        # The agent signs in: the queue shows who waits and what they wrote.
        agent = context(DESKTOP)
        desk_page = agent.new_page()
        desk_page.goto(f"{server.http_url}/desk")
        take(desk_page, folder, "desk-sign-in")
        desk_page.close()
        desk = sign_in(agent, server, ALICE_TOKEN, problems, "away")
        expect(desk.locator("#queue .queue-item")).to_have_count(1)
        expect(user.locator(".so-banner")).to_contain_text("in the queue")
        take(desk, folder, "desk-queue")
        desk.locator("#queue .queue-item").get_by_role("button", name=re.compile("Pick up")).click()
        expect(desk.locator("#chat-state")).to_have_text("Live")

        # A live chat: a canned response, a picture from the user, replies both ways.
        box = desk.get_by_role("textbox", name=REPLY)
        box.press_sequentially("/par")
        expect(desk.get_by_role("listbox", name="Canned responses")).to_be_visible()
        take(desk, folder, "desk-canned-responses")
        box.press("Enter")
        box.press("Enter")
        expect(user.locator(".so-from-agent", has_text="three working days")).to_have_count(1)
        with user.expect_file_chooser() as chooser:
            user.get_by_role("button", name="Attach a file").click()
        chooser.value.set_files(
            files=[{"name": "label.png", "mimeType": "image/png", "buffer": png(160, 90)}]
        )
        expect(desk.locator("#chat-log .from-user img.attachment-thumb")).to_be_visible()
        say(user, "Here is the label on the box.")
        say(desk, "Thank you, I found it. It is on its way.", REPLY)
        expect(user.locator(".so-from-agent", has_text="on its way")).to_have_count(1)
        take(desk, folder, "desk-live-chat")
        take(user, folder, "widget-phone-live-chat")

        # The sign-off: the user sees the configured text and button.
        desk.get_by_role("button", name="Sign off").click()
        expect(user.get_by_role("button", name="Close this chat")).to_be_visible()
        take(user, folder, "widget-phone-sign-off")
        user.context.close()
        expect(desk.locator("#chat-user")).to_contain_text("User left")
        take(desk, folder, "desk-user-left")

        # The settings page.
        admin = context(DESKTOP).new_page()
        admin.goto(f"{server.http_url}/settings")
        admin.get_by_label("Administrator token").fill(ADMIN_TOKEN)
        admin.get_by_role("button", name="Sign in").click()
        expect(admin.get_by_role("region", name="Bot demo")).to_be_visible()
        take(admin, folder, "settings-page")
        browser.close()
    if problems:
        raise SystemExit("the pages reported problems:\n" + "\n".join(problems))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images")
