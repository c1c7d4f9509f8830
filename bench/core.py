"""Benchmark of the conversation core, in process (run by hand: ``python bench/core.py``).

Three measurements, printed as a table and written to ``bench/results/core.json``:

1. Routed messages per second through live sessions: N conversations, each with a user task
   and an agent (agents serve many chats each), ping-ponging through the switchboard and the
   desk. In the same run, a naive chain of the same shape (user task -> conversation task ->
   agent task over trio memory channels, one await per hop) for the ratio, and the same chain
   with each conversation task owning its idle deadline the naive way (a cancel scope moved
   on every message), the "naive actor".
2. Memory per live conversation: tracemalloc over N conversations in live sessions, all of
   the core counted (actor, state, desk, transcript in the memory store), and the same without
   the transcript (a store that keeps only states).
3. The longest scheduler stall while N sessions expire at the same moment: a heartbeat task
   sleeps 1 ms at a time and records how late it wakes. Measured with the default
   ``expiry_batch``, again with the collector's generations frozen after warm-up
   (``gc.freeze()``), and with every expiry in one batch (what a timer per conversation
   does). The longest garbage-collection pause in the window is reported next to it.

Options: ``--conversations N`` (default 10,000), ``--rounds R`` (round trips per conversation),
``--runs K`` (throughput runs of each side, interleaved; medians reported), ``--quick``
(N=1,000, for a smoke run).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import (
    SESSION_EXPIRED,
    SESSION_START,
    AgentProfile,
    AgentSays,
    BotBinding,
    BotEvent,
    BotSettings,
    Clock,
    Content,
    ConversationState,
    Delivery,
    Desk,
    Entry,
    MemoryStore,
    Party,
    Presence,
    Switchboard,
    Transcript,
    UserSays,
    open_switchboard,
)
from actors.trio.collector import tune_collector
from actors.trio.mailbox import Mailbox

AGENTS = 100
DEFAULT_EXPIRY_BATCH: int = inspect.signature(Switchboard).parameters["expiry_batch"].default
PROFILER: Any = None  # a cProfile.Profile to look inside the throughput run
STEPS: Any = None  # a StepCounter counting scheduler passes in the measured window
RESULTS = Path(__file__).resolve().parent / "results" / "core.json"


class QuietBot:
    """A bot that answers nothing and counts session endings."""

    def __init__(self) -> None:
        self.expired = 0
        self.all_expired = trio.Event()
        self.expect = 0

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        if event.content.is_payload(SESSION_EXPIRED):
            self.expired += 1
            if self.expired >= self.expect:
                self.all_expired.set()
        return ()


class Inbox(Mailbox[Delivery]):
    """A client's sink that feeds one task: ``deliver`` never blocks, the task takes whatever
    arrived in one go. The core's own inbox (a list and a parked task) rather than a trio
    memory channel: the clients are the benchmark's drivers, and their own scheduling cost
    is not the router's."""

    __slots__ = ()

    deliver = Mailbox.put


class NullSink:
    def deliver(self, item: Delivery) -> None:
        pass


class StateOnlyStore(MemoryStore):
    """Keeps states but no transcript: isolates what the live actors themselves cost."""

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        await super().record(state, ())


class FrozenClock(Clock):
    """Wall time that stands still while frozen, so that many sessions can be given the
    very same deadline."""

    frozen: float | None = None

    def now(self) -> float:
        return self.frozen if self.frozen is not None else super().now()


def desk_for(n: int, settings: BotSettings) -> Desk:
    capacity = max(1, math.ceil(n / AGENTS))
    profiles = [
        AgentProfile(f"agent{i}", f"Agent {i}", frozenset({"bench"}), capacity)
        for i in range(AGENTS)
    ]
    return Desk({"bench": settings}, profiles)


