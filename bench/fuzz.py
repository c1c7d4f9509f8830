"""The long fuzz run: hostile frames by the hundred thousand against a real ``switchover serve``.

tests/test_fuzz.py checks the property on a few hundred frames in the test suite; this runs
the same kinds of frames (every family of every role, lone surrogates, numbers beyond
±(2^53 - 1), ``1e400``, ``NaN``, deep nesting, oversize frames, hostile hellos) for as many
frames as asked, from several connections at once, against the server as a subprocess with
its SQLite store, while a control conversation talks to the bot and a bystander waits.

It counts what must stay at zero (a server crash, an answer with a code docs/protocol.md
does not list or one that blames the server, a control message lost or out of order, a
frame to the bystander, a connection closed with an undocumented code) and the server's
resident memory before and after. Writes bench/results/fuzz.json.

    .venv/bin/python bench/fuzz.py                      # 100,000 frames
    .venv/bin/python bench/fuzz.py --frames 20000 --listener trio-websocket
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import BENCH, HOST, LISTENERS, PYTHON, free_port, running, scratch
from transport.protocol import frames as wire

INPUT_ERRORS = wire.ERROR_CODES - {"internal_error", "conversation_failed", "store_unavailable"}
HELLO_CLOSES = {4400, 4401, 4404}
#: Close codes a connection may get after hello for what it sent (docs/protocol.md).
LATER_CLOSES = {1009, 4408}
SERVER_FRAMES = {
    "welcome",
    "entry",
    "ack",
    "pong",
    "error",
    "typing",
    "transcript",
    "desk",
    "event",
}
AGENT_TOKEN = "fuzz-agent-token-0123456789"
BOT_TOKEN = "fuzz-bot-token-0123456789"
BATCH = 40  # frames between two pings: bounds what is in flight per connection

CONFIG = """\
secret = "fuzz-secret-not-for-production"
default_bot = "demo"
[listeners]
host = "{host}"
ws_port = {ws}
http_port = {http}
websocket = "{listener}"
[store]
kind = "sqlite"
data_dir = {data_dir}
[limits]
rate = 1000000.0
burst = 1000000
max_frame_bytes = 8192
new_conversations_per_minute = 0
auth_failures = 0
[logging]
level = "warning"
[bots.demo]
adapter = "demo"
token = "{bot_token}"
[agents.fuzz]
name = "Fuzz"
token = "{agent_token}"
"""


# -- hostile frames -------------------------------------------------------------------------

WORDS = [
    "\ud800",
    "a\udfffb",
    "\udbff\udc00",
    "\x00",
    "\u202e",
    "notice",
    "LIVECHAT_SESSION_START",
    "LIVECHAT_SESSION_END",
    "LIVECHAT_SESSION_EXPIRED",
    "",
    "hi",
    "ünïcödé",
]
NUMBERS: list[Any] = [0, -1, 7, 2**53 - 1, 2**53, -(2**53), 2**63, 2**64, 1.5, 1e308]
RAW = {"@1e400@": "1e400", "@-1e400@": "-1e400", "@NaN@": "NaN", "@Inf@": "Infinity"}
TYPES = ["text", "payload", "question", "notice", "", "x" * 65, "\ud800"]


class Hostile:
    """Random hostile frames (a plain ``random.Random``: millions cost seconds)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def text(self) -> str:
        r = self.r
        pick = r.random()
        if pick < 0.6:
            return r.choice(WORDS)
        if pick < 0.9:
            return "".join(chr(r.randrange(0x20, 0x3000)) for _ in range(r.randrange(12)))
        return "x" * r.randrange(20_000)

    def number(self) -> Any:
        r = self.r
        return r.choice([*NUMBERS, *RAW, r.randrange(-(2**70), 2**70)])

    def value(self, depth: int = 0) -> Any:
        r = self.r
        pick = r.random()
        if depth > 2 or pick < 0.4:
            return r.choice([None, True, self.text(), self.number()])
        if pick < 0.55:
            nested: Any = self.text()
            for level in range(r.randrange(20, 45)):
                nested = [nested] if level % 2 else {"k": nested}
            return nested
        if pick < 0.8:
            return {self.text(): self.value(depth + 1) for _ in range(r.randrange(4))}
        return [self.value(depth + 1) for _ in range(r.randrange(4))]

    def frame(self, role: str, own: str, control: str) -> str:
        r = self.r
        target = r.choice([own, control, "no-such-chat", "", self.text()])
        kinds = {
            "user": ["message", "typing", "ping"],
            "agent": [
                "message",
                "typing",
                "presence",
                "sign_off",
                "transfer",
                "claim",
                "replay",
                "ping",
            ],
            "bot": ["message", "ping"],
        }[role]
        kind = r.choice([*kinds, "hello", "dance"])
        fields: dict[str, Any] = {
            "conversation_id": target,
            "content_type": r.choice(TYPES),
            "content": r.choice([{"text": self.text()}, self.value()]),
            "status": r.choice(["online", "away", "offline", "gone"]),
            "to_agent": r.choice([None, "fuzz", self.text()]),
            "after_seq": r.choice([0, 5, self.number()]),
            "messages": [
                {"content_type": r.choice(TYPES), "content": {"text": self.text()}}
                for _ in range(r.choice([0, 1, 2, 21]))
            ],
            "id": r.choice([self.text()[:70], self.number()]),
            "extra": self.value(),
        }
        frame = {"type": kind}
        for name, value in fields.items():
            if r.random() < 0.6:
                frame[name] = value
        text = json.dumps(frame)
        for placeholder, raw in RAW.items():
            text = text.replace(f'"{placeholder}"', raw)
        if r.random() < 0.03:  # not JSON at all, or cut short
            text = text[: r.randrange(len(text) + 1)]
        return text

    def hello(self) -> str:
        r = self.r
        role = r.choice(["user", "agent", "bot"])
        data: dict[str, Any] = {"type": "hello", "v": r.choice([1, 1, 1, 2]), "role": role}
        if role == "user":
            for name, value in {
                "metadata": self.value(),
                "bot_id": r.choice(["demo", self.text()]),
                "resume_token": self.text(),
                "last_seq": self.number(),
            }.items():
                if r.random() < 0.5:
                    data[name] = value
        else:
            data["token"] = r.choice([AGENT_TOKEN, BOT_TOKEN, self.text()])
            if r.random() < 0.5:
                data["last_seqs"] = {self.text(): self.number()}
        text = json.dumps(data)
        for placeholder, raw in RAW.items():
            text = text.replace(f'"{placeholder}"', raw)
        return text


