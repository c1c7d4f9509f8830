"""Attachments in the clustered mode live in the engine: a file uploaded through one node is
downloaded through another, within the conversation's bounds counted across nodes, and it
outlives the node that took it (docs/cluster.md, "Attachments")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from transport.client import connect_user
from transport.cluster.attachments import TOTAL, ValkeyAttachments
from transport.cluster.engine import connect
from transport.config import from_mapping
from transport.servers.runtime import RunningServer, run_server
from transport.store.attachments import NoRoom

from .support.cluster import node_settings
from .support.valkey import ENGINES, ValkeyCluster, ValkeyServer, valkey_engine

Valkey = ValkeyServer | ValkeyCluster

AGENT_TOKEN = "alice-token-for-cluster-attachments"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))


@pytest.fixture(params=ENGINES)
def valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Valkey]:
    """A single valkey-server, then a Valkey Cluster of three masters."""
    with valkey_engine(request, tmp_path / "valkey") as engine:
        yield engine


def _config(valkey: Valkey, node_id: str) -> Any:
    return from_mapping(
        {
            **node_settings(valkey.addresses, node_id, 8),
            "bots": {"demo": {"adapter": "demo", "settings": {"session_timeout": 600.0}}},
            "agents": {"alice": {"token": AGENT_TOKEN, "bots": ["demo"], "name": "Alice"}},
            "attachments": {"max_per_conversation": 2, "max_total_bytes": 10 * len(PNG)},
        }
    )


async def _start(
    nursery: trio.Nursery, valkey: Valkey, node_id: str, nodes: dict[str, RunningServer]
) -> None:
    nodes[node_id] = await nursery.start(
        lambda task_status: run_server(
            _config(valkey, node_id), handle_signals=False, task_status=task_status
        )
    )


async def _upload(node: RunningServer, conversation: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        return await http.post(
            f"/v1/conversations/{conversation}/attachments",
            params={"name": "cat.png"},
            content=PNG,
            headers={"authorization": f"Bearer {token}", "content-type": "image/png"},
        )


async def _download(node: RunningServer, conversation: str, attachment: str, token: str) -> Any:
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        return await http.get(
            f"/v1/conversations/{conversation}/attachments/{attachment}",
            headers={"authorization": f"Bearer {token}"},
        )


async def test_a_file_sent_through_one_node_is_served_by_another_and_outlives_it(
    valkey: Valkey,
) -> None:
    nodes: dict[str, RunningServer] = {}
    async with trio.open_nursery() as stays:
        async with trio.open_nursery() as goes:
            # Started together, so they split the partitions.
            async with trio.open_nursery() as starting:
                starting.start_soon(_start, goes, valkey, "a", nodes)
                starting.start_soon(_start, stays, valkey, "b", nodes)
            a, b = nodes["a"], nodes["b"]
            conversation, attachment = await _send_and_share(a, b)
            a.stop()
        # The node that took the file has stopped: the file is still served.
        got = await _download(b, conversation, attachment, AGENT_TOKEN)
        assert got.status_code == 200 and got.content == PNG
        missing = await _download(b, conversation, "no-such-attachment-id-123", AGENT_TOKEN)
        assert missing.status_code == 404
        b.stop()


async def _send_and_share(a: RunningServer, b: RunningServer) -> tuple[str, str]:
    async with connect_user(a.ws_url, bot_id="demo") as user:
        conversation = user.conversation_id
        await user.click("LIVECHAT_SESSION_START")
        await user.wait_for(lambda f: f.get("content", {}).get("code") == "session_started")
        token = user.resume_token

        sent = await _upload(a, conversation, token)
        assert sent.status_code == 201, sent.text
        attachment: str = sent.json()["content"]["attachment_id"]
        seen = await user.wait_for(lambda f: f["type"] == "entry" and f["content_type"] == "image")
        assert seen["content"]["attachment_id"] == attachment

        # Another node serves the same bytes, to the user and to an agent of the bot.
        for who in (token, AGENT_TOKEN):
            got = await _download(b, conversation, attachment, who)
            assert got.status_code == 200 and got.content == PNG
            assert got.headers["content-type"] == "image/png"

        # The conversation's bound counts the files kept through either node.
        second = await _upload(b, conversation, token)
        assert second.status_code == 201, second.text
        third = await _upload(a, conversation, token)
        assert (third.status_code, third.json()["error"]) == (409, "conversation_full")
    return conversation, attachment


async def test_the_bound_on_all_files_is_reserved_and_given_back(valkey: Valkey) -> None:
    engine = await connect(valkey.addresses)
    files = ValkeyAttachments(engine, 8, lambda key: _nothing())
    bounds = {"max_count": 5, "max_bytes": 10 * len(PNG), "max_total": 3 * len(PNG)}
    try:
        kept = [
            await files.keep(
                f"c{i}", name="a.png", mime_type="image/png", data=PNG, sender="user", **bounds
            )
            for i in range(3)
        ]
        with pytest.raises(NoRoom) as full:
            await files.keep(
                "c9", name="a.png", mime_type="image/png", data=PNG, sender="user", **bounds
            )
        assert full.value.everywhere
        # A conversation's own bound refuses too, and gives its reservation back.
        with pytest.raises(NoRoom) as own:
            await files.keep(
                "c0",
                name="a.png",
                mime_type="image/png",
                data=PNG * 20,
                sender="user",
                **{**bounds, "max_total": None},
            )
        assert not own.value.everywhere
        await files.remove("c1", kept[1].attachment_id)
        assert await files.read("c1", kept[1].attachment_id) is None
        assert await files.read("c2", kept[1].attachment_id) is None  # not its conversation
        again = await files.keep(
            "c9", name="b.png", mime_type="image/png", data=PNG, sender="agent:alice", **bounds
        )
        found = await files.read("c9", again.attachment_id)
        assert found is not None and found[1] == PNG and found[0].sender == "agent:alice"
        assert int(await engine.command(["GET", TOTAL], key=TOTAL)) == 3 * len(PNG)
    finally:
        await engine.close()


async def _nothing() -> None:
    return None
