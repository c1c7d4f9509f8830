"""What a waiting user is told: the estimated wait from the pace of recent pickups (pure, with
hypothesis), whether anyone is available (routing), the queue frame carrying both, and the
ending event telling the bot whether an agent ever held the session."""

from __future__ import annotations

import json

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    SESSION_END,
    SESSION_START,
    AgentRequest,
    BotSettings,
    Content,
    Desk,
    Presence,
    QueuePosition,
    Switchboard,
    UserSays,
)
from actors.machines import routing as rt
from actors.machines.wait import HORIZON, MIN_PICKUPS, WINDOW, PickupPace
from transport.protocol.frames import queue_frame, server_frame_errors

from .conftest import EchoBot, RecordingSink, notice, open_watched

# -- the pace of pickups (pure) -------------------------------------------------------------


def test_too_few_pickups_give_no_estimate() -> None:
    pace = PickupPace()
    assert pace.estimate("demo", 1, 0.0) is None
    pace.picked_up("demo", 0.0)
    assert MIN_PICKUPS == 2
    assert pace.estimate("demo", 1, 0.0) is None
    pace.picked_up("demo", 60.0)
    assert pace.estimate("demo", 1, 60.0) == 60.0
    # Each bot has its own pace.
    assert pace.estimate("other", 1, 60.0) is None


def test_the_estimate_is_the_position_times_the_mean_gap_between_pickups() -> None:
    pace = PickupPace()
    for at in (0.0, 30.0, 90.0):  # gaps of 30 and 60 s: a mean of 45
        pace.picked_up("demo", at)
    assert pace.estimate("demo", 1, 90.0) == 45.0
    assert pace.estimate("demo", 3, 90.0) == 135.0


def test_a_long_silence_since_the_last_pickup_lengthens_the_estimate() -> None:
    pace = PickupPace()
    for at in (0.0, 10.0, 20.0):
        pace.picked_up("demo", at)
    assert pace.estimate("demo", 2, 25.0) == 20.0
    # Nobody picked anyone up for 100 s: a 10 s pace would flatter.
    assert pace.estimate("demo", 2, 120.0) == 200.0


def test_old_pickups_stop_counting_and_the_window_is_bounded() -> None:
    pace = PickupPace()
    pace.picked_up("demo", 0.0)
    pace.picked_up("demo", 10.0)
    assert pace.estimate("demo", 1, 20.0) == 10.0
    assert pace.estimate("demo", 1, 10.0 + HORIZON + 1) is None
    for n in range(WINDOW * 3):
        pace.picked_up("demo", 100_000.0 + n)
    assert len(pace._times["demo"]) == WINDOW


def test_a_pace_refuses_settings_that_cannot_estimate() -> None:
    with pytest.raises(ValueError):
        PickupPace(min_pickups=1)
    with pytest.raises(ValueError):
        PickupPace(window=3, min_pickups=4)
    with pytest.raises(ValueError):
        PickupPace(horizon=0.0)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a shared, busy machine
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=600.0), min_size=0, max_size=40),
    wait=st.floats(min_value=0.0, max_value=1200.0),
    position=st.integers(min_value=1, max_value=50),
)
def test_estimates_are_known_only_with_enough_pickups_and_grow_with_the_position(
    gaps: list[float], wait: float, position: int
) -> None:
    pace = PickupPace()
    at = 1000.0
    times = []
    for gap in gaps:
        at += gap
        times.append(at)
        pace.picked_up("demo", at)
    now = at + wait
    estimate = pace.estimate("demo", position, now)
    recent = [t for t in times[-WINDOW:] if t >= now - HORIZON]
    if len(recent) < MIN_PICKUPS:
        assert estimate is None
        return
    assert estimate is not None and estimate >= 0
    mean = (recent[-1] - recent[0]) / (len(recent) - 1)
    assert estimate == pytest.approx(round(position * max(mean, now - recent[-1])), abs=1)
    further = pace.estimate("demo", position + 1, now)
    assert further is not None and further >= estimate


