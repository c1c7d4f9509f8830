"""Retention beside live traffic (run by hand: ``python bench/prune.py``).

1. Build a file of ``--past`` conversations from long ago (``--messages`` each, written
   straight through ``sqlite3`` into the real schema, their messages interleaved in the
   table as live traffic leaves them), plus a few old ones with an open session, which
   must survive.
2. Open the store on it (synchronous FULL, as the server does) and run a steady stream of
   acknowledged records: ``--live`` live sessions, each recording one message every
   ``1 / --rate`` seconds through ``SQLiteStore.record`` and timing how long each waits for
   its acknowledgement.
3. Measure that stream for ``--baseline`` seconds with nothing else running, then again while
   ``SQLiteStore.prune`` deletes every past conversation, until the prune returns.

Reports ack latency (p50 / p99 / max) in both phases and their ratio, the prune's duration
and number of transactions, and the CPU of the process and of trio's thread (the load
generator and the store's trio side share it; the writer's thread is the rest). Writes
``bench/results/prune.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transport.store.retention as retention
from actors import BotSettings, Content, ConversationState, Entry, Party
from actors.model.state import Session
from transport.store.retention import PRUNE_CHUNK_ROWS
from transport.store.schema import migrate
from transport.store.sqlite import SQLiteStore, open_sqlite_store

RESULTS = Path(__file__).resolve().parent / "results" / "prune.json"
SETTINGS = BotSettings()
OPEN_OLD = 100
"""Old conversations whose session is still open: never pruned."""
DAY = 86400.0


def build(path: Path, past: int, messages: int) -> None:
    """The past conversations, 90 days old, in bot mode, one in ten with an ended session,
    their messages appended round by round (message 1 of every conversation, then message 2...)
    so that a conversation's messages lie far apart in the table, as on a real server."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    migrate(db)
    start = time.time() - 90 * DAY
    db.execute("BEGIN")
    rows = []
    for n in range(past + OPEN_OLD):
        at = start + n * 0.01
        cid = f"past-{n:07d}"
        if n < past:
            session: tuple[Any, ...] = ("bot", None, None, None, None, None, None, None)
        else:
            session = ("queued", f"{cid}/1", at, at, at, None, "", 1)
        rows.append(
            (cid, "demo", f"user-{n}", '{"name":"Uma"}', messages + 1, 1, *session, 0, None, at)
        )
    db.executemany(
        "INSERT INTO conversations (id, bot_id, user_id, metadata, next_seq, sessions_opened,"
        " mode, session_id, started_at, last_activity, queued_at, agent_id, agent_name,"
        " position, sign_off_offered, deadline, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.executemany(
        "INSERT INTO sessions (session_id, conversation_id, bot_id, started_at, queued_at,"
        " agent_id, ended_at, end_reason) VALUES (?, ?, 'demo', ?, ?, 'alice', ?, 'user_ended')",
        (
            (f"past-{n:07d}/1", f"past-{n:07d}", start, start, start + 60)
            for n in range(0, past, 10)
        ),
    )

    def all_messages() -> Any:
        for seq in range(1, messages + 1):
            for n in range(past + OPEN_OLD):
                yield (
                    f"past-{n:07d}",
                    seq,
                    start + n * 0.01,
                    "user" if seq % 2 else "bot",
                    "text",
                    json.dumps({"text": f"message {seq} of conversation {n}"}),
                    "bot,user",
                    None,
                    None,
                    None,
                )

    db.executemany(
        "INSERT INTO messages (conversation_id, seq, at, sender, content_type, content,"
        " audience, agent_id, session_id, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        all_messages(),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    # Written with synchronous OFF, the file is still in the page cache: the store's first
    # checkpoint would flush all of it (~100 ms here), which a server's file never has to.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriterTime:
    """Times each of the prune's jobs on the writer thread (its transactions and its
    checkpoints): the longest is the longest a commit can wait for the prune."""

    def __init__(self) -> None:
        self.chunks: list[float] = []
        self.checkpoints: list[float] = []

    def __enter__(self) -> WriterTime:
        self.saved = retention.prune_chunk, retention._checkpoint
        chunk, checkpoint = self.saved

        def timed_chunk(
            db: sqlite3.Connection, cutoff: float, after: tuple[float, int], rows: int = 1
        ) -> Any:
            started = time.perf_counter()
            try:
                return chunk(db, cutoff, after, rows)
            finally:
                self.chunks.append(time.perf_counter() - started)

        def timed_checkpoint(db: sqlite3.Connection) -> None:
            started = time.perf_counter()
            try:
                checkpoint(db)
            finally:
                self.checkpoints.append(time.perf_counter() - started)

        retention.prune_chunk = timed_chunk
        retention._checkpoint = timed_checkpoint
        return self

    def __exit__(self, *exc: object) -> None:
        retention.prune_chunk, retention._checkpoint = self.saved

    def summary(self) -> dict[str, Any]:
        result = {}
        for name, times in (("transaction", self.chunks), ("checkpoint", self.checkpoints)):
            ordered = sorted(times) or [0.0]
            result[name] = {
                "count": len(times),
                "p50_ms": ordered[len(ordered) // 2] * 1000,
                "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
                "max_ms": ordered[-1] * 1000,
                "total_s": sum(times),
            }
        return result


class Stream:
    """``live`` sessions, each recording a message every ``1 / rate`` s, each timed from the
    call to its acknowledgement."""

    def __init__(self, store: SQLiteStore, live: int, rate: float) -> None:
        self.store = store
        self.live = live
        self.rate = rate
        self.latencies: list[float] = []
        self.states: dict[str, ConversationState] = {}
        now = time.time()
        for n in range(live):
            cid = f"live-{n:04d}"
            session = Session(f"{cid}/1", now, now, now, "alice", "Alice")
            self.states[cid] = ConversationState(
                cid, "demo", f"live-user-{n}", {"name": "Uma"}, 1, session, 1
            )

    async def run(self, stop: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            for n, cid in enumerate(self.states):
                nursery.start_soon(self.sender, cid, n / self.live / self.rate, stop)

    async def sender(self, cid: str, offset: float, stop: trio.Event) -> None:
        period = 1 / self.rate
        next_at = trio.current_time() + offset
        while not stop.is_set():
            await trio.sleep_until(next_at)
            next_at = max(next_at + period, trio.current_time())
            state = self.states[cid]
            assert state.session is not None
            at = time.time()
            entry = Entry(
                cid,
                state.next_seq,
                at,
                Party.USER if state.next_seq % 2 else Party.AGENT,
                Content.text(f"live message {state.next_seq}"),
                frozenset({Party.USER, Party.AGENT}),
                "alice",
                state.session.session_id,
            )
            following = ConversationState(
                cid,
                state.bot_id,
                state.user_id,
                state.user_metadata,
                state.next_seq + 1,
                Session(
                    state.session.session_id,
                    state.session.started_at,
                    at,
                    state.session.queued_at,
                    "alice",
                    "Alice",
                ),
                state.sessions_opened,
            )
            started = time.perf_counter()
            await self.store.record(following, [entry])
            self.latencies.append(time.perf_counter() - started)
            self.states[cid] = following


def summary(
    latencies: list[float], seconds: float, cpu: float, thread_cpu: float
) -> dict[str, Any]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "acks": len(ordered),
        "seconds": seconds,
        "acks_per_s": len(ordered) / seconds,
        "ms": {
            "p50": at(0.50),
            "p99": at(0.99),
            "p999": at(0.999),
            "max": ordered[-1] * 1000,
            "mean": statistics.fmean(ordered) * 1000,
        },
        "over_50_ms": sum(1 for x in ordered if x > 0.050),
        "process_cpu": cpu / seconds,
        "trio_thread_cpu": thread_cpu / seconds,
    }


async def phase(
    stream: Stream, seconds: float | None, store: SQLiteStore | None, chunk_rows: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run the stream for ``seconds``, or while ``store`` prunes every past conversation."""
    stream.latencies = []
    stop = trio.Event()
    pruned: dict[str, Any] | None = None
    started = time.perf_counter()
    cpu = time.process_time()
    thread_cpu = time.thread_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.run, stop)
        if store is None:
            assert seconds is not None
            await trio.sleep(seconds)
        else:
            chunks = store.prune_chunks
            began = time.perf_counter()
            with WriterTime() as writer:
                deleted = await store.prune(30, chunk_rows=chunk_rows)
            pruned = {
                "deleted": deleted,
                "seconds": time.perf_counter() - began,
                "transactions": store.prune_chunks - chunks,
                "chunk_rows": chunk_rows,
                "writer_ms": writer.summary(),
            }
        stop.set()
    elapsed = time.perf_counter() - started
    result = summary(
        stream.latencies, elapsed, time.process_time() - cpu, time.thread_time() - thread_cpu
    )
    return result, pruned


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    path = directory / "prune.db"
    began = time.perf_counter()
    await trio.to_thread.run_sync(build, path, args.past, args.messages)
    built = time.perf_counter() - began
    size = sum(entry.stat().st_size for entry in os.scandir(directory))
    print(f"built {args.past:,} past conversations in {built:.1f} s ({size / 1e6:.0f} MB)")
    async with open_sqlite_store(path, settings={"demo": SETTINGS}, verify=False) as store:
        stream = Stream(store, args.live, args.rate)
        await phase(stream, args.warmup, None, args.chunk_rows)
        baseline, _ = await phase(stream, args.baseline, None, args.chunk_rows)
        during, pruned = await phase(stream, None, store, args.chunk_rows)
        assert pruned is not None
    with sqlite3.connect(path) as db:
        left = db.execute("SELECT count(*) FROM conversations").fetchone()[0]
    if pruned["deleted"] != args.past or left != args.live + OPEN_OLD:
        raise RuntimeError(f"pruned {pruned['deleted']}, {left} conversations left")
    ratio = {k: during["ms"][k] / baseline["ms"][k] for k in ("p50", "p99", "max")}
    return {
        "past": args.past,
        "messages_per_past": args.messages,
        "file_mb": size / 1e6,
        "build_seconds": built,
        "live": args.live,
        "rate_per_live": args.rate,
        "offered_per_s": args.live * args.rate,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "baseline": baseline,
        "during_prune": during,
        "prune": pruned,
        "ratio_during_to_baseline": ratio,
        "max_ack_under_50_ms": during["ms"]["max"] < 50,
    }


def print_table(report: dict[str, Any]) -> None:
    pruned = report["prune"]
    print(
        f"\n{report['live']} live sessions x {report['rate_per_live']:g} msg/s; prune of "
        f"{pruned['deleted']:,} conversations took {pruned['seconds']:.1f} s in "
        f"{pruned['transactions']:,} transactions of <= {pruned['chunk_rows']} rows"
    )
    print(
        f"{'phase':<14}{'acks':>8}{'acks/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9':>9}"
        f"{'max ms':>9}{'>50ms':>7}{'CPU':>7}{'trio':>7}"
    )
    for name in ("baseline", "during_prune"):
        r = report[name]
        print(
            f"{name:<14}{r['acks']:>8,}{r['acks_per_s']:>9,.0f}{r['ms']['p50']:>9.2f}"
            f"{r['ms']['p99']:>9.2f}{r['ms']['p999']:>9.2f}{r['ms']['max']:>9.2f}"
            f"{r['over_50_ms']:>7}{r['process_cpu']:>7.0%}{r['trio_thread_cpu']:>7.0%}"
        )
    for name, times in pruned["writer_ms"].items():
        print(
            f"prune {name}s on the writer: {times['count']:,}, p50 {times['p50_ms']:.2f} ms, "
            f"p99 {times['p99_ms']:.2f} ms, max {times['max_ms']:.2f} ms, "
            f"{times['total_s']:.1f} s in all"
        )
    ratio = report["ratio_during_to_baseline"]
    print(
        f"ratio during / baseline: p50 {ratio['p50']:.2f}, p99 {ratio['p99']:.2f}, "
        f"max {ratio['max']:.2f}; max under 50 ms: {report['max_ack_under_50_ms']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--past", type=int, default=300_000)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--live", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s per live session")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--baseline", type=float, default=10.0)
    parser.add_argument("--chunk-rows", type=int, default=PRUNE_CHUNK_ROWS)
    parser.add_argument("--quick", action="store_true", help="20,000 past conversations")
    args = parser.parse_args(argv)
    if args.quick:
        args.past, args.baseline, args.warmup = 20_000, 3.0, 1.0
    with tempfile.TemporaryDirectory(prefix="switchover-prune-", dir=Path.cwd()) as tmp:
        report = trio.run(run, args, Path(tmp))
    print_table(report)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
