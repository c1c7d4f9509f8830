"""Switchover cluster nodes as processes, for the tests that kill one (SIGKILL, SIGTERM)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from .process import _READY, ROOT, SWITCHOVER


@attrs.frozen
class Node:
    node_id: str
    process: subprocess.Popen[str]
    ws_url: str
    http_url: str


@asynccontextmanager
async def node_processes(
    tmp_path: Path, configs: Mapping[str, str]
) -> AsyncIterator[dict[str, Node]]:
    """A ``switchover serve`` process per node id and config text, all started at once (so
    they split the partitions); returns once each is ready; kills every one on leaving.
    Each node's stderr is in ``tmp_path/<node>/server.log``."""
    processes = {}
    for node_id, text in configs.items():
        directory = tmp_path / node_id
        directory.mkdir()
        config = directory / "switchover.toml"
        config.write_text(text)
        log = (directory / "server.log").open("w")
        processes[node_id] = subprocess.Popen(  # noqa: ASYNC220 (read in threads below)
            [*SWITCHOVER, "serve", "--config", str(config), "--data-dir", str(directory / "data")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    nodes: dict[str, Node] = {}
    try:

        async def ready(node_id: str) -> None:
            process = processes[node_id]
            assert process.stdout is not None
            while True:
                line = await trio.to_thread.run_sync(process.stdout.readline)
                if not line:
                    log = (tmp_path / node_id / "server.log").read_text()
                    raise AssertionError(f"node {node_id} exited: {log}")
                found = _READY.search(line)
                if found:
                    nodes[node_id] = Node(node_id, process, found.group(1), found.group(2))
                    return

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for node_id in configs:
                    nursery.start_soon(ready, node_id)
        yield nodes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()


async def cluster_health(http: httpx.AsyncClient, node: Node) -> dict[str, Any]:
    """The ``cluster`` object of the node's ``/healthz``."""
    data: dict[str, Any] = (await http.get(f"{node.http_url}/healthz")).json()["cluster"]
    return data


def node_settings(
    addresses: list[str], node_id: str, partitions: int, lease_seconds: float = 1.0
) -> dict[str, Any]:
    """What every in-process cluster node of the tests shares: ephemeral ports, the
    clustered store on ``addresses`` under ``node_id``, one secret (a client's resume token
    is valid on every node). Spread into a config mapping beside its bots and agents."""
    return {
        "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
        "store": {
            "kind": "valkey",
            "addresses": addresses,
            "node_id": node_id,
            "partitions": partitions,
            "lease_seconds": lease_seconds,
        },
        "secret": "one-secret-for-every-node-of-the-cluster",
    }