async def go_live(
    board: Switchboard,
    desk: Desk,
    n: int,
    agent_sinks: dict[str, Any],
    attached: dict[str, Any] | None = None,
) -> list[str]:
    """Open ``n`` conversations, start a session in each, and bring the agents online; return
    once every session has been picked up (each pickup hands its agent a transcript).
    ``attached`` is filled with the sink each agent was attached with (its connection)."""
    all_live = trio.Event()
    picked_up = [0]

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def deliver(self, item: Delivery) -> None:
            if isinstance(item, Transcript):
                picked_up[0] += 1
                if picked_up[0] == n:
                    all_live.set()
            self.inner.deliver(item)

    for agent_id, sink in agent_sinks.items():
        connection = Counting(sink)
        if attached is not None:
            attached[agent_id] = connection
        desk.attach(agent_id, connection)
        desk.set_presence(agent_id, Presence.ONLINE)
    convs = []
    for i in range(n):
        state = await board.open_conversation("bench", conversation_id=f"c{i}")
        convs.append(state.conversation_id)
    for conv in convs:
        board.submit(conv, UserSays(Content.payload(SESSION_START)))
    with trio.fail_after(120):
        await all_live.wait()
    return convs


# -- 1. throughput ------------------------------------------------------------------------


def rates(messages: int, elapsed: float, cpu: float) -> dict[str, float]:
    """Per wall second, and per second of this process's CPU time: on a shared machine the
    second is steadier, since other processes' load stretches wall time but not CPU time
    (both sides run on one thread, so the two agree on an idle machine)."""
    return {
        "messages": messages,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "per_second": messages / elapsed,
        "per_cpu_second": messages / cpu,
    }


def collector_for_run(tuned: bool) -> Any:
    """The collector as the server runs it (``tuned``: frozen after start-up, raised
    thresholds, ``actors/trio/collector.py``), or as Python starts; returns how to undo it."""
    thresholds = gc.get_threshold()
    if tuned:
        tune_collector()
    if STEPS is not None:
        STEPS.steps, STEPS.counting = 0, True

    def undo() -> None:
        if STEPS is not None:
            STEPS.counting = False
        gc.unfreeze()
        gc.set_threshold(*thresholds)

    return undo


async def core_throughput(n: int, rounds: int, tuned_gc: bool = False) -> dict[str, float]:
    settings = BotSettings(agent_capacity=max(1, math.ceil(n / AGENTS)))
    desk = desk_for(n, settings)
    agent_boxes = {f"agent{i}": Inbox() for i in range(AGENTS)}
    async with open_switchboard(
        {"bench": BotBinding(QuietBot(), settings)}, {"desk": desk}, inbox_limit=10_000
    ) as board:
        sinks: dict[str, Any] = {}
        convs = await go_live(board, desk, n, agent_boxes, sinks)
        user_boxes = {}
        for conv in convs:
            inbox = Inbox()
            user_boxes[conv] = inbox
            board.subscribe(conv, inbox)
        hello = UserSays(Content.text("hello"))
        replies = {a: AgentSays(a, Content.text("hi there")) for a in agent_boxes}
        finished = trio.Event()
        remaining = [n]

        async def user(conv: str, inbox: Inbox) -> None:
            take = inbox.take
            agent_party = Party.AGENT
            for _ in range(rounds):
                board.submit(conv, hello, origin=inbox)
                answered = False
                while not answered:
                    for item in await take():
                        if isinstance(item, Entry) and item.sender is agent_party:
                            answered = True
            remaining[0] -= 1
            if remaining[0] == 0:
                finished.set()

        async def agent(agent_id: str, inbox: Inbox) -> None:
            origin = sinks[agent_id]
            take = inbox.take
            reply = replies[agent_id]
            submit = board.submit
            user_party = Party.USER
            while True:
                for item in await take():
                    if isinstance(item, Entry) and item.sender is user_party:
                        submit(item.conversation_id, reply, origin=origin)

        async with trio.open_nursery() as nursery:
            for agent_id, inbox in agent_boxes.items():
                nursery.start_soon(agent, agent_id, inbox)
            await trio.sleep(0.1)
            for inbox in user_boxes.values():  # drop the setup notices
                inbox.take_nowait()
            undo = collector_for_run(tuned_gc)
            started = time.perf_counter()
            cpu_started = time.process_time()
            if PROFILER is not None:
                PROFILER.enable()
            for conv, inbox in user_boxes.items():
                nursery.start_soon(user, conv, inbox)
            await finished.wait()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            undo()
            if PROFILER is not None:
                PROFILER.disable()
            nursery.cancel_scope.cancel()
    return rates(2 * n * rounds, elapsed, cpu)


