"""Memory with many past conversations in the store and a thousand active ones (run by hand:
``python bench/hibernation.py``).

1. Fill a SQLite file with ``--past`` conversations (each with a few messages), as a server
   that has run for a long time would have.
2. Run a switchboard on it with hibernation on. ``--active`` conversations keep talking; a
   further ``--woken`` past conversations each get one message (so they are rebuilt from the
   file), then fall quiet and must leave memory after ``hibernate_after``.
3. Measure, with tracemalloc: the Python memory of the core with only the active ones left,
   against the same conversations all held in memory; the time to rebuild a hibernated
   conversation on its next message; and check that it resumes with the right numbering.

The memory a server needs is then ``active x per-conversation + constant``, whatever the
number of past conversations: the table extrapolates to a million past ones from the
measured per-conversation cost (an extrapolation, said as such). Writes
``bench/results/hibernation.json``.

``--ids``: every message carries an id, as the widget's and the clients' do, so a woken
conversation reads the tail of its log once (its last ``message_ids`` entries) to know the
ids stored before it left memory; the CPU per rebuilt message (process time, worker
threads included) shows what that read costs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import (
    Accepted,
    BotBinding,
    BotEvent,
    BotSettings,
    Content,
    ConversationState,
    Entry,
    Party,
    Switchboard,
    UserSays,
    open_switchboard,
)
from transport.store.sqlite import SQLiteStore, open_sqlite_store

RESULTS = Path(__file__).resolve().parent / "results" / "hibernation.json"
SETTINGS = BotSettings()
HIBERNATE_AFTER = 2.0
MESSAGES_PER_PAST = 4


class QuietBot:
    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        return ()


async def fill(store: SQLiteStore, past: int) -> None:
    """``past`` conversations of ``MESSAGES_PER_PAST`` messages, written 2,000 at a time."""
    at = time.time() - 86400

    async def one(n: int) -> None:
        cid = f"past-{n:07d}"
        state = ConversationState(cid, "demo", f"user-{n}", {"name": f"User {n}"}, 1)
        entries = [
            Entry(
                cid,
                seq,
                at + seq,
                Party.USER if seq % 2 else Party.BOT,
                Content.text(f"message {seq} of conversation {n}"),
                frozenset({Party.USER, Party.BOT}),
            )
            for seq in range(1, MESSAGES_PER_PAST + 1)
        ]
        await store.record(
            ConversationState(
                cid, "demo", state.user_id, state.user_metadata, MESSAGES_PER_PAST + 1
            ),
            entries,
        )
        # These conversations were answered long ago: the bot is owed nothing (otherwise
        # the server would wake every one of them at start to hand their events over).
        for entry in entries:
            store.bot_done(cid, entry.seq)

    for start in range(0, past, 2000):
        async with trio.open_nursery() as nursery:
            for n in range(start, min(start + 2000, past)):
                nursery.start_soon(one, n)
    # One more commit carries the last of those answers.
    await store.record_presence("bench-agent", "offline")
    owed = await store.bot_backlog()
    if owed:
        raise RuntimeError(f"the fill left {len(owed)} entries owed to the bot")


def directory_size(directory: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(directory))


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


#: Whether messages carry ids (``--ids``), and the next one.
IDS = {"on": False, "next": 0}


async def say(board: Switchboard, cid: str, text: str) -> int:
    message_id = None
    if IDS["on"]:
        IDS["next"] += 1
        message_id = f"user:{IDS['next']}"
    outcome = await board.ask(cid, UserSays(Content.text(text)), message_id=message_id)
    assert isinstance(outcome, Accepted) and outcome.seq is not None, outcome
    return outcome.seq


async def measure(path: Path, active: int, woken: int, hibernate: bool) -> dict[str, Any]:
    async with open_sqlite_store(path, settings={"demo": SETTINGS}, verify=False) as store:
        tracemalloc.start()
        before = traced()
        async with open_switchboard(
            {"demo": BotBinding(QuietBot(), SETTINGS)},
            None,
            store,
            hibernate_after=HIBERNATE_AFTER if hibernate else None,
        ) as board:
            actives = [
                (await board.open_conversation("demo", metadata={"n": n})).conversation_id
                for n in range(active)
            ]
            woken_ids = [f"past-{n:07d}" for n in range(woken)]
            async with trio.open_nursery() as nursery:
                for cid in woken_ids:
                    nursery.start_soon(say, board, cid, "back again")
            peak_in_memory = board.active_conversations
            # The active ones keep talking while the woken ones fall quiet.
            deadline = trio.current_time() + HIBERNATE_AFTER * 2.5
            rounds = 0
            while trio.current_time() < deadline:
                async with trio.open_nursery() as nursery:
                    for cid in actives:
                        nursery.start_soon(say, board, cid, f"round {rounds}")
                rounds += 1
                await trio.sleep(HIBERNATE_AFTER / 4)
            in_memory = board.active_conversations
            used = traced() - before
            # Rebuilding a hibernated conversation on its next message.
            latencies = []
            resumed_right = True
            cpu = time.process_time()
            for cid in woken_ids[:200]:
                started = time.perf_counter()
                seq = await say(board, cid, "and again")
                latencies.append(time.perf_counter() - started)
                resumed_right &= seq == MESSAGES_PER_PAST + 2
            cpu = time.process_time() - cpu
            hibernated = board.stats.hibernated
        tracemalloc.stop()
    latencies.sort()
    return {
        "hibernate": hibernate,
        "peak_in_memory": peak_in_memory,
        "in_memory_after_quiet": in_memory,
        "hibernated": hibernated,
        "traced_bytes": used,
        "rebuild_ms_p50": statistics.median(latencies) * 1000 if latencies else None,
        "rebuild_ms_p99": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else None,
        # Process CPU (worker threads included) per message of that loop, traced.
        "rebuild_cpu_ms": cpu * 1000 / len(latencies) if latencies else None,
        # Only meaningful in the first run (the second finds the numbers the first left).
        "resumed_with_right_seq": resumed_right if hibernate else None,
    }


async def run(past: int, active: int, woken: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchover-hibernation-", dir=Path.cwd()) as tmp:
        path = Path(tmp) / "switchover.db"
        started = time.perf_counter()
        async with open_sqlite_store(path, synchronous="NORMAL") as store:
            await fill(store, past)
        fill_seconds = time.perf_counter() - started
        file_bytes = directory_size(tmp)
        with_hibernation = await measure(path, active, woken, hibernate=True)
        without = await measure(path, active, woken, hibernate=False)
    per_conversation = (without["traced_bytes"] - with_hibernation["traced_bytes"]) / max(
        without["in_memory_after_quiet"] - with_hibernation["in_memory_after_quiet"], 1
    )
    return {
        "past_conversations": past,
        "active_conversations": active,
        "woken_then_quiet": woken,
        "message_ids": IDS["on"],
        "hibernate_after_s": HIBERNATE_AFTER,
        "fill_seconds": fill_seconds,
        "file_bytes": file_bytes,
        "with_hibernation": with_hibernation,
        "without_hibernation": without,
        "bytes_per_conversation_in_memory": per_conversation,
        "extrapolated_million_in_memory_gb": per_conversation * 1_000_000 / 1e9,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"{r['past_conversations']:,} past conversations in the file "
        f"({r['file_bytes'] / 1e6:.0f} MB, filled in {r['fill_seconds']:.0f} s); "
        f"{r['active_conversations']:,} active; {r['woken_then_quiet']:,} woken then quiet"
    )
    print(
        f"{'':<22}{'in memory':>10}{'traced MB':>11}{'next msg p50':>14}{'p99':>8}{'CPU/msg':>10}"
    )
    for name in ("with_hibernation", "without_hibernation"):
        m = r[name]
        p50 = f"{m['rebuild_ms_p50']:.2f} ms" if m["rebuild_ms_p50"] is not None else "-"
        p99 = f"{m['rebuild_ms_p99']:.2f}" if m["rebuild_ms_p99"] is not None else "-"
        cpu = f"{m['rebuild_cpu_ms']:.2f} ms" if m["rebuild_cpu_ms"] is not None else "-"
        print(
            f"{name.replace('_', ' '):<22}{m['in_memory_after_quiet']:>10,}"
            f"{m['traced_bytes'] / 1e6:>11.1f}{p50:>14}{p99:>8}{cpu:>10}"
        )
    print(
        f"one conversation in memory: {r['bytes_per_conversation_in_memory'] / 1024:.1f} KiB; "
        f"a million held in memory would need ~{r['extrapolated_million_in_memory_gb']:.1f} GB "
        "(extrapolated); with hibernation only the active ones count"
    )
    ok = r["with_hibernation"]["resumed_with_right_seq"]
    print(
        "next msg: a woken-then-quiet conversation's next message; with hibernation it is "
        f"rebuilt from the file first. Rebuilt ones resumed with the right seq: {ok}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--past", type=int, default=200_000)
    parser.add_argument("--active", type=int, default=1_000)
    parser.add_argument("--woken", type=int, default=5_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ids", action="store_true", help="messages carry ids")
    args = parser.parse_args(argv)
    IDS["on"] = args.ids
    if args.quick:
        args.past, args.active, args.woken = 5_000, 200, 1_000
    report = trio.run(run, args.past, args.active, args.woken)
    print_table(report)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
