"""A client's resend across a takeover, on a real valkey-server with two nodes in one
process: a message routed to its conversation's owner and stored there is resent by its
client (its answer was lost) after the owner stopped; the node that took the partition over
answers it with the stored seq, from the log in the engine, and stores nothing more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import Party
from transport.client import connect_user
from transport.cluster.keys import partition_of
from transport.servers.runtime import RunningServer, run_server

from .support.valkey import ENGINES, ValkeyCluster, ValkeyServer, valkey_engine
from .test_cluster_routing import PARTITIONS, _config, _entry, _owned

Valkey = ValkeyServer | ValkeyCluster


@pytest.fixture(params=ENGINES)
def valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Valkey]:
    """A single valkey-server, then a Valkey Cluster of three masters."""
    with valkey_engine(request, tmp_path / "valkey") as engine:
        yield engine


async def test_a_routed_message_resent_after_its_owner_stopped_is_answered_once(
    valkey: Valkey,
) -> None:
    nodes: dict[str, RunningServer] = {}
    stopped = {"a": trio.Event(), "b": trio.Event()}

    async def serve(node_id: str, *, task_status: trio.TaskStatus[RunningServer]) -> None:
        try:
            config = _config(valkey, node_id)
            await run_server(config, handle_signals=False, task_status=task_status)
        finally:
            stopped[node_id].set()

    async with trio.open_nursery() as nursery:

        async def start(node_id: str) -> None:
            nodes[node_id] = await nursery.start(serve, node_id)

        async with trio.open_nursery() as starting:
            starting.start_soon(start, "a")
            starting.start_soon(start, "b")
        a, b = nodes["a"], nodes["b"]
        try:
            assert _owned(a) and _owned(b)
            async with connect_user(a.ws_url, bot_id="demo") as first:
                conversation = first.conversation_id
                assert partition_of(conversation, PARTITIONS) in _owned(a)
                await first.say_text("hello")
                await first.wait_for(_entry("bot"))
                token = first.resume_token
            message: dict[str, Any] = {
                "type": "message",
                "id": "m-routed",
                "content_type": "text",
                "content": {"text": "through b"},
            }
            async with connect_user(b.ws_url, resume_token=token, last_seq=0) as user:
                # Routed to a, stored there, answered through b.
                stored = (await user.request(message))["seq"]
                assert isinstance(stored, int)
                await user.wait_for(lambda f: _entry("bot")(f) and f["seq"] > stored)
                # a stops (its answer could as well have been lost on the way): b takes its
                # partitions over and is the owner the resend reaches.
                a.stop()
                with trio.fail_after(10):
                    await stopped["a"].wait()
                    board_store: Any = b.services.board.store
                    while len(_owned(b)) < PARTITIONS:
                        await board_store.leases.changed()
                again = await user.request(message, timeout=10.0)
                assert again["seq"] == stored
                # And again, now that b's actor has read the log once.
                assert (await user.request(message))["seq"] == stored
                # A new message follows on, numbered after everything stored.
                later = await user.request({**message, "id": "m-new", "content": {"text": "x"}})
                assert later["seq"] > stored
            log = await b.services.board.store.entries_after(conversation, 0)
            said = [e.content.text_value for e in log if e.sender is Party.USER]
            assert said == ["hello", "through b", "x"]
            assert [e.seq for e in log] == list(range(1, len(log) + 1))
        finally:
            for node in nodes.values():
                node.stop()
