"""Bots' settings changed by an administrator in the clustered mode are kept in the engine
and taken up by every node: the core and the desk of each serve the bot under them, and a
node started later starts under them (docs/cluster.md, "Settings")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import BotSettings
from transport.config import from_mapping
from transport.servers.runtime import RunningServer, run_server

from .support.cluster import node_settings
from .support.valkey import ValkeyServer, valkey_server

ADMIN_TOKEN = "root-token-for-the-cluster-settings-test"


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    with valkey_server(tmp_path / "valkey") as server:
        yield server


def _config(valkey: ValkeyServer, node_id: str) -> Any:
    return from_mapping(
        {
            **node_settings([valkey.address], node_id, 8),
            "bots": {
                "demo": {
                    "adapter": "demo",
                    "settings": {"session_timeout": 600.0, "grace_period": 60.0},
                }
            },
            "admins": {"root": {"name": "Root", "token": ADMIN_TOKEN}},
        }
    )


async def _start(
    nursery: trio.Nursery, valkey: ValkeyServer, node_id: str, nodes: dict[str, RunningServer]
) -> None:
    nodes[node_id] = await nursery.start(
        lambda task_status: run_server(
            _config(valkey, node_id), handle_signals=False, task_status=task_status
        )
    )


def _settings(node: RunningServer) -> BotSettings:
    """What the node's core serves the bot under."""
    return node.services.board.bots["demo"].settings


def _heard(node: RunningServer) -> trio.Event:
    """Set once the node takes up a change (made on it or on another node)."""
    book = node.app.bot_settings
    assert book is not None
    heard = trio.Event()
    apply = book.on_change

    def changed(bot_id: str, settings: BotSettings) -> None:
        apply(bot_id, settings)
        heard.set()

    book.on_change = changed
    return heard


def _api(node: RunningServer) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    return httpx.AsyncClient(base_url=node.http_url, headers=headers, timeout=5)


async def test_a_change_made_on_one_node_is_in_force_on_every_node(valkey: ValkeyServer) -> None:
    nodes: dict[str, RunningServer] = {}
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as starting:
            starting.start_soon(_start, nursery, valkey, "a", nodes)
            starting.start_soon(_start, nursery, valkey, "b", nodes)
        a, b = nodes["a"], nodes["b"]
        heard = _heard(b)
        async with _api(a) as api:
            answer = await api.patch(
                "/api/bots/demo/settings", json={"session_timeout": 30, "grace_period": 5}
            )
            assert answer.status_code == 200, answer.text
        with trio.fail_after(5):
            await heard.wait()
        for node in (a, b):
            assert (_settings(node).session_timeout, _settings(node).grace_period) == (30, 5)
            # The desk (whichever node runs it) offers and holds chats under it too.
            assert node.services.desk.settings["demo"].grace_period == 5
        async with _api(b) as api:
            view = (await api.get("/api/bots/demo/settings")).json()
        assert view["changed"] == ["grace_period", "session_timeout"]
        assert view["last_change"]["admin_id"] == "root"

        # A node started afterwards starts under the change.
        await _start(nursery, valkey, "c", nodes)
        assert _settings(nodes["c"]).session_timeout == 30

        # A reset through another node gives every node the file's value back.
        heard_by = [_heard(a), _heard(b)]
        async with _api(nodes["c"]) as api:
            answer = await api.delete("/api/bots/demo/settings/session_timeout")
            assert answer.status_code == 200, answer.text
        with trio.fail_after(5):
            for heard in heard_by:
                await heard.wait()
        for node in nodes.values():
            assert (_settings(node).session_timeout, _settings(node).grace_period) == (600, 5)
        for node in nodes.values():
            node.stop()
