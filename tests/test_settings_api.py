"""The administrators' settings API, on the real server (SQLite data directory, ephemeral
ports of 127.0.0.1) with a real HTTP client: who may use it, what it refuses and in which
words, and that changes are kept across a restart and reach open sessions."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import SESSION_START
from transport.client import Closed, connect_agent, connect_user
from transport.config import from_mapping
from transport.errors import ConfigError
from transport.livechat.settings import FILENAME
from transport.servers.runtime import RunningServer, run_server

ADMIN_TOKEN = "root-admin-token-for-tests"
AGENT_TOKEN = "alice-agent-token-for-tests"
BOT_TOKEN = "demo-bot-token-for-settings-tests"


def config_of(data_dir: Path, **bot_settings: Any) -> dict[str, Any]:
    return {
        "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
        "store": {"kind": "sqlite", "data_dir": str(data_dir)},
        "bots": {
            "demo": {"adapter": "demo", "token": BOT_TOKEN, "settings": bot_settings},
            "other": {"adapter": "demo"},
        },
        "agents": {"alice": {"name": "Alice", "token": AGENT_TOKEN}},
        "admins": {"root": {"name": "Root", "token": ADMIN_TOKEN}},
    }


@asynccontextmanager
async def serving(config: Mapping[str, Any]) -> AsyncIterator[RunningServer]:
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(
            lambda task_status: run_server(
                from_mapping(config), handle_signals=False, task_status=task_status
            )
        )
        yield running
        running.stop()


@asynccontextmanager
async def api(
    running: RunningServer, token: str | None = ADMIN_TOKEN
) -> AsyncIterator[httpx.AsyncClient]:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=running.http_url, headers=headers, timeout=5) as client:
        yield client


async def test_only_an_administrators_token_opens_the_api(tmp_path: Path) -> None:
    async with serving(config_of(tmp_path / "data")) as running:
        async with api(running, None) as client:
            answer = await client.get("/api/bots")
            assert answer.status_code == 401
            assert answer.json()["error"] == "unauthorized"
            answer = await client.patch("/api/bots/demo/settings", json={"session_timeout": 5})
            assert answer.status_code == 401
        async with api(running, "not-anybody-s-token-at-all") as client:
            answer = await client.get("/api/bots/demo/settings")
            assert answer.status_code == 401
            assert answer.json() == {
                "error": "unauthorized",
                "message": "Unknown administrator token.",
            }
        for token in (AGENT_TOKEN, BOT_TOKEN):
            async with api(running, token) as client:
                answer = await client.patch("/api/bots/demo/settings", json={"session_timeout": 5})
                assert answer.status_code == 403
                assert answer.json()["error"] == "forbidden"
        async with api(running) as client:
            answer = await client.get("/api/bots")
            assert answer.status_code == 200
            assert answer.headers["cache-control"] == "no-store"
            listed = answer.json()
            assert listed["admin"] == {"admin_id": "root", "name": "Root"}
            assert [bot["bot_id"] for bot in listed["bots"]] == ["demo", "other"]
            assert listed["bots"][0]["settings"]["session_timeout"] == 3600.0
            keys = {field["key"] for field in listed["bots"][0]["fields"]}
            assert {"session_timeout", "end_message", "queue_timeout", "grace_period"} <= keys
            answer = await client.get("/api/bots/nobody/settings")
            assert answer.status_code == 404
            assert answer.json()["error"] == "unknown_bot"
            answer = await client.patch("/api/bots/nobody/settings", json={"grace_period": 5})
            assert answer.status_code == 404
        # The admin's token is no agent's: the desk refuses it.
        with pytest.raises(Closed) as refused:
            async with connect_agent(running.ws_url, ADMIN_TOKEN) as agent:
                await agent.set_presence("online")
        assert refused.value.code == 4401


def config_words(bot_settings: Mapping[str, Any]) -> list[str]:
    """What the config reader says about these settings in a file."""
    with pytest.raises(ConfigError) as refused:
        from_mapping({"bots": {"demo": {"settings": dict(bot_settings)}}})
    return refused.value.problems


@pytest.mark.parametrize(
    "values",
    [
        {"session_timeout": -5},
        {"session_timeout": 0},
        {"session_timeout": "soon"},
        {"agent_capacity": 2.5},
        {"agent_capacity": True},
        {"end_message": 7},
        {"grace_period": None},
        {"no_such_key": 1},
        {"queue_timeout": -1, "end_button_label": ["a"]},
    ],
)
async def test_invalid_values_are_refused_in_the_config_files_words(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    async with serving(config_of(tmp_path / "data")) as running, api(running) as client:
        answer = await client.patch("/api/bots/demo/settings", json=values)
        assert answer.status_code == 422
        body = answer.json()
        assert body["error"] == "invalid_settings"
        if None in values.values():  # a file cannot say null: words of its own
            expected = ["bots.demo.settings.grace_period: must be a number, got null"]
        else:
            expected = config_words(values)
        assert [f"{p['key']}: {p['message']}" for p in body["problems"]] == expected
        assert body["message"] == "; ".join(expected)
        for problem in body["problems"]:
            if problem["key"] != "bots.demo.settings.no_such_key":
                assert problem["field"] in values
        # Nothing changed.
        settings = (await client.get("/api/bots/demo/settings")).json()
        assert settings["changed"] == []
        assert settings["settings"]["session_timeout"] == 3600.0


async def test_bad_bodies_are_refused(tmp_path: Path) -> None:
    async with serving(config_of(tmp_path / "data")) as running, api(running) as client:
        for body in (b"not json", b"[1]", b"{}", b'{"session_timeout": 1e400}'):
            answer = await client.patch(
                "/api/bots/demo/settings",
                content=body,
                headers={"content-type": "application/json"},
            )
            assert answer.status_code == 400, body
            assert answer.json()["error"] == "bad_request"


async def test_changes_are_logged_kept_across_a_restart_and_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    config = config_of(data_dir, session_timeout=600.0, end_message="Bye from the file")
    async with serving(config) as running, api(running) as client:
        with caplog.at_level(logging.INFO, logger="switchover.settings"):
            answer = await client.patch(
                "/api/bots/demo/settings",
                json={"session_timeout": 30, "queue_timeout": 90, "end_button_label": "Done"},
            )
        assert answer.status_code == 200
        view = answer.json()
        assert view["settings"]["session_timeout"] == 30.0
        assert view["settings"]["queue_timeout"] == 90.0
        assert view["file"]["session_timeout"] == 600.0
        assert view["changed"] == ["end_button_label", "queue_timeout", "session_timeout"]
        assert view["last_change"]["admin_id"] == "root"
        assert view["last_change"]["changes"]["session_timeout"] == {"old": 600.0, "new": 30.0}
        logged = [r.getMessage() for r in caplog.records if r.name == "switchover.settings"]
        assert logged == [
            "settings of bot demo changed by admin root: session_timeout 600.0 -> 30.0, "
            "end_button_label 'End conversation' -> 'Done', queue_timeout None -> 90.0"
        ]
        assert running.services.board.bots["demo"].settings.session_timeout == 30.0
        assert running.services.desk.settings["demo"].session_timeout == 30.0
    stored = json.loads((data_dir / FILENAME).read_text())
    assert stored["bots"]["demo"]["values"]["session_timeout"] == 30.0

    # The file's value changes too; the stored change still wins for its key only.
    config = config_of(data_dir, session_timeout=1200.0, end_message="New file words")
    async with serving(config) as running, api(running) as client:
        view = (await client.get("/api/bots/demo/settings")).json()
        assert view["settings"]["session_timeout"] == 30.0
        assert view["settings"]["end_message"] == "New file words"
        assert view["last_change"]["admin_name"] == "Root"
        assert running.services.board.bots["demo"].settings.session_timeout == 30.0
        # Unsetting an optional key, then one key back to the file's value, then all.
        answer = await client.patch("/api/bots/demo/settings", json={"queue_timeout": None})
        assert answer.json()["settings"]["queue_timeout"] is None
        answer = await client.delete("/api/bots/demo/settings/session_timeout")
        assert answer.status_code == 200
        assert answer.json()["settings"]["session_timeout"] == 1200.0
        assert "session_timeout" not in answer.json()["changed"]
        answer = await client.delete("/api/bots/demo/settings/nonsense")
        assert answer.status_code == 422
        assert answer.json()["message"] == "bots.demo.settings.nonsense: unknown key"
        answer = await client.delete("/api/bots/demo/settings")
        assert answer.status_code == 200
        assert answer.json()["changed"] == []
        assert answer.json()["settings"]["end_button_label"] == "End conversation"
    async with serving(config) as running, api(running) as client:
        view = (await client.get("/api/bots/demo/settings")).json()
        assert view["changed"] == []
        assert view["settings"]["session_timeout"] == 1200.0


async def test_a_stored_value_the_file_now_refuses_is_ignored(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / FILENAME).write_text(
        json.dumps(
            {
                "bots": {
                    "demo": {"values": {"session_timeout": -1, "grace_period": 5, "gone": 1}},
                    "removed": {"values": {"grace_period": 5}},
                }
            }
        )
    )
    async with serving(config_of(data_dir)) as running, api(running) as client:
        view = (await client.get("/api/bots/demo/settings")).json()
        assert view["settings"]["session_timeout"] == 3600.0
        assert view["settings"]["grace_period"] == 5.0
        assert view["changed"] == ["grace_period"]


async def test_a_shorter_session_timeout_reaches_an_open_session(tmp_path: Path) -> None:
    """Over the real server: a session open under one hour expires after the new timeout
    once it has seen a message (its next deadline)."""
    async with (
        serving(config_of(tmp_path / "data")) as running,
        api(running) as client,
        connect_user(running.ws_url, bot_id="demo") as user,
        connect_agent(running.ws_url, AGENT_TOKEN) as agent,
    ):
        await agent.set_presence("online")
        await user.click(SESSION_START)
        await user.wait_for(
            lambda f: f["type"] == "entry" and f["content"].get("code") == "agent_joined"
        )
        answer = await client.patch("/api/bots/demo/settings", json={"session_timeout": 0.5})
        assert answer.status_code == 200
        await user.say_text("still there?")
        with trio.fail_after(5):
            expired = await user.wait_for(
                lambda f: f["type"] == "entry" and f["content"].get("code") == "session_expired"
            )
        assert expired["content"]["reason"] == "idle_timeout"


async def test_with_the_memory_store_changes_live_in_memory_only(tmp_path: Path) -> None:
    config = config_of(tmp_path / "data")
    config["store"] = {"kind": "memory"}
    async with serving(config) as running, api(running) as client:
        answer = await client.patch("/api/bots/other/settings", json={"grace_period": 5})
        assert answer.status_code == 200
        assert answer.json()["changed"] == ["grace_period"]
        assert running.services.desk.settings["other"].grace_period == 5.0
    assert not (tmp_path / "data").exists()
    async with serving(config) as running, api(running) as client:
        view = (await client.get("/api/bots/other/settings")).json()
        assert view["settings"]["grace_period"] == 60.0
        assert view["last_change"] is None


async def test_an_unreadable_settings_file_leaves_the_config_files_values(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / FILENAME).write_text("{not json")
    async with serving(config_of(data_dir, session_timeout=42.0)) as running, api(running) as c:
        view = (await c.get("/api/bots/demo/settings")).json()
        assert view["settings"]["session_timeout"] == 42.0
        answer = await c.patch("/api/bots/demo/settings", json={"session_timeout": 43})
        assert answer.status_code == 200
    assert json.loads((data_dir / FILENAME).read_text())["bots"]["demo"]["values"] == {
        "session_timeout": 43.0
    }


async def test_canned_responses_changed_here_reach_a_connected_desk_at_once(
    tmp_path: Path,
) -> None:
    """A list setting goes through the same checks, and every desk serving the bot is sent
    its new canned responses without waiting for anything else to change."""
    async with (
        serving(config_of(tmp_path / "data")) as running,
        api(running) as client,
        connect_agent(running.ws_url, AGENT_TOKEN) as agent,
    ):
        await agent.wait_for(lambda f: f["type"] == "desk")
        refused = await client.patch(
            "/api/bots/demo/settings",
            json={"canned_responses": [{"shortcut": "has space", "text": "Hi"}]},
        )
        assert refused.status_code == 422
        assert "shortcut" in refused.json()["message"]
        wanted = [{"shortcut": "refund", "text": "Refunds take five working days."}]
        answer = await client.patch("/api/bots/demo/settings", json={"canned_responses": wanted})
        assert answer.status_code == 200, answer.text
        with trio.fail_after(5):
            desk = await agent.wait_for(
                lambda f: (
                    f["type"] == "desk"
                    and any(
                        c["shortcut"] == "refund" for c in f["canned_responses"].get("demo", [])
                    )
                )
            )
        shortcuts = [c["shortcut"] for c in desk["canned_responses"]["demo"]]
        assert shortcuts == ["refund", "signoff"]
    # Kept across a restart, as the file would give it.
    async with serving(config_of(tmp_path / "data")) as running, api(running) as client:
        kept = (await client.get("/api/bots/demo/settings")).json()
        assert kept["settings"]["canned_responses"] == wanted
