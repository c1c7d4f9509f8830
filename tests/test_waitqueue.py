"""The desk's queue: places and order against a plain list, and the cost of its operations."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import AgentRequest, BotSettings, Presence
from actors.machines import routing as rt
from actors.machines import waitqueue

BOTS = ("a", "b", "c")


@attrs.define(eq=False)
class Item:
    name: int
    bot_id: str
    order: int = 0
    key: int = 0


# An operation: join at the tail or the head for a bot, or leave from a place in the queue.
ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["tail", "head"]), st.sampled_from(BOTS)),
        st.tuples(st.just("leave"), st.integers(0, 10_000)),
    ),
    max_size=400,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_places_and_order_match_a_plain_list(operations: list[tuple[str, object]]) -> None:
    queue: waitqueue.WaitQueue[Item] = waitqueue.WaitQueue()
    model: list[Item] = []
    for n, (op, arg) in enumerate(operations):
        if op == "leave":
            if not model:
                continue
            item = model[int(str(arg)) % len(model)]
            expected = [m for m in model if m.bot_id == item.bot_id].index(item) + 1
            model.remove(item)
            assert queue.remove(item) == expected
        else:
            item = Item(n, str(arg))
            place = queue.add(item, first=op == "head")
            if op == "head":
                model.insert(0, item)
            else:
                model.append(item)
            assert place == [m for m in model if m.bot_id == item.bot_id].index(item) + 1
        assert list(queue) == model
        assert len(queue) == len(model)
        for bot in BOTS:
            line = [m for m in model if m.bot_id == bot]
            assert list(queue.line(bot)) == line
            assert [queue.place(m) for m in line] == list(range(1, len(line) + 1))
            if line:
                assert list(queue.from_place(bot, 2)) == line[1:]
        assert list(queue.of_bots(["a", "c"])) == [m for m in model if m.bot_id != "b"]


def test_renumbering_costs_amortised_constant_work_per_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A queue that stays short under endless churn renumbers rarely and briefly: the keys
    renumbered over a run stay within a small multiple of the joins."""
    renumbered = 0
    original = waitqueue._Line._renumber

    def counting(self: waitqueue._Line[Item], items: list[Item]) -> None:
        nonlocal renumbered
        renumbered += len(items)
        original(self, items)

    monkeypatch.setattr(waitqueue._Line, "_renumber", counting)
    queue: waitqueue.WaitQueue[Item] = waitqueue.WaitQueue()
    live: list[Item] = []
    joins = 0
    for n in range(20_000):
        item = Item(n, "a")
        queue.add(item, first=n % 7 == 0)
        joins += 1
        live.append(item)
        if len(live) > 300:
            queue.remove(live.pop(0))
    assert len(queue) == 300
    assert renumbered <= 4 * joins


SETTINGS = {bot: BotSettings(grace_period=10.0) for bot in BOTS}


def _request(conv: str, bot: str, now: float) -> AgentRequest:
    return AgentRequest(conv, f"{conv}/1", bot, now)


def test_a_new_session_behind_a_long_queue_reports_only_its_own_place() -> None:
    routing = rt.Routing([rt.Agent("alice", "Alice", frozenset({"b"}), 2)], SETTINGS)
    routing.connected("alice", 0.0)
    routing.set_presence("alice", Presence.ONLINE, 0.0)
    for n in range(5_000):
        routing.request(_request(f"c{n}", "a", 0.0), 0.0)
    effects = routing.request(_request("last", "a", 1.0), 1.0)
    reported = [e for e in effects if isinstance(e, rt.Position)]
    assert [(e.conversation_id, e.position) for e in reported] == [("last", 5_001)]
    # Leaving from the tail moves nobody else.
    effects = routing.withdraw("last", "last/1", 2.0)
    assert not [e for e in effects if isinstance(e, rt.Position)]


routing_ops = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.integers(0, 30), st.sampled_from(BOTS)),
        st.tuples(st.just("withdraw"), st.integers(0, 30), st.just("")),
        st.tuples(st.sampled_from(["online", "offline", "away"]), st.sampled_from(["x", "y"])),
        st.tuples(st.just("claim"), st.sampled_from(["x", "y"]), st.integers(0, 30)),
        st.tuples(st.just("release"), st.integers(0, 30), st.just("")),
        st.tuples(st.just("give_back"), st.integers(0, 30), st.just("")),
        st.tuples(st.just("tick"), st.just(""), st.just("")),
    ),
    max_size=120,
)


@settings(max_examples=80, deadline=None)
@given(routing_ops)
def test_reported_positions_match_a_naive_count_of_the_queue(
    operations: list[tuple[object, ...]],
) -> None:
    """Whatever happens, the last position reported to each waiting session is its place
    among its bot's sessions in the queue, and the last availability reported is whether an
    agent serving its bot is online and connected."""
    agents = [
        rt.Agent("x", "X", frozenset({"a", "b"}), 2),
        rt.Agent("y", "Y", frozenset({"b", "c"}), 1),
    ]
    routing = rt.Routing(agents, SETTINGS)
    reported: dict[str, tuple[int, bool | None]] = {}
    now = 0.0
    for op in operations:
        now += 1.0
        kind = op[0]
        effects: list[rt.RoutingEffect]
        if kind == "request":
            effects = routing.request(_request(f"c{op[1]}", str(op[2]), now), now)
        elif kind == "withdraw":
            effects = routing.withdraw(f"c{op[1]}", f"c{op[1]}/1", now)
        elif kind in ("online", "away"):
            agent_id = str(op[1])
            effects = []
            if not routing.agents[agent_id].connections:
                effects += routing.connected(agent_id, now)
            presence = Presence.ONLINE if kind == "online" else Presence.AWAY
            effects += routing.set_presence(agent_id, presence, now)
        elif kind == "offline":
            effects = routing.disconnected(str(op[1]), now)
        elif kind == "claim":
            effects = routing.claim(str(op[1]), f"c{op[2]}", now)
        elif kind == "release":
            holder = routing.holder_of(f"c{op[1]}")
            agent_id = holder.agent_id if holder else "x"
            effects = routing.release(f"c{op[1]}", f"c{op[1]}/1", agent_id, now)
        elif kind == "give_back":
            holder = routing.holder_of(f"c{op[1]}")
            effects = (
                routing.transfer(f"c{op[1]}", f"c{op[1]}/1", holder.agent_id, None, now)
                if holder
                else []
            )
        else:
            now += 20.0
            effects = routing.expire_grace(now)
        for effect in effects:
            if isinstance(effect, rt.Position):
                reported[effect.conversation_id] = (effect.position, effect.agents_available)
        staffed = {b for a in routing.agents.values() if a.available for b in a.bots}
        counts: dict[str, int] = {}
        for waiting in routing.queue:
            counts[waiting.bot_id] = counts.get(waiting.bot_id, 0) + 1
            expected = (counts[waiting.bot_id], waiting.bot_id in staffed)
            assert reported.get(waiting.conversation_id) == expected, waiting
