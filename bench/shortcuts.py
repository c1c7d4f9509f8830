"""Each shortcut taken for speed against its obvious version, in the same run.

tests/test_shortcuts.py pins each shortcut to the obvious version it replaces; this times the
two side by side (``timeit``, interleaved, the best of ``--repeat`` runs of each) and prints
what the obvious version costs per call over the shortcut. One more row times
``_live_message`` against its body as it stood before it called ``_evolve_state`` (kept
below), to show what naming the shortcut cost.

Not here: ``_insert_rows`` against ``executemany`` (what it saves is the GIL switches while
trio's thread is busy, which a single-threaded loop cannot show: bench/README.md, Store,
2026-11-25, second pass) and fastws' send path (bench/fastws_send.py).

Run::

    .venv/bin/python bench/shortcuts.py
    .venv/bin/python bench/shortcuts.py --repeat 9 --number 20000
    .venv/bin/python bench/shortcuts.py --only _live_message --out /tmp/live.json

Writes bench/results/shortcuts.json.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import json
import os
import platform
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from actors.machines.lifecycle import Transition, _evolve_state, _live_message, _touched
from actors.model import effects as fx
from actors.model.content import Content
from actors.model.events import Event, UserSays
from actors.model.records import Entry, Party
from actors.model.state import ConversationState, Session
from actors.trio.conversation import Envelope
from transport import strict
from transport.protocol import frames
from transport.store import rows

RESULTS = Path(__file__).resolve().parent / "results" / "shortcuts.json"

NOW = 1_764_000_000.25
SESSION = Session("c1/1", NOW - 60, NOW - 5, None, "alice", "Alice", False)
STATE = ConversationState("c1", "demo", "u1", {"name": "Uma"}, 42, SESSION, 1)
CONTENT = Content.text("Could you tell me where my order is?")
_USER_AND_AGENT = frozenset({Party.USER, Party.AGENT})


def entry(seq: int) -> Entry:
    return Entry("c1", seq, NOW, Party.USER, CONTENT, _USER_AND_AGENT, "alice", "c1/1", {})


def obvious_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# -- the obvious versions ---------------------------------------------------------------------


def obvious_live_message(
    state: ConversationState,
    session: Session,
    sender: Party,
    content: Content,
    agent_id: str,
    now: float,
) -> Transition:
    seq = state.next_seq
    new = Entry(
        conversation_id=state.conversation_id,
        seq=seq,
        at=now,
        sender=sender,
        content=content,
        audience=_USER_AND_AGENT,
        agent_id=agent_id,
        session_id=session.session_id,
        metadata={},
    )
    touched = attrs.evolve(session, last_activity=now, sign_off_offered=False)
    after = attrs.evolve(state, next_seq=seq + 1, session=touched)
    return Transition(after, (fx.Emit(new),), fx.Accepted(seq))


def former_live_message(
    state: ConversationState,
    session: Session,
    sender: Party,
    content: Content,
    agent_id: str,
    now: float,
) -> Transition:
    """``_live_message`` as it stood on 2026-12-02: the next state built inline."""
    seq = state.next_seq
    new = Entry(
        state.conversation_id,
        seq,
        now,
        sender,
        content,
        _USER_AND_AGENT,
        agent_id,
        session.session_id,
        {},
    )
    after = ConversationState(
        state.conversation_id,
        state.bot_id,
        state.user_id,
        state.user_metadata,
        seq + 1,
        _touched(session, now, False),
        state.sessions_opened,
    )
    return Transition(after, (fx.Emit(new),), fx.Accepted(seq))


@attrs.frozen
class ObviousEnvelope:
    event: Event
    reply: Any = None
    origin: Any = None
    message_id: str | None = None


class EnumParty(enum.Enum):
    """Party with enum's own hash."""

    USER = "user"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"


# -- the cases --------------------------------------------------------------------------------

Case = tuple[str, str, Callable[[], object], Callable[[], object]]