# -- the run --------------------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.frames = 0
        self.hellos = 0
        self.problems: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.examples: list[str] = []
        self.control_id = ""
        self.control_ready = trio.Event()

    def problem(self, kind: str, detail: str) -> None:
        self.problems[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail[:300]}")


def hello_text(role: str) -> str:
    frame: dict[str, Any] = {"type": "hello", "v": 1, "role": role}
    if role == "agent":
        frame["token"] = AGENT_TOKEN
    elif role == "bot":
        frame["token"] = BOT_TOKEN
    return json.dumps(frame)


async def receive_until_pong(ws: WebSocketConnection, ping_id: str, tally: Tally) -> None:
    while True:
        frame = json.loads(await ws.get_message())
        kind = frame.get("type")
        if kind not in SERVER_FRAMES:
            tally.problem("unknown frame", json.dumps(frame))
        if kind == "error":
            tally.codes[frame["code"]] += 1
            if frame["code"] not in INPUT_ERRORS:
                tally.problem("undocumented or server error", json.dumps(frame))
        if kind == "pong" and frame.get("id") == ping_id:
            return


async def attacker(url: str, seed: int, budget: int, control: str, tally: Tally) -> None:
    try:
        await attack(url, seed, budget, control, tally)
    except (HandshakeError, OSError, trio.TooSlowError, ConnectionClosed) as exc:
        tally.problem("server unreachable or stuck", repr(exc))
        tally.frames = max(tally.frames, budget)  # stop everyone: the run is over