# -- routing: the queue line's facts ----------------------------------------------------------

SETTINGS = {"demo": BotSettings(), "other": BotSettings()}


def told(effects: list[rt.RoutingEffect]) -> dict[str, rt.Position]:
    return {e.conversation_id: e for e in effects if isinstance(e, rt.Position)}


def ask(routing: rt.Routing, conv: str, now: float, bot: str = "demo") -> list[rt.RoutingEffect]:
    return routing.request(AgentRequest(conv, f"{conv}/1", bot, now), now)


def test_a_waiting_user_hears_when_nobody_serving_the_bot_is_online() -> None:
    alice = rt.Agent("alice", "Alice", frozenset({"demo"}), 1)
    olga = rt.Agent("olga", "Olga", frozenset({"other"}), 1)
    routing = rt.Routing([alice, olga], SETTINGS)
    routing.connected("olga", 0.0)
    routing.set_presence("olga", Presence.ONLINE, 0.0)
    # Only someone serving another bot is online: nobody is available for this one.
    first = told(ask(routing, "c1", 1.0))["c1"]
    assert (first.position, first.agents_available, first.estimated_wait) == (1, False, None)
    # Alice connects while away: still nobody (away agents are offered nothing).
    assert told(routing.connected("alice", 2.0)) == {}
    assert told(routing.set_presence("alice", Presence.AWAY, 2.0)) == {}
    # Alice comes online and takes c1; c2 then waits behind her full slot, with her online.
    routing.set_presence("alice", Presence.ONLINE, 3.0)
    second = told(ask(routing, "c2", 4.0))["c2"]
    assert (second.position, second.agents_available) == (1, True)
    # Her going offline changes no position, but is told at once.
    gone = told(routing.set_presence("alice", Presence.OFFLINE, 5.0))["c2"]
    assert (gone.position, gone.agents_available) == (1, False)
    # And nothing is told again while nothing changes.
    assert told(routing.disconnected("olga", 6.0)) == {}


def test_positions_carry_the_estimate_from_the_bots_recent_pickups() -> None:
    alice = rt.Agent("alice", "Alice", frozenset({"demo"}), 10)
    routing = rt.Routing([alice], SETTINGS)
    routing.connected("alice", 0.0)
    routing.set_presence("alice", Presence.AWAY, 0.0)
    for n in range(4):
        ask(routing, f"c{n}", 0.0)
    # Alice picks one up by hand every 60 s; the first pickup alone says nothing yet.
    after_one = told(routing.claim("alice", "c0", 60.0))
    assert after_one["c1"].estimated_wait is None
    after_two = told(routing.claim("alice", "c1", 120.0))
    assert {c: (p.position, p.estimated_wait) for c, p in after_two.items()} == {
        "c2": (1, 60.0),
        "c3": (2, 120.0),
    }
    # Only pickups from the queue set the pace: a transfer is none.
    bob = rt.Agent("bob", "Bob", frozenset({"demo"}), 10)
    routing.agents["bob"] = bob
    routing.connected("bob", 130.0)
    routing.set_presence("bob", Presence.AWAY, 130.0)
    routing.transfer("c0", "c0/1", "alice", "bob", 150.0)
    assert routing.pace.estimate("demo", 1, 150.0) == 60.0


def test_a_restarted_desk_keeps_the_pace() -> None:
    desk = Desk(SETTINGS, [])
    desk._routing.pace.picked_up("demo", 1.0)
    assert desk._fresh_routing().pace is desk._routing.pace