def cases() -> list[Case]:
    frame = {"type": "entry", **entry(7).to_json()}
    encode = strict.compact_encoder(default=str)
    pool = [entry(seq) for seq in range(1, 1001)]

    def entry_pairs_reusing() -> None:
        reuse = frames._entry_frame_reusing_last
        for each in pool:
            reuse(each)
            reuse(each)

    def entry_pairs_obvious() -> None:
        text = frames._entry_frame_text
        for each in pool:
            text(each)
            text(each)

    event = UserSays(CONTENT)
    audience = frozenset({Party.USER, Party.AGENT})
    enum_audience = frozenset({EnumParty.USER, EnumParty.AGENT})
    user, enum_user = Party.USER, EnumParty.USER
    parties = frozenset({Party.USER, Party.SYSTEM})
    sorted_join = ",".join
    return [
        (
            "strict.compact_encoder",
            "json.dumps(separators, ensure_ascii=False)",
            lambda: encode(frame),
            lambda: obvious_dumps(frame),
        ),
        (
            "frames._entry_frame_reusing_last (1,000 entries, each to user then agent)",
            "encode each entry twice (_entry_frame_text)",
            entry_pairs_reusing,
            entry_pairs_obvious,
        ),
        (
            "frames.ack_frame",
            "frames.dumps of the ack's dict",
            lambda: frames.ack_frame("m-17", 42),
            lambda: frames.dumps({"type": "ack", "id": "m-17", "seq": 42}),
        ),
        (
            "lifecycle._evolve_state",
            "attrs.evolve(state, next_seq, session, sessions_opened)",
            lambda: _evolve_state(STATE, 43, SESSION, 1),
            lambda: attrs.evolve(STATE, next_seq=43, session=SESSION, sessions_opened=1),
        ),
        (
            "lifecycle._touched",
            "attrs.evolve(session, last_activity, sign_off_offered)",
            lambda: _touched(SESSION, NOW, False),
            lambda: attrs.evolve(SESSION, last_activity=NOW, sign_off_offered=False),
        ),
        (
            "lifecycle._live_message",
            "keywords and attrs.evolve",
            lambda: _live_message(STATE, SESSION, Party.USER, CONTENT, "alice", NOW),
            lambda: obvious_live_message(STATE, SESSION, Party.USER, CONTENT, "alice", NOW),
        ),
        (
            "lifecycle._live_message",
            "its body as of 2026-12-02 (state built inline)",
            lambda: _live_message(STATE, SESSION, Party.USER, CONTENT, "alice", NOW),
            lambda: former_live_message(STATE, SESSION, Party.USER, CONTENT, "alice", NOW),
        ),
        (
            "conversation.Envelope (plain slots)",
            "a frozen attrs class",
            lambda: Envelope(event, None, None, "m-17"),
            lambda: ObviousEnvelope(event, None, None, "m-17"),
        ),
        (
            "Party hashed by identity (membership in an audience)",
            "enum's own hash",
            lambda: user in audience,
            lambda: enum_user in enum_audience,
        ),
        (
            "rows._audience (cached)",
            '",".join(sorted(values))',
            lambda: rows._audience(parties),
            lambda: sorted_join(sorted(p.value for p in parties)),
        ),
    ]


def best_ns(stmt: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=1)) / number * 1e9


def measure(repeat: int, number: int, only: str | None = None) -> list[dict[str, Any]]:
    out = []
    for shortcut, obvious, fast, slow in cases():
        if only is not None and only not in f"{shortcut} {obvious}":
            continue
        # Interleaved: a run of each in turn, the best of each kept.
        count = max(1, number // 1000) if "1,000 entries" in shortcut else number
        fast_ns = slow_ns = float("inf")
        for _ in range(repeat):
            fast_ns = min(fast_ns, best_ns(fast, count))
            slow_ns = min(slow_ns, best_ns(slow, count))
        if "1,000 entries" in shortcut:
            fast_ns, slow_ns = fast_ns / 1000, slow_ns / 1000  # per entry (two frames)
        out.append(
            {
                "shortcut": shortcut,
                "obvious": obvious,
                "shortcut_ns": fast_ns,
                "obvious_ns": slow_ns,
                "obvious_over_shortcut": slow_ns / fast_ns,
            }
        )
    return out


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--only", help="time only the cases whose names contain this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "repeat": args.repeat,
        "number": args.number,
        "cases": measure(args.repeat, args.number, args.only),
    }
    print(f"\nshortcuts, best of {args.repeat}, {results['date']}")
    print("| shortcut | obvious version | shortcut ns | obvious ns | obvious / shortcut |")
    print("|---|---|---|---|---|")
    for row in results["cases"]:
        print(
            f"| {row['shortcut']} | {row['obvious']} | {row['shortcut_ns']:,.0f} | "
            f"{row['obvious_ns']:,.0f} | {row['obvious_over_shortcut']:.2f}x |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    cli()
