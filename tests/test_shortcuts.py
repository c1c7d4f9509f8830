"""Every shortcut taken for speed gives what the obvious code gives.

Each one sits behind one named function, whose docstring says why and points to its figures in
bench/README.md (2026-12-03 unless it says otherwise); ``bench/shortcuts.py`` times each
against its obvious version. Here each is pinned to that obvious version:

========================================  ===============================================
shortcut                                  the obvious version
========================================  ===============================================
``frames._entry_frame_reusing_last``      encode the entry each time
``frames.ack_frame``, ``pong_frame``      ``dumps`` of the frame's dict
``lifecycle._evolve_state``               ``attrs.evolve(state, ...)``
``lifecycle._touched``                    ``attrs.evolve(session, ...)``
``lifecycle._live_message``               the transition built with keywords and evolve
``conversation.Envelope``                 a frozen attrs class of the same fields
``Party.__hash__``                        hashing as any enum (sets and dicts agree)
``rows._audience``                        ``",".join(sorted(...))`` each time
``writer._insert_rows``, ``in_chunks``    ``executemany``
``strict.compact_encoder``                ``json.dumps(..., separators=(",", ":"))``: in
                                          tests/test_compact_json.py
``fastws.OPEN`` and the other names       ``ConnectionState.OPEN`` ...: in
                                          tests/test_fastws_states.py
fastws' write the kernel takes whole      the writer's turn taken anyway: same file
frames' quick parsers                     tests/test_protocol.py ("the quick path")
========================================  ===============================================
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle
import sqlite3
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.machines.lifecycle import _evolve_state, _live_message, _touched
from actors.model import effects as fx
from actors.model.content import Content
from actors.model.events import Event, UserSays
from actors.model.records import Entry, Party
from actors.model.state import ConversationState, Session
from actors.trio.conversation import Envelope
from transport.protocol import frames
from transport.store import rows
from transport.store.writer import _insert_rows, in_chunks

# -- strategies -------------------------------------------------------------------------------

# Text as it reaches these functions: checked for lone surrogates at the edge already.
TEXT = st.text(st.characters(codec="utf-8"), max_size=8)
TIMES = st.floats(0, 2e9, allow_nan=False)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
CONTENTS = st.builds(Content, TEXT, st.dictionaries(TEXT, JSON, max_size=3))
AUDIENCES = st.frozensets(st.sampled_from(list(Party)))
ENTRIES = st.builds(
    Entry,
    conversation_id=TEXT,
    seq=st.integers(1, 2**53 - 1),
    at=TIMES,
    sender=st.sampled_from(list(Party)),
    content=CONTENTS,
    audience=AUDIENCES,
    agent_id=st.none() | TEXT,
    session_id=st.none() | TEXT,
    metadata=st.dictionaries(TEXT, JSON, max_size=2),
)
SESSIONS = st.builds(
    Session,
    session_id=TEXT,
    started_at=TIMES,
    last_activity=TIMES,
    queued_at=st.none() | TIMES,
    agent_id=st.none() | TEXT,
    agent_name=TEXT,
    sign_off_offered=st.booleans(),
)
STATES = st.builds(
    ConversationState,
    conversation_id=TEXT,
    bot_id=TEXT,
    user_id=TEXT,
    user_metadata=st.dictionaries(TEXT, JSON, max_size=2),
    next_seq=st.integers(1, 2**40),
    session=st.none() | SESSIONS,
    sessions_opened=st.integers(0, 2**20),
)
FRAME_IDS = TEXT | st.integers(-(2**53) + 1, 2**53 - 1)


def dumps(value: Any) -> str:
    """The obvious encoding of a server frame."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# -- frames -----------------------------------------------------------------------------------


@given(st.lists(ENTRIES, min_size=1, max_size=4), st.lists(st.integers(0, 3), max_size=12))
def test_an_entry_frame_is_its_entry_encoded_whichever_came_before(
    pool: list[Entry], picks: list[int]
) -> None:
    """The same entry twice in a row (the user's and the agent's connection), another entry
    equal to it, or anything in between: always the entry's own frame."""
    twins = [copy.copy(entry) for entry in pool]  # equal, not the same object
    for pick in picks:
        for entry in (pool[pick % len(pool)], twins[pick % len(pool)]):
            expected = dumps({"type": "entry", **entry.to_json()})
            assert frames._entry_frame_reusing_last(entry) == expected
            assert frames._entry_frame_reusing_last(entry) == expected  # reused
            assert frames.entry_frame(entry) == expected
            assert frames.encode(entry) == expected


@given(FRAME_IDS, st.none() | st.integers(0, 2**53 - 1))
def test_an_ack_is_what_dumps_writes(frame_id: str | int, seq: int | None) -> None:
    assert frames.ack_frame(frame_id, seq) == dumps({"type": "ack", "id": frame_id, "seq": seq})
    assert json.loads(frames.ack_frame(frame_id, seq)) == {
        "type": "ack",
        "id": frame_id,
        "seq": seq,
    }


@given(st.none() | FRAME_IDS)
def test_a_pong_is_what_dumps_writes(frame_id: str | int | None) -> None:
    expected = {"type": "pong"} if frame_id is None else {"type": "pong", "id": frame_id}
    assert frames.pong_frame(frame_id) == dumps(expected)


# -- the lifecycle ----------------------------------------------------------------------------


@given(STATES, st.integers(1, 2**40), st.none() | SESSIONS, st.integers(0, 2**20))
def test_evolve_state_is_attrs_evolve(
    state: ConversationState, next_seq: int, session: Session | None, opened: int
) -> None:
    expected = attrs.evolve(state, next_seq=next_seq, session=session, sessions_opened=opened)
    assert _evolve_state(state, next_seq, session, opened) == expected