async def naive_throughput(
    n: int, rounds: int, tuned_gc: bool = False, idle_timeout: float | None = None
) -> dict[str, float]:
    """The same shape with nothing but trio memory channels, one await per hop.

    With ``idle_timeout``, the "naive actor": each conversation task also owns its idle
    deadline the textbook way, a cancel scope whose deadline moves on every message (what a
    conversation actor written straight from trio's documentation does; trio-costs.md
    measures it), since every conversation actor must own one."""
    finished = trio.Event()
    remaining = [n]
    expired = [0]
    to_agent = [trio.open_memory_channel[tuple[int, str]](0) for _ in range(AGENTS)]
    to_conv = [trio.open_memory_channel[tuple[str, str]](0) for _ in range(n)]
    to_user = [trio.open_memory_channel[str](0) for _ in range(n)]

    async def user(i: int) -> None:
        send = to_conv[i][0]
        receive = to_user[i][1]
        for _ in range(rounds):
            await send.send(("user", "hello"))
            await receive.receive()
        remaining[0] -= 1
        if remaining[0] == 0:
            finished.set()

    async def conversation(i: int) -> None:
        receive = to_conv[i][1]
        agent_send = to_agent[i % AGENTS][0]
        user_send = to_user[i][0]
        async for sender, text in receive:
            if sender == "user":
                await agent_send.send((i, text))
            else:
                await user_send.send(text)

    async def timed_conversation(i: int, timeout: float) -> None:
        receive = to_conv[i][1]
        agent_send = to_agent[i % AGENTS][0]
        user_send = to_user[i][0]
        with trio.CancelScope(deadline=trio.current_time() + timeout) as idle:
            async for sender, text in receive:
                idle.deadline = trio.current_time() + timeout
                if sender == "user":
                    await agent_send.send((i, text))
                else:
                    await user_send.send(text)
        if idle.cancelled_caught:
            expired[0] += 1

    async def agent(k: int) -> None:
        async for i, _text in to_agent[k][1]:
            await to_conv[i][0].send(("agent", "hi there"))

    async with trio.open_nursery() as nursery:
        for k in range(AGENTS):
            nursery.start_soon(agent, k)
        for i in range(n):
            if idle_timeout is None:
                nursery.start_soon(conversation, i)
            else:
                nursery.start_soon(timed_conversation, i, idle_timeout)
        await trio.sleep(0.1)
        undo = collector_for_run(tuned_gc)
        started = time.perf_counter()
        cpu_started = time.process_time()
        for i in range(n):
            nursery.start_soon(user, i)
        await finished.wait()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        undo()
        nursery.cancel_scope.cancel()
    assert expired[0] == 0, "no conversation may expire during the run"
    return rates(2 * n * rounds, elapsed, cpu)


async def naive_actor_throughput(n: int, rounds: int, tuned_gc: bool = False) -> dict[str, float]:
    return await naive_throughput(n, rounds, tuned_gc, idle_timeout=3600.0)


class StepCounter(trio.abc.Instrument):
    """Counts trio task steps (one resumption of one task) while ``counting``."""

    def __init__(self) -> None:
        self.steps = 0
        self.counting = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.counting:
            self.steps += 1


