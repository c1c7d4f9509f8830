"""What a resend's memory costs a conversation that comes back (run by hand:
``python bench/resends.py``).

A conversation that did not write its log itself (a restart, a wake from hibernation, a
takeover) learns the message ids stored in it once, on the first message with an id it
does not know, so a resend is answered instead of stored twice. This measures, on a real
SQLite file:

1. The reads alone, per call (process CPU, the worker thread included): the ids of the last
   256 entries (``message_ids``) against those entries built whole (``entries_after``), and
   the state's load every rebuilt conversation already pays, for conversations of 4 and 300
   entries.
2. The first message with an id of ``--conversations`` conversations rebuilt from the file
   (a new switchboard each round), sequentially: process CPU and wall time per message.
   Run it on two checkouts to compare (``--root``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent


class QuietBot:
    async def on_event(self, event: object) -> Sequence[object]:
        return ()


async def run(conversations: int, rounds: int) -> None:
    from actors import (
        Accepted,
        BotBinding,
        BotSettings,
        Content,
        ConversationState,
        Entry,
        Party,
        UserSays,
        open_switchboard,
    )
    from transport.store.sqlite import open_sqlite_store

    settings = BotSettings()
    # A checkout from before message ids were stored: only part 2 means anything there.
    with_ids = hasattr(Entry("c", 1, 0.0, Party.USER, Content.text(""), frozenset()), "message_id")

    def entries(cid: str, length: int) -> list[Entry]:
        # Every other entry is a user's message with an id (as the widget sends them).
        made = []
        for seq in range(1, length + 1):
            ids = {"message_id": f"user:{seq}"} if with_ids and seq % 2 else {}
            made.append(
                Entry(
                    cid,
                    seq,
                    1.0 + seq,
                    Party.USER if seq % 2 else Party.BOT,
                    Content.text(f"message {seq} of {cid}"),
                    frozenset({Party.USER, Party.BOT}),
                    **ids,  # type: ignore[arg-type]
                )
            )
        return made

    with tempfile.TemporaryDirectory(prefix="switchover-resends-") as tmp:
        path = Path(tmp) / "switchover.db"
        async with open_sqlite_store(path, settings={"demo": settings}) as store:
            for length in (4, 300):
                for n in range(conversations):
                    cid = f"c{length}-{n}"
                    state = ConversationState(cid, "demo", "u", {}, length + 1)
                    await store.record(state, entries(cid, length))
            print("1. one read, CPU per call (median of 5 x 200 calls)")
            reads = {
                "entries_after (the last 256 entries)": lambda c, n: store.entries_after(
                    c, n - 256
                ),
                "load (the state)": lambda c, n: store.load(c),
            }
            if with_ids:
                reads["message_ids (the ids of the last 256)"] = lambda c, n: store.message_ids(
                    c, n - 256
                )
            for length in (4, 300):
                for name, read in reads.items():
                    samples = []
                    for _ in range(5):
                        cpu = time.process_time()
                        for _ in range(200):
                            await read(f"c{length}-0", length)
                        samples.append((time.process_time() - cpu) / 200 * 1e6)
                    print(
                        f"   {length:>3} entries  {name:<40}{statistics.median(samples):>7.0f} us"
                    )
        print(f"2. first message with an id of {conversations} rebuilt conversations, per message")
        for length in (4, 300):
            cpus, walls = [], []
            for r in range(rounds):
                async with (
                    open_sqlite_store(path, settings={"demo": settings}) as store,
                    open_switchboard(
                        {"demo": BotBinding(QuietBot(), settings)},  # type: ignore[arg-type]
                        None,
                        store,
                    ) as board,
                ):
                    cpu, wall = time.process_time(), time.perf_counter()
                    for n in range(conversations):
                        said = await board.ask(
                            f"c{length}-{n}",
                            UserSays(Content.text("back")),
                            message_id=f"user:new-{r}",
                        )
                        assert isinstance(said, Accepted), said
                    cpus.append((time.process_time() - cpu) / conversations * 1e6)
                    walls.append((time.perf_counter() - wall) / conversations * 1e6)
            print(
                f"   {length:>3} entries  CPU {statistics.median(cpus):>6.0f} us "
                f"(runs {', '.join(f'{c:.0f}' for c in sorted(cpus))}), "
                f"wall {statistics.median(walls):>6.0f} us"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.root))
    print(f"checkout: {args.root}")
    trio.run(run, args.conversations, args.rounds)


if __name__ == "__main__":
    main()
