"""Attachments in the pages, in a real headless Chromium against a real ``switchover serve``
(the server, browser and page helpers of tests/test_browser.py): the user sends a picture
the agent sees inline, the agent sends a file the user downloads, and a refused file is
explained to its sender."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest

from tests import test_browser as pages
from tests.test_browser import ALICE_TOKEN, GREETING, Server, open_widget, say, shot, sign_in

# The fixtures of tests/test_browser.py, used here by name: a real server, the browser, and
# a phone-sized context for the user beside a desktop one for the agent.
server = pages.server
browser = pages.browser
contexts = pages.contexts

pytestmark = pytest.mark.browser

from playwright.sync_api import BrowserContext, Page, expect  # noqa: E402


def png(width: int, height: int) -> bytes:
    """A real PNG picture (red), so the browser has something to draw."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PICTURE = png(40, 30)
INVOICE = b"%PDF-1.4\n% an invoice\n%%EOF\n"


def drawn_size(page: Page, selector: str) -> tuple[int, int]:
    size = page.locator(selector).evaluate("img => [img.naturalWidth, img.naturalHeight]")
    return int(size[0]), int(size[1])


def test_a_user_sends_a_picture_and_the_agent_a_file(
    server: Server, contexts: tuple[BrowserContext, BrowserContext], tmp_path: Path
) -> None:
    user_context, agent_context = contexts
    problems: list[str] = []
    desk = sign_in(agent_context, server, ALICE_TOKEN, problems, "away")
    user = open_widget(user_context, f"{server.http_url}/widget", problems)
    log = user.locator(".so-log")
    attach = user.get_by_role("button", name="Attach a file")

    # Talking to the bot, there is nothing to attach to.
    say(user, "hello")
    expect(log.locator(".so-from-bot", has_text=GREETING)).to_have_count(1)
    expect(attach).to_be_hidden()
    user.locator(".so-choice", has_text="Talk to a human").last.click()
    expect(user.locator(".so-banner")).to_have_text(re.compile("in the queue"))
    desk.locator("#queue .queue-item").get_by_role("button", name=re.compile("Pick up")).click()
    expect(user.locator(".so-banner")).to_have_text("You are chatting with Alice.")
    expect(attach).to_be_visible()

    # The user sends a picture: both sides see it drawn inline, from the server.
    with user.expect_file_chooser() as chooser:
        attach.click()
    chooser.value.set_files(
        files=[{"name": "parcel.png", "mimeType": "image/png", "buffer": PICTURE}]
    )
    chat_log = desk.locator("#chat-log")
    thumb = chat_log.locator(".from-user img.attachment-thumb")
    expect(thumb).to_have_attribute("src", re.compile("^blob:"))
    expect(thumb).to_have_attribute("alt", "parcel.png")
    assert drawn_size(desk, "#chat-log .from-user img.attachment-thumb") == (40, 30)
    own = log.locator(".so-from-user img.so-attachment-thumb")
    expect(own).to_have_attribute("src", re.compile("^blob:"))
    assert drawn_size(user, ".so-log .so-from-user img.so-attachment-thumb") == (40, 30)
    # Clicking the thumbnail opens the picture in full.
    with desk.expect_popup() as opened:
        thumb.click()
    assert opened.value.url.startswith("blob:")
    opened.value.close()
    shot(desk, "attachments-01-desk-picture")

    # The agent sends a file: the user gets a link with its name and size, and downloads it.
    desk.locator(".attach-input").set_input_files(
        files=[{"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": INVOICE}]
    )
    link = log.locator(".so-from-agent a.so-attachment-file")
    expect(link).to_have_text(f"invoice.pdf ({len(INVOICE)} bytes)")
    with user.expect_download() as downloading:
        link.click()
    download = downloading.value
    assert download.suggested_filename == "invoice.pdf"
    saved = tmp_path / "invoice.pdf"
    download.save_as(saved)
    assert saved.read_bytes() == INVOICE
    expect(desk.locator("#chat-log .from-agent a.attachment-file")).to_have_count(1)
    shot(user, "attachments-02-user-file")

    # A file of a type not accepted is refused, and the user is told why.
    with user.expect_file_chooser() as chooser:
        attach.click()
    chooser.value.set_files(
        files=[{"name": "tools.zip", "mimeType": "application/zip", "buffer": b"PK\x03\x04x"}]
    )
    expect(user.locator(".so-alert")).to_contain_text("tools.zip was not sent")
    expect(user.locator(".so-alert")).to_contain_text("application/zip are not accepted")
    expect(attach).to_be_enabled()
    # So is one too large, with the limit in words.
    with user.expect_file_chooser() as chooser:
        attach.click()
    scan = tmp_path / "scan.png"
    scan.write_bytes(PICTURE + bytes(6 << 20))
    chooser.value.set_files(scan)
    expect(user.locator(".so-alert")).to_contain_text("scan.png was not sent")
    expect(user.locator(".so-alert")).to_contain_text("Files are limited to 5 MiB")
    expect(attach).to_be_enabled()
    expect(chat_log.locator(".attachment")).to_have_count(2)
    shot(user, "attachments-03-user-refused")

    # A reload redraws both attachments from the saved conversation.
    user.reload()
    expect(user.locator(".so-widget")).to_have_attribute("data-connection", "online")
    expect(user.locator(".so-log img.so-attachment-thumb")).to_have_attribute(
        "src", re.compile("^blob:")
    )
    expect(user.locator(".so-log a.so-attachment-file")).to_have_count(1)

    expected = [p for p in problems if "/attachments" in p and p.startswith(("413 ", "415 "))]
    assert len(expected) == 2, problems
    assert [p for p in problems if p not in expected] == []