def task_steps(n: int, rounds: int) -> dict[str, float]:
    """Scheduler passes per routed message on each side, over the measured window only (an
    instrument slows the run, so these runs are not timed)."""
    global STEPS
    STEPS = StepCounter()
    try:
        steps = {}
        for name, side in (
            ("core", core_throughput),
            ("naive", naive_throughput),
            ("naive_actor", naive_actor_throughput),
        ):
            result = trio.run(side, n, rounds, False, instruments=[STEPS])
            steps[name] = STEPS.steps / result["messages"]
    finally:
        STEPS = None
    return steps


def throughput(n: int, rounds: int, runs: int, tuned_gc: bool) -> dict[str, Any]:
    """Both sides ``runs`` times, interleaved so that load from elsewhere on a shared machine
    hits both alike; medians, and the ratio of each pair run back to back."""
    core: list[dict[str, float]] = []
    naive: list[dict[str, float]] = []
    naive_actor: list[dict[str, float]] = []
    for _ in range(runs):
        core.append(trio.run(core_throughput, n, rounds, tuned_gc))
        naive.append(trio.run(naive_throughput, n, rounds, tuned_gc))
        naive_actor.append(trio.run(naive_actor_throughput, n, rounds, tuned_gc))
    summary: dict[str, Any] = {"gc_tuned": tuned_gc}
    for key in ("per_second", "per_cpu_second"):
        core_rate = statistics.median(r[key] for r in core)
        naive_rate = statistics.median(r[key] for r in naive)
        actor_rate = statistics.median(r[key] for r in naive_actor)
        summary[key] = {
            "core": core_rate,
            "naive": naive_rate,
            "ratio": core_rate / naive_rate,
            "pair_ratios": [c[key] / v[key] for c, v in zip(core, naive, strict=True)],
            "naive_actor": actor_rate,
            "ratio_to_naive_actor": core_rate / actor_rate,
            "pair_ratios_to_naive_actor": [
                c[key] / v[key] for c, v in zip(core, naive_actor, strict=True)
            ],
        }
    # The headline figures, per wall second.
    summary["core_msgs_per_s"] = summary["per_second"]["core"]
    summary["naive_chain_msgs_per_s"] = summary["per_second"]["naive"]
    summary["naive_actor_msgs_per_s"] = summary["per_second"]["naive_actor"]
    summary["ratio"] = summary["per_second"]["ratio"]
    summary["runs"] = {"core": core, "naive": naive, "naive_actor": naive_actor}
    return summary


# -- 2. memory ----------------------------------------------------------------------------


async def memory_per_conversation(n: int, store_transcript: bool) -> float:
    settings = BotSettings(agent_capacity=max(1, math.ceil(n / AGENTS)))
    desk = desk_for(n, settings)
    store = MemoryStore() if store_transcript else StateOnlyStore()
    sinks = {f"agent{i}": NullSink() for i in range(AGENTS)}
    async with open_switchboard(
        {"bench": BotBinding(QuietBot(), settings)}, {"desk": desk}, store
    ) as board:
        await trio.sleep(0.05)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await go_live(board, desk, n, sinks)
        await trio.sleep(0.1)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert board.active_conversations == n
    return (after - before) / n


def rss_per_conversation(n: int) -> float:
    """RSS growth over ``n`` live conversations (includes allocator slack)."""
    import psutil

    process = psutil.Process()

    async def main() -> float:
        settings = BotSettings(agent_capacity=max(1, math.ceil(n / AGENTS)))
        desk = desk_for(n, settings)
        sinks = {f"agent{i}": NullSink() for i in range(AGENTS)}
        async with open_switchboard(
            {"bench": BotBinding(QuietBot(), settings)}, {"desk": desk}
        ) as board:
            await trio.sleep(0.05)
            gc.collect()
            before = process.memory_info().rss
            await go_live(board, desk, n, sinks)
            await trio.sleep(0.1)
            gc.collect()
            return (process.memory_info().rss - before) / n

    return trio.run(main)


