"""Administrators in the config (``[admins.<id>]``), and the settings reader the API shares
with the config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors import BotSettings
from transport.cli import main
from transport.config import from_mapping, read_bot_settings
from transport.errors import ConfigError

ADMIN_TOKEN = "an-administrator-token-long-enough"
AGENT_TOKEN = "an-agent-token-that-is-long-enough"


def problems_of(data: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        from_mapping(data, environ=environ or {})
    return refused.value.problems


def test_an_admin_has_a_name_and_a_token_or_one_from_the_environment() -> None:
    config = from_mapping(
        {
            "admins": {
                "root": {"name": "Root", "token": ADMIN_TOKEN},
                "ops": {"token_env": "OPS_TOKEN"},
            }
        },
        environ={"OPS_TOKEN": "the-ops-token-from-the-environment"},
    )
    assert config.admins["root"].name == "Root"
    assert config.admins["root"].token == ADMIN_TOKEN
    assert config.admins["ops"].name == "ops"
    assert config.admins["ops"].token == "the-ops-token-from-the-environment"
    assert from_mapping({}).admins == {}


def test_every_admin_problem_is_reported_with_its_key() -> None:
    problems = problems_of(
        {
            "agents": {"alice": {"token": AGENT_TOKEN}},
            "admins": {
                "same": {"token": AGENT_TOKEN},
                "short": {"token": "short"},
                "none": {"name": "Nobody"},
                "both": {"token": ADMIN_TOKEN, "token_env": "X"},
                "unset": {"token_env": "NOT_SET_ANYWHERE"},
                "odd": {"token": ADMIN_TOKEN + "-odd", "role": "owner"},
                "flat": "yes",
            },
        }
    )
    assert len(problems) == 7
    assert set(problems) == {
        "admins.none.token: is required (or token_env; the secret this admin signs in with)",
        "admins.both.token: give token or token_env, not both",
        "admins.unset.token_env: the environment variable NOT_SET_ANYWHERE is unset",
        "admins.odd.role: unknown key; known keys: name, token, token_env",
        "admins.flat: must be a table, got a string",
        "admins.short.token: is shorter than 16 characters; use a long random one "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
        "admins.same.token: is the same token as agents.alice.token",
    }


def test_switchover_check_lists_admin_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "switchover.toml"
    path.write_text('[admins.root]\nname = "Root"\n')
    assert main(["check", "--config", str(path)]) == 1
    assert "admins.root.token: is required" in capsys.readouterr().err


def test_the_settings_reader_changes_what_it_is_given_and_keeps_the_rest() -> None:
    base = BotSettings(session_timeout=600.0, queue_timeout=60.0)
    changed = read_bot_settings({"session_timeout": 30, "queue_timeout": None}, "demo", base)
    assert changed == BotSettings(session_timeout=30.0, queue_timeout=None)
    assert isinstance(changed.session_timeout, float)
    with pytest.raises(ConfigError) as refused:
        read_bot_settings({"session_timeout": -1, "end_message": 3}, "demo", base)
    assert refused.value.problems == [
        "bots.demo.settings.session_timeout: must be positive, got -1",
        "bots.demo.settings.end_message: must be a string, got an integer (3)",
    ]