@given(SESSIONS, TIMES, st.booleans())
def test_touched_is_attrs_evolve(session: Session, now: float, offered: bool) -> None:
    expected = attrs.evolve(session, last_activity=now, sign_off_offered=offered)
    assert _touched(session, now, offered) == expected


@given(
    STATES,
    SESSIONS,
    st.sampled_from([Party.USER, Party.AGENT]),
    CONTENTS,
    TEXT,
    TIMES,
)
def test_a_live_message_is_the_transition_built_the_obvious_way(
    state: ConversationState,
    session: Session,
    sender: Party,
    content: Content,
    agent_id: str,
    now: float,
) -> None:
    state = attrs.evolve(state, session=session)
    seq = state.next_seq
    entry = Entry(
        conversation_id=state.conversation_id,
        seq=seq,
        at=now,
        sender=sender,
        content=content,
        audience=frozenset({Party.USER, Party.AGENT}),
        agent_id=agent_id,
        session_id=session.session_id,
        metadata={},
    )
    touched = attrs.evolve(session, last_activity=now, sign_off_offered=False)
    expected = fx.Accepted(seq)
    built = _live_message(state, session, sender, content, agent_id, now)
    assert built.state == attrs.evolve(state, next_seq=seq + 1, session=touched)
    assert built.effects == (fx.Emit(entry),)
    assert built.outcome == expected


# -- the conversation actor -------------------------------------------------------------------


@attrs.frozen
class ObviousEnvelope:
    event: Event
    reply: Any = None
    origin: Any = None
    message_id: str | None = None
    input_id: str | None = None


def test_an_envelope_has_the_fields_and_defaults_of_its_frozen_class() -> None:
    fields = [field.name for field in attrs.fields(ObviousEnvelope)]
    assert sorted(Envelope.__slots__) == sorted(fields)
    ours = inspect.signature(Envelope).parameters
    theirs = inspect.signature(ObviousEnvelope).parameters
    assert list(ours) == list(theirs) == fields
    assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]


@given(st.builds(UserSays, CONTENTS), st.none() | TEXT)
def test_an_envelope_holds_what_its_frozen_class_would(
    event: UserSays, message_id: str | None
) -> None:
    def reply(outcome: fx.Outcome) -> None:
        pass

    for args in [
        (event,),
        (event, reply),
        (event, reply, None, message_id),
        (event, reply, None, message_id, "1-0"),
    ]:
        ours, theirs = Envelope(*args), ObviousEnvelope(*args)
        assert {name: getattr(ours, name) for name in Envelope.__slots__} == attrs.asdict(
            theirs, recurse=False
        )


# -- parties ----------------------------------------------------------------------------------


@given(AUDIENCES, AUDIENCES)
def test_parties_hashed_by_identity_behave_in_sets_as_their_values(
    first: frozenset[Party], second: frozenset[Party]
) -> None:
    def values(parties: frozenset[Party]) -> set[str]:
        return {party.value for party in parties}

    assert values(first & second) == values(first) & values(second)
    assert values(first | second) == values(first) | values(second)
    assert (first == second) == (values(first) == values(second))
    for party in Party:
        assert (party in first) == (party.value in values(first))
        # Identity hashing needs each member to stay one object, whatever copies it.
        assert pickle.loads(pickle.dumps(party)) is party
        assert copy.deepcopy(party) is party
        assert Party(party.value) is party


# -- the store's rows -------------------------------------------------------------------------


@given(AUDIENCES)
def test_an_audience_is_written_as_its_sorted_values(audience: frozenset[Party]) -> None:
    expected = ",".join(sorted(party.value for party in audience))
    assert rows._audience(audience) == expected
    assert rows._audience(frozenset(audience)) == expected  # from the cache


def table() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, w REAL)")
    return db


# Counts around the chunk sizes (powers of two up to 128 rows per statement).
COUNTS = st.sampled_from([0, 1, 2, 3, 127, 128, 129, 255, 256, 257, 300]) | st.integers(0, 300)
ROW = st.tuples(st.integers(0, 400), st.text(max_size=2), TIMES)
ROWS = COUNTS.flatmap(lambda n: st.lists(ROW, min_size=n, max_size=n))
KEYS = COUNTS.flatmap(lambda n: st.lists(st.integers(0, 400), min_size=n, max_size=n))


@settings(max_examples=50)
@given(ROWS)
def test_inserting_rows_in_chunks_is_executemany(values: list[tuple[int, str, float]]) -> None:
    insert = "INSERT OR REPLACE INTO t (k, v, w) VALUES (?, ?, ?)"
    ours, obvious = table(), table()
    _insert_rows(ours, insert, values)
    obvious.executemany(insert, values)
    query = "SELECT k, v, w FROM t ORDER BY k"
    assert ours.execute(query).fetchall() == obvious.execute(query).fetchall()


@settings(max_examples=50)
@given(ROWS, KEYS)
def test_deleting_in_chunks_is_executemany(
    values: list[tuple[int, str, float]], doomed: list[int]
) -> None:
    ours, obvious = table(), table()
    for db in (ours, obvious):
        db.executemany("INSERT OR REPLACE INTO t (k, v, w) VALUES (?, ?, ?)", values)
    in_chunks(ours, "DELETE FROM t WHERE k IN ({rows})", [(k,) for k in doomed], "?")
    obvious.executemany("DELETE FROM t WHERE k = ?", [(k,) for k in doomed])
    query = "SELECT k, v, w FROM t ORDER BY k"
    assert ours.execute(query).fetchall() == obvious.execute(query).fetchall()
