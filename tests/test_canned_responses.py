"""Canned responses: read from a bot's settings, checked with their keys, and always offered
with the sign-off."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.model.content import Content
from actors.model.settings import (
    SIGN_OFF_RESPONSE,
    BotSettings,
    CannedResponse,
    with_sign_off,
)
from actors.trio.desk import summary
from transport.config import load_file
from transport.errors import ConfigError

AGENT = """
[agents.alice]
name = "Alice"
token = "alice-token-long-enough"
"""


def load(text: str, tmp_path: Path) -> BotSettings:
    path = tmp_path / "switchover.toml"
    path.write_text(text + AGENT)
    return load_file(path).bots["support"].settings


def problems_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "switchover.toml"
    path.write_text(text + AGENT)
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    return caught.value.problems


def test_canned_responses_are_read_from_the_bots_settings(tmp_path: Path) -> None:
    settings = load(
        """
[bots.support]
adapter = "demo"
[[bots.support.settings.canned_responses]]
shortcut = "hello"
text = "Hi, how can I help?"
[[bots.support.settings.canned_responses]]
shortcut = "refund-policy"
text = "Refunds take 5 working days."
""",
        tmp_path,
    )
    assert settings.canned_responses == (
        CannedResponse("hello", "Hi, how can I help?"),
        CannedResponse("refund-policy", "Refunds take 5 working days."),
    )
    assert with_sign_off(settings.canned_responses)[-1] == SIGN_OFF_RESPONSE


def test_a_bot_without_canned_responses_still_offers_the_sign_off(tmp_path: Path) -> None:
    settings = load('[bots.support]\nadapter = "demo"\n', tmp_path)
    assert settings.canned_responses == ()
    assert with_sign_off(()) == (SIGN_OFF_RESPONSE,)
    assert SIGN_OFF_RESPONSE.text.endswith("LIVECHAT_SESSION_END")


def test_a_bots_own_sign_off_replaces_the_standard_one() -> None:
    own = (CannedResponse("bye", "Bye for now! LIVECHAT_SESSION_END"),)
    assert with_sign_off(own) == own


def test_every_canned_response_problem_is_named_by_its_key(tmp_path: Path) -> None:
    problems = problems_of(
        """
[bots.support]
adapter = "demo"
[[bots.support.settings.canned_responses]]
shortcut = "has space"
text = "one"
[[bots.support.settings.canned_responses]]
shortcut = "twice"
text = "two"
[[bots.support.settings.canned_responses]]
shortcut = "TWICE"
text = ""
[[bots.support.settings.canned_responses]]
text = 3
colour = "red"
""",
        tmp_path,
    )
    key = "bots.support.settings.canned_responses"
    assert problems == [
        f"{key}[3].colour: unknown key; known keys: shortcut, text",
        f"{key}[3].shortcut: is required",
        f"{key}[3].text: must be a string, got an integer (3)",
        f"{key}[0]: shortcut must be 1 to 32 letters, digits, - or _, got 'has space'",
        f"{key}[2]: shortcut 'TWICE' is used twice",
        f"{key}[2]: text must be a non-empty string of at most 2000 characters",
    ]


def test_canned_responses_must_be_an_array_of_tables(tmp_path: Path) -> None:
    problems = problems_of(
        '[bots.support]\nadapter = "demo"\n[bots.support.settings]\ncanned_responses = "hi"\n',
        tmp_path,
    )
    assert problems == [
        "bots.support.settings.canned_responses: must be an array of tables with shortcut "
        "and text, got a string"
    ]


def test_too_many_canned_responses_are_refused(tmp_path: Path) -> None:
    many = "".join(
        f'[[bots.support.settings.canned_responses]]\nshortcut = "s{i}"\ntext = "t"\n'
        for i in range(101)
    )
    problems = problems_of(f'[bots.support]\nadapter = "demo"\n{many}', tmp_path)
    assert problems == ["bots.support.settings.canned_responses: must hold at most 100 responses"]


def test_settings_given_as_tables_at_run_time_are_checked_too() -> None:
    settings = BotSettings(canned_responses=[{"shortcut": "hi", "text": "Hello!"}])  # type: ignore[arg-type]
    assert settings.canned_responses == (CannedResponse("hi", "Hello!"),)
    with pytest.raises(ValueError, match=r"canned_responses\[0\]: shortcut must be"):
        BotSettings(canned_responses=(CannedResponse("", "Hello!"),))


def test_the_queue_shows_a_message_in_one_short_line() -> None:
    assert summary(Content.text("  two\n lines ")) == "two lines"
    long = summary(Content.text("x" * 500))
    assert len(long) == 120 and long.endswith("…")
    assert summary(Content("image", {"url": "https://example.com/a.png"})) == "[image]"
