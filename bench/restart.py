"""Restart time with a full data directory, against an empty one, in the same run (run by
hand: ``python bench/restart.py``).

1. Fill a data directory through the SQLite store's own API: ``--past`` past conversations
   (bot mode, a few messages each, nothing owed to the bot) and ``--sessions`` open sessions
   waiting for an agent, one of which has messages its user has not seen.
2. Start ``switchover serve`` on a copy of it (pinned to CPU 0 where possible) and time, from
   the moment the process is started: the first ``200`` from ``GET /healthz``, and a user
   who resumes the conversation with missed messages getting all of them. Then read the
   server's RSS (``/proc/<pid>/status``) and its CPU time, and time a graceful stop
   (SIGINT to exit).
3. The same with an empty data directory. Repeated ``--repeat`` times, alternating; medians
   are reported, with the machine's load average during the run. ``--baseline COMMIT``
   also starts the server as it was at that commit (``git archive`` of ``actors`` and
   ``transport``, the same virtual environment), alternating with this tree's starts on the
   same data dirs, so a change is measured against its baseline under the same load.
4. The desk's queue alone, in this process: the CPU time for ``--sessions`` requests one by
   one on this tree's routing and on the list queue it replaced
   (``actors/machines/routing.py`` at commit ``LIST_QUEUE_COMMIT``, by ``git show``), and
   as the one batch a restart now hands the desk (``Routing.request_many``).

Writes ``bench/results/restart.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http``: import from the repository.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import util  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import trio  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from actors import AgentRequest, BotSettings, Content, ConversationState, Entry, Party  # noqa: E402
from actors.machines import routing  # noqa: E402
from actors.model.state import Session  # noqa: E402
from bench.servers import (  # noqa: E402
    HOST,
    PYTHON,
    ROOT,
    SERVER_CPU,
    default_interrupt,
    free_port,
    pinned,
    scratch,
    write_config,
)
from transport.protocol.tokens import ResumeTokens  # noqa: E402
from transport.store.sqlite import DATABASE_FILENAME, open_sqlite_store  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "restart.json"
#: The desk's routing before its queue kept places in a Fenwick tree.
LIST_QUEUE_COMMIT = "39a64a9"
SECRET = "bench-secret-not-for-production"
PAST_MESSAGES = 4
#: The conversation the resuming user returns to: it has ``MISSED + SEEN`` messages.
RESUMED = "open-0000000"
SEEN = 2
MISSED = 3
BATCH = 2_000


def past_conversation(n: int, at: float) -> tuple[ConversationState, list[Entry]]:
    cid = f"past-{n:07d}"
    entries = [
        Entry(
            cid,
            seq,
            at + seq,
            Party.USER if seq % 2 else Party.BOT,
            Content.text(f"message {seq} of conversation {n}"),
            frozenset({Party.USER, Party.BOT}),
        )
        for seq in range(1, PAST_MESSAGES + 1)
    ]
    state = ConversationState(cid, "demo", f"user-{n}", {"name": f"User {n}"}, PAST_MESSAGES + 1)
    return state, entries


def open_session(n: int, at: float) -> tuple[ConversationState, list[Entry]]:
    """A session waiting for an agent since ``at``, opened with the human button."""
    cid = f"open-{n:07d}"
    count = SEEN + MISSED if cid == RESUMED else 1
    entries = [
        Entry(
            cid,
            seq,
            at,
            Party.USER,
            Content.text(f"message {seq} while waiting"),
            frozenset({Party.USER}),
            session_id=f"{cid}/1",
        )
        for seq in range(1, count + 1)
    ]
    session = Session(f"{cid}/1", at, at, queued_at=at)
    state = ConversationState(
        cid, "demo", f"waiting-{n}", {"name": f"Waiting {n}"}, count + 1, session, 1
    )
    return state, entries


async def fill(data_dir: Path, past: int, sessions: int) -> None:
    """Write through the store, ``BATCH`` conversations at a time (one commit holds many)."""
    now = time.time()
    settings = {"demo": BotSettings(session_timeout=3600.0, queue_timeout=None)}
    async with open_sqlite_store(
        data_dir / DATABASE_FILENAME, settings=settings, synchronous="NORMAL"
    ) as store:

        async def write(state: ConversationState, entries: list[Entry]) -> None:
            await store.record(state, entries)
            for entry in entries:
                # Past conversations were answered long ago: the bot is owed nothing.
                store.bot_done(entry.conversation_id, entry.seq)

        made = [past_conversation(n, now - 86_400) for n in range(past)]
        made += [open_session(n, now - 60) for n in range(sessions)]
        for start in range(0, len(made), BATCH):
            async with trio.open_nursery() as nursery:
                for state, entries in made[start : start + BATCH]:
                    nursery.start_soon(write, state, entries)
        # One more commit carries the last answers to the bot's outbox.
        await store.record_presence("bench-agent", "offline")
        owed = await store.bot_backlog()
        if owed:
            raise RuntimeError(f"the fill left {len(owed)} entries owed to the bot")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def healthy(port: int) -> bool:
    """Whether ``GET /healthz`` answers 200 (a raw request, as cheap as it gets)."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def resume(ws_port: int, token: str, deadline: float) -> None:
    """Return as the user of ``RESUMED`` having seen ``SEEN`` messages; wait for the rest."""
    hello = {"type": "hello", "v": 1, "role": "user", "resume_token": token, "last_seq": SEEN}
    while True:
        try:
            with connect(f"ws://{HOST}:{ws_port}", open_timeout=2) as ws:
                ws.send(json.dumps(hello))
                seen: set[int] = set()
                while len(seen) < MISSED:
                    frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                    if frame.get("type") == "entry":
                        seen.add(int(frame["seq"]))
                if min(seen) != SEEN + 1 or max(seen) != SEEN + MISSED:
                    raise RuntimeError(f"resumed with the wrong entries: {sorted(seen)}")
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def one_start(
    template: Path, work: Path, label: str, timeout: float, root: Path = ROOT
) -> dict[str, Any]:
    """One start of the server in ``root`` (this tree, or a baseline's) on a copy of
    ``template``; a ``full`` one also times the resuming user."""
    label = label.replace(" ", "-")
    data_dir = work / f"data-{label}"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(template, data_dir)
    ws, http = free_port(), free_port()
    config = work / f"switchover-{label}.toml"
    write_config(
        config, agents=10, capacity=10, store="sqlite", data_dir=data_dir, ws=ws, http=http
    )
    command = [PYTHON, "-m", "transport.cli", "serve", "--config", str(config)]
    token = ResumeTokens(SECRET).issue(RESUMED, "demo")
    log = work / f"switchover-{label}.log"
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            pinned(SERVER_CPU, command),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            preexec_fn=default_interrupt,
        )
    try:
        deadline = started + timeout
        while not healthy(http):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no /healthz: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.005)
        to_health = time.monotonic() - started
        resumed: float | None = None
        if label.endswith("full"):
            resume(ws, token, deadline)
            resumed = time.monotonic() - started
        cpu = cpu_seconds(process.pid)
        rss = rss_kib(process.pid)
        stopping = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        stop = time.monotonic() - stopping
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "healthz_s": to_health,
        "resumed_s": resumed,
        "cpu_to_ready_s": cpu,
        "rss_mib": rss / 1024,
        "graceful_stop_s": stop,
        "exit_code": process.returncode,
    }


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def routing_at(commit: str) -> ModuleType:
    """``actors/machines/routing.py`` as it was at ``commit``, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{commit}:actors/machines/routing.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as file:
        file.write(source)
    spec = util.spec_from_file_location("routing_before", file.name)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(file.name)
    return module


def queue_alone(sessions: int) -> dict[str, float]:
    """CPU seconds for the desk's routing to take ``sessions`` requests one by one, as a
    restart re-asserts them (10 agents, nobody connected yet): this tree against the list
    queue of ``LIST_QUEUE_COMMIT``, in this process."""
    requests = [AgentRequest(f"c{n}", f"c{n}/1", "demo", float(n)) for n in range(sessions)]
    timings = {}
    for name, module in (("now", routing), ("list_queue", routing_at(LIST_QUEUE_COMMIT))):
        agents = [module.Agent(f"a{i}", f"A{i}", frozenset({"demo"}), 10) for i in range(10)]
        desk = module.Routing(agents, {"demo": BotSettings()}, starting=True)
        started = time.process_time()
        for request in requests:
            desk.request(request, 1.0)
        timings[name] = time.process_time() - started
    # As a restore hands them over now: one batch, settled once.
    agents = [routing.Agent(f"a{i}", f"A{i}", frozenset({"demo"}), 10) for i in range(10)]
    desk = routing.Routing(agents, {"demo": BotSettings()}, starting=True)
    started = time.process_time()
    desk.request_many(requests, 1.0)
    timings["batch"] = time.process_time() - started
    return timings


def compile_bytecode(root: Path = ROOT) -> None:
    """Compile the server's modules once, as an installed package is: with
    ``PYTHONDONTWRITEBYTECODE`` set (as in some shells), each start would otherwise spend
    most of a second compiling them."""
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", "actors", "transport"],
        cwd=root,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )


def baseline_tree(commit: str, work: Path) -> Path:
    """The server's code at ``commit`` (``git archive``), to start from the same virtual
    environment: ``python -m`` in that folder imports its ``actors`` and ``transport``."""
    tree = work / f"baseline-{commit}"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "actors", "transport"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    compile_bytecode(tree)
    return tree


def run(
    past: int, sessions: int, repeat: int, timeout: float, baseline: str | None = None
) -> dict[str, Any]:
    compile_bytecode()
    with scratch() as work:
        empty, full = work / "template-empty", work / "template-full"
        empty.mkdir()
        full.mkdir()
        starts: list[tuple[str, Path, Path]] = [("empty", empty, ROOT), ("full", full, ROOT)]
        if baseline is not None:
            tree = baseline_tree(baseline, work)
            starts += [(f"{baseline} empty", empty, tree), (f"{baseline} full", full, tree)]
        started = time.monotonic()
        trio.run(fill, full, past, sessions)
        fill_seconds = time.monotonic() - started
        print(f"filled {past:,} past + {sessions:,} open in {fill_seconds:.1f} s", file=sys.stderr)
        queue = queue_alone(sessions)
        print(f"the queue alone: {json.dumps(queue)}", file=sys.stderr)
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in starts}
        loads = [os.getloadavg()[0]]
        for n in range(repeat):
            for label, template, root in starts:
                result = one_start(template, work, label, timeout, root)
                runs[label].append(result)
                loads.append(os.getloadavg()[0])
                print(f"run {n + 1} {label}: {json.dumps(result)}", file=sys.stderr)
    summary = {
        label: {
            key: median(results, key)
            for key in ("healthz_s", "resumed_s", "cpu_to_ready_s", "rss_mib", "graceful_stop_s")
        }
        for label, results in runs.items()
    }
    return {
        "date": time.strftime("%Y-%m-%d"),
        "past_conversations": past,
        "open_sessions": sessions,
        "fill_seconds": fill_seconds,
        "repeat": repeat,
        "baseline": baseline,
        "median": summary,
        "queue_alone_cpu_s": queue,
        "runs": runs,
        "load_average_1m": {"min": min(loads), "max": max(loads)},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"{r['past_conversations']:,} past conversations and {r['open_sessions']:,} open "
        f"sessions against an empty data dir; medians of {r['repeat']} starts "
        f"(load average {r['load_average_1m']['min']:.1f}-{r['load_average_1m']['max']:.1f})"
    )
    header = f"{'data dir':<20}{'/healthz s':>12}{'resumed s':>12}{'CPU s':>8}"
    print(f"{header}{'RSS MiB':>10}{'stop s':>9}")
    for label, m in r["median"].items():
        resumed = f"{m['resumed_s']:.2f}" if m["resumed_s"] is not None else "-"
        print(
            f"{label:<20}{m['healthz_s']:>12.2f}{resumed:>12}{m['cpu_to_ready_s']:>8.2f}"
            f"{m['rss_mib']:>10.1f}{m['graceful_stop_s']:>9.2f}"
        )
    ratio = r["median"]["full"]["healthz_s"] / r["median"]["empty"]["healthz_s"]
    print(f"full / empty, time to /healthz: {ratio:.2f}x")
    baseline = r.get("baseline")
    if baseline is not None:
        for label in ("empty", "full"):
            now, before = r["median"][label], r["median"][f"{baseline} {label}"]
            print(
                f"{label}, this tree / {baseline}: CPU {now['cpu_to_ready_s']:.2f} / "
                f"{before['cpu_to_ready_s']:.2f} s "
                f"({now['cpu_to_ready_s'] / before['cpu_to_ready_s']:.2f}x), /healthz "
                f"{now['healthz_s']:.2f} / {before['healthz_s']:.2f} s"
            )
    queue = r["queue_alone_cpu_s"]
    print(
        f"the desk's queue alone, {r['open_sessions']:,} requests: {queue['now']:.3f} s CPU, "
        f"the list queue of {LIST_QUEUE_COMMIT} {queue['list_queue']:.2f} s "
        f"({queue['list_queue'] / queue['now']:.0f}x); as one batch {queue['batch']:.3f} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--past", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="10,000 past, 1,000 open, 1 run")
    parser.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also start the server as it was at COMMIT, alternating, on the same data dirs",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.past, args.sessions, args.repeat = 10_000, 1_000, 1
    report = run(args.past, args.sessions, args.repeat, args.timeout, args.baseline)
    print_table(report)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