async def attack(url: str, seed: int, budget: int, control: str, tally: Tally) -> None:
    hostile = Hostile(seed)
    r = hostile.r
    while tally.frames < budget:
        if r.random() < 0.2:
            tally.hellos += 1
            async with open_websocket_url(url) as ws:
                await ws.send_message(hostile.hello())
                try:
                    with trio.fail_after(10):
                        first = json.loads(await ws.get_message())
                    if first.get("type") != "welcome":
                        tally.problem("hello answered with a frame", json.dumps(first))
                except ConnectionClosed as closed:
                    code = closed.reason.code if closed.reason else None
                    if code not in HELLO_CLOSES:
                        tally.problem("hello closed with an undocumented code", str(code))
            continue
        role = r.choice(["user", "agent", "bot"])
        async with open_websocket_url(url, message_queue_size=0) as ws:
            await ws.send_message(hello_text(role))
            welcome = json.loads(await ws.get_message())
            own = welcome.get("conversation_id", "")
            try:
                for batch in range(r.randrange(1, 15)):
                    for _ in range(BATCH):
                        await ws.send_message(hostile.frame(role, own, control))
                        tally.frames += 1
                    ping_id = f"p{batch}"
                    await ws.send_message(json.dumps({"type": "ping", "id": ping_id}))
                    with trio.fail_after(30):
                        await receive_until_pong(ws, ping_id, tally)
            except ConnectionClosed as closed:
                code = closed.reason.code if closed.reason else None
                if code not in LATER_CLOSES:
                    tally.problem("closed with an undocumented code", str(code))


async def control_loop(url: str, done: trio.Event, tally: Tally) -> tuple[str, int]:
    """A user talking to the demo bot all along: every message acknowledged, in order."""
    sent = 0
    try:
        return await control_talk(url, done, tally)
    except (HandshakeError, OSError, trio.TooSlowError, ConnectionClosed) as exc:
        tally.problem("control connection lost", repr(exc))
        return tally.control_id, sent