# -- the frame -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "available"), [(None, None), (None, False), (90.0, True), (0.0, True)]
)
def test_the_queue_frame_carries_the_wait_and_availability_within_its_schema(
    wait: float | None, available: bool | None
) -> None:
    frame = json.loads(queue_frame(QueuePosition("c1", "c1/1", 2, wait, available)))
    assert frame == {
        "type": "queue",
        "conversation_id": "c1",
        "session_id": "c1/1",
        "position": 2,
        "estimated_wait": wait,
        "agents_available": available,
    }
    assert list(server_frame_errors(frame)) == []


# -- in the core -----------------------------------------------------------------------------


def queued(item: object) -> bool:
    return isinstance(item, QueuePosition)


async def test_the_user_is_told_nobody_is_available_then_someone_is(
    board: Switchboard, autojump_clock: object
) -> None:
    desk = board.backends["desk"]
    assert isinstance(desk, Desk)
    conv, user = await open_watched(board, "demo")
    await board.ask(conv, UserSays(Content.payload(SESSION_START)))
    first = await user.wait_for(queued)
    assert isinstance(first, QueuePosition)
    assert (first.position, first.agents_available, first.estimated_wait) == (1, False, None)
    # Bob is online but away: still nobody available.
    bob = RecordingSink()
    desk.attach("bob", bob)
    desk.set_presence("bob", Presence.AWAY)
    await trio.sleep(1)
    assert [i for i in user.items if queued(i)] == [first]


async def test_the_bot_hears_which_agent_held_an_ended_session_and_none_for_a_queue(
    board: Switchboard, echo_bot: EchoBot, autojump_clock: object
) -> None:
    desk = board.backends["desk"]
    assert isinstance(desk, Desk)
    # A user's own "agent_id" metadata never passes for the system's.
    conv, user = await open_watched(board, "demo", metadata={"agent_id": "mallory", "name": "U"})
    await board.ask(conv, UserSays(Content.payload(SESSION_START)))
    await user.wait_for(queued)
    await board.ask(conv, UserSays(Content.payload(SESSION_END)))
    await user.wait_for(notice("session_ended"))
    [left] = await echo_bot.wait_for_events(1)
    assert left.metadata["agent_id"] is None
    assert left.metadata["reason"] == "user_ended" and left.metadata["name"] == "U"

    await board.ask(conv, UserSays(Content.payload(SESSION_START)))
    alice = RecordingSink()
    desk.attach("alice", alice)
    desk.set_presence("alice", Presence.ONLINE)
    await user.wait_for(notice("agent_joined"))
    await board.ask(conv, UserSays(Content.payload(SESSION_END)))
    ended = (await echo_bot.wait_for_events(2))[1]
    assert ended.content.is_payload(SESSION_END)
    assert ended.metadata["agent_id"] == "alice"


async def test_the_estimate_follows_the_pickups_on_the_clock(
    board: Switchboard, autojump_clock: object
) -> None:
    desk = board.backends["desk"]
    assert isinstance(desk, Desk)
    alice = RecordingSink()
    desk.attach("alice", alice)
    desk.set_presence("alice", Presence.AWAY)
    users = []
    for _ in range(4):
        conv, user = await open_watched(board, "demo")
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        await user.wait_for(queued)
        users.append((conv, user))
    desk.claim("alice", users[0][0])
    await users[0][1].wait_for(notice("agent_joined"))
    await trio.sleep(120)  # two minutes pass (on the mock clock) before the next pickup
    desk.claim("alice", users[1][0])
    await users[1][1].wait_for(notice("agent_joined"))

    def estimated(item: object) -> bool:
        return isinstance(item, QueuePosition) and item.estimated_wait is not None

    next_up = await users[2][1].wait_for(estimated)
    behind = await users[3][1].wait_for(estimated)
    assert isinstance(next_up, QueuePosition) and isinstance(behind, QueuePosition)
    assert (next_up.position, next_up.estimated_wait) == (1, 120.0)
    assert (behind.position, behind.estimated_wait) == (2, 240.0)
    # Alice is away: connected, but nobody is available to be offered the chat.
    assert next_up.agents_available is False