# -- 3. the expiry stall ------------------------------------------------------------------


async def expiry_stall(
    n: int, batch: int, freeze_gc: bool = False, tuned: bool = False
) -> dict[str, float]:
    timeout = 60.0
    settings = BotSettings(
        session_timeout=timeout,
        agent_capacity=max(1, math.ceil(n / AGENTS)),
    )
    desk = desk_for(n, settings)
    bot = QuietBot()
    bot.expect = n
    clock = FrozenClock()
    sinks = {f"agent{i}": NullSink() for i in range(AGENTS)}
    async with open_switchboard(
        {"bench": BotBinding(bot, settings)},
        {"desk": desk},
        clock=clock,
        hibernate_after=None,
        expiry_batch=batch,
    ) as board:
        clock.frozen = clock.now()
        deadline_wall = clock.frozen + timeout
        await go_live(board, desk, n, sinks)
        # Let the (real) clock run again: every session was last active at the same instant.
        clock.frozen = None
        deadline = clock.to_trio(deadline_wall)
        lateness: list[float] = []
        gc.collect()
        thresholds = gc.get_threshold()
        if tuned:
            # What the server does after start-up (actors/trio/collector.py): freeze, and raise
            # the collector's thresholds.
            tune_collector()
        elif freeze_gc:
            # What a long-running server does after warming up: objects that live for the
            # whole run leave the collector's generations, so a full collection no longer
            # walks every conversation in memory.
            gc.freeze()
        gc_pauses: list[float] = []
        gc_started = [0.0]

        def gc_timer(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            elif info["generation"] == 2 or time.perf_counter() - gc_started[0] > 0.001:
                gc_pauses.append(time.perf_counter() - gc_started[0])

        async def heartbeat() -> None:
            while True:
                expected = trio.current_time() + 0.001
                await trio.sleep(0.001)
                lateness.append(trio.current_time() - expected)

        async with trio.open_nursery() as nursery:
            await trio.sleep_until(deadline - 0.5)
            nursery.start_soon(heartbeat)
            gc.callbacks.append(gc_timer)
            try:
                with trio.fail_after(120):
                    await bot.all_expired.wait()
            finally:
                gc.callbacks.remove(gc_timer)
            finished = trio.current_time()
            nursery.cancel_scope.cancel()
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    return {
        "gc_frozen": freeze_gc or tuned,
        "gc_tuned": tuned,
        "longest_gc_pause_ms": max(gc_pauses, default=0.0) * 1000,
        "sessions": n,
        "expiry_batch": batch,
        "max_stall_ms": max(lateness) * 1000,
        "p99_stall_ms": sorted(lateness)[int(len(lateness) * 0.99)] * 1000,
        "all_expired_after_deadline_s": finished - deadline,
    }


# -- the report ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3, help="throughput runs of each side")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["throughput", "memory", "stall"])
    args = parser.parse_args()
    n = 1_000 if args.quick else args.conversations
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "trio": trio.__version__,
        "conversations": n,
    }
    if args.only in (None, "throughput"):
        results["throughput"] = throughput(n, args.rounds, args.runs, tuned_gc=False)
        results["throughput_gc_tuned"] = throughput(n, args.rounds, args.runs, tuned_gc=True)
        results["task_steps_per_message"] = task_steps(n, args.rounds)
    if args.only in (None, "memory"):
        results["memory"] = {
            "bytes_per_live_conversation": trio.run(memory_per_conversation, n, True),
            "bytes_per_live_conversation_without_transcript": trio.run(
                memory_per_conversation, n, False
            ),
            "rss_bytes_per_live_conversation": rss_per_conversation(n),
        }
    if args.only in (None, "stall"):
        results["stall"] = {
            "default_batch": trio.run(expiry_stall, n, DEFAULT_EXPIRY_BATCH),
            "default_batch_gc_frozen": trio.run(expiry_stall, n, DEFAULT_EXPIRY_BATCH, True),
            "default_batch_gc_tuned": trio.run(expiry_stall, n, DEFAULT_EXPIRY_BATCH, False, True),
            "one_batch": trio.run(expiry_stall, n, n),
        }
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() and args.only else {}
    RESULTS.write_text(json.dumps({**existing, **results}, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")


def print_table(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    for key, collector in (("throughput", "default"), ("throughput_gc_tuned", "gc tuned")):
        if key not in results:
            continue
        t = results[key]
        wall, cpu = t["per_second"], t["per_cpu_second"]
        rows += [
            (f"routed msgs/s through live sessions ({collector})", f"{wall['core']:,.0f}", ""),
            (f"naive channel chain msgs/s ({collector})", f"{wall['naive']:,.0f}", ""),
            (f"ratio core / naive, medians ({collector})", f"{wall['ratio']:.2f}x", ">= 2x"),
            (
                "  each pair back to back / per CPU second",
                " ".join(f"{r:.2f}" for r in wall["pair_ratios"]) + f" / {cpu['ratio']:.2f}x",
                "",
            ),
            (
                f"naive actor (timer per message) msgs/s ({collector})",
                f"{wall['naive_actor']:,.0f}",
                "",
            ),
            (
                f"ratio core / naive actor, medians ({collector})",
                f"{wall['ratio_to_naive_actor']:.2f}x",
                "",
            ),
            (
                "  each pair back to back / per CPU second",
                " ".join(f"{r:.2f}" for r in wall["pair_ratios_to_naive_actor"])
                + f" / {cpu['ratio_to_naive_actor']:.2f}x",
                "",
            ),
        ]
    if "task_steps_per_message" in results:
        steps = results["task_steps_per_message"]
        rows.append(
            (
                "trio task steps per routed message: core / naive / naive actor",
                f"{steps['core']:.2f} / {steps['naive']:.2f} / {steps['naive_actor']:.2f}",
                "",
            )
        )
    if "memory" in results:
        m = results["memory"]
        rows += [
            (
                "KB per live conversation (all, tracemalloc)",
                f"{m['bytes_per_live_conversation'] / 1024:.2f}",
                "",
            ),
            (
                "KB per live conversation (no transcript)",
                f"{m['bytes_per_live_conversation_without_transcript'] / 1024:.2f}",
                "<= 6 KB",
            ),
            (
                "KB per live conversation (RSS growth; arenas reused)",
                f"{m['rss_bytes_per_live_conversation'] / 1024:.2f}",
                "",
            ),
        ]
    if "stall" in results:
        for name, s in results["stall"].items():
            frozen = ", gc frozen" if s["gc_frozen"] else ""
            frozen = ", gc tuned" if s.get("gc_tuned") else frozen
            rows.append(
                (
                    f"max stall, {s['sessions']:,} expiries (batch {s['expiry_batch']}{frozen})",
                    f"{s['max_stall_ms']:.1f} ms",
                    "< 50 ms" if name.startswith("default") else "",
                )
            )
            rows.append(
                (
                    f"  p99 stall / longest GC pause{frozen}",
                    f"{s['p99_stall_ms']:.1f} / {s['longest_gc_pause_ms']:.0f} ms",
                    "",
                )
            )
            rows.append(
                (
                    f"  last expiry after the deadline (batch {s['expiry_batch']})",
                    f"{s['all_expired_after_deadline_s'] * 1000:.0f} ms",
                    "",
                )
            )
    width = max(len(r[0]) for r in rows)
    print(
        f"\nCore bench: {results['conversations']:,} conversations, {results['date']}, "
        f"nproc {results['nproc']}, Python {results['python']}, trio {results['trio']}"
    )
    print(f"{'measure'.ljust(width)}  {'value':>12}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:>12}  {target}")


if __name__ == "__main__":
    main()