async def control_talk(url: str, done: trio.Event, tally: Tally) -> tuple[str, int]:
    async with open_websocket_url(url) as ws:
        await ws.send_message(hello_text("user"))
        welcome = json.loads(await ws.get_message())
        conversation = str(welcome["conversation_id"])
        tally.control_id = conversation
        tally.control_ready.set()
        last_seq = 0
        sent = 0
        while not done.is_set():
            sent += 1
            await ws.send_message(
                json.dumps(
                    {
                        "type": "message",
                        "id": f"c{sent}",
                        "content_type": "text",
                        "content": {"text": f"control {sent}"},
                    }
                )
            )
            with trio.fail_after(30):
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "error":
                        tally.problem("control refused", json.dumps(frame))
                        break
                    if frame["type"] == "ack" and frame["id"] == f"c{sent}":
                        if frame["seq"] <= last_seq:
                            tally.problem("control out of order", json.dumps(frame))
                        last_seq = frame["seq"]
                        break
            await trio.sleep(0.01)
        return conversation, sent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(url: str, pid: int, frames: int, connections: int, seed: int) -> dict[str, Any]:
    tally = Tally()
    done = trio.Event()
    result: dict[str, Any] = {}
    async with open_websocket_url(url) as bystander:
        await bystander.send_message(hello_text("user"))
        await bystander.get_message()  # welcome
        async with trio.open_nursery() as nursery:

            async def control() -> None:
                result["control"] = await control_loop(url, done, tally)

            nursery.start_soon(control)
            await tally.control_ready.wait()
            control_id = tally.control_id
            started = time.monotonic()
            # A warm-up slice first, so the memory figure compares a server in its stride.
            async with trio.open_nursery() as warm:
                for n in range(connections):
                    warm.start_soon(attacker, url, seed + n, frames // 20, control_id, tally)
            rss_before = rss_kib(pid)
            samples: list[tuple[int, int]] = []

            async def sample_memory() -> None:
                # The server's memory every tenth of the run: a leak grows with the frames,
                # caches and the allocator's arenas level off.
                step = max(1, frames // 10)
                mark = tally.frames + step
                while True:
                    await trio.sleep(0.2)
                    if tally.frames >= mark:
                        samples.append((tally.frames, rss_kib(pid)))
                        mark += step

            async with trio.open_nursery() as sampling:
                sampling.start_soon(sample_memory)
                async with trio.open_nursery() as attackers:
                    for n in range(connections):
                        attackers.start_soon(
                            attacker, url, seed + 1000 + n, frames, control_id, tally
                        )
                sampling.cancel_scope.cancel()
            done.set()
        elapsed = time.monotonic() - started
        rss_after = rss_kib(pid)
        with trio.move_on_after(0.5):
            try:
                extra = await bystander.get_message()
                tally.problem("bystander received a frame", str(extra))
            except ConnectionClosed as closed:
                tally.problem("bystander was disconnected", str(closed.reason))
    return {
        "frames": tally.frames,
        "hostile_hellos": tally.hellos,
        "seconds": round(elapsed, 1),
        "control_messages": result["control"][1],
        "error_codes": dict(tally.codes.most_common()),
        "problems": dict(tally.problems),
        "examples": tally.examples,
        "rss_kib_after_warmup": rss_before,
        "rss_kib_at_end": rss_after,
        "rss_kib_by_frames": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--listener", choices=LISTENERS, default=LISTENERS[0])
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "fuzz.json")
    args = parser.parse_args()
    with scratch() as workdir:
        ws, http = free_port(), free_port()
        data_dir = workdir / "data"
        data_dir.mkdir()
        config = workdir / "switchover.toml"
        config.write_text(
            CONFIG.format(
                host=HOST,
                ws=ws,
                http=http,
                listener=args.listener,
                data_dir=json.dumps(str(data_dir)),
                bot_token=BOT_TOKEN,
                agent_token=AGENT_TOKEN,
            )
        )
        command = [PYTHON, "-m", "transport.cli", "serve", "--config", str(config)]
        log = workdir / "server.log"
        with running(command, ws, log) as server:
            url = f"ws://{HOST}:{ws}/"
            outcome = trio.run(run, url, server.pid, args.frames, args.connections, args.seed)
            crashed = server.process.poll() is not None
        tracebacks = log.read_text(errors="replace").count("Traceback")
    outcome.update(
        listener=args.listener,
        connections=args.connections,
        seed=args.seed,
        server_crashed=crashed,
        server_tracebacks=tracebacks,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(outcome, indent=2) + "\n")
    growth = outcome["rss_kib_at_end"] - outcome["rss_kib_after_warmup"]
    print(f"frames                 {outcome['frames']:,} in {outcome['seconds']} s")
    print(f"hostile hellos         {outcome['hostile_hellos']:,}")
    print(f"control messages       {outcome['control_messages']:,}")
    print(f"server crashed         {crashed}")
    print(f"server tracebacks      {tracebacks}")
    print(f"problems               {outcome['problems'] or 'none'}")
    print(
        f"RSS                    {outcome['rss_kib_after_warmup'] / 1024:.1f} MiB after warm-up,"
        f" {outcome['rss_kib_at_end'] / 1024:.1f} MiB at the end ({growth / 1024:+.1f} MiB)"
    )
    print(f"error codes            {outcome['error_codes']}")
    curve = ", ".join(f"{n // 1000}k: {kib / 1024:.0f}" for n, kib in outcome["rss_kib_by_frames"])
    print(f"RSS by frames (MiB)    {curve}")
    for example in outcome["examples"]:
        print("  ", example)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
