"""How often the desk re-sends agents' views, on trio's MockClock: at most every
``publish_interval`` after a quiet spell, less and less often (up to ``publish_interval_max``)
while the views keep changing, and never losing the last change."""

from __future__ import annotations

import itertools

import trio

from actors import (
    AgentProfile,
    BotBinding,
    BotSettings,
    Delivery,
    Desk,
    DeskStatus,
    Presence,
    open_switchboard,
)

from .conftest import EchoBot

HOUR = 3600.0


class TimedSink:
    """Notes when each view of the desk arrives, by trio's clock."""

    def __init__(self) -> None:
        self.views: list[tuple[float, DeskStatus]] = []

    def deliver(self, item: Delivery) -> None:
        if isinstance(item, DeskStatus):
            self.views.append((trio.current_time(), item))


def bob_seen(view: DeskStatus) -> str:
    (bob,) = [c for c in view.colleagues if c.agent_id == "bob"]
    return bob.presence


async def test_views_are_sent_less_often_while_they_keep_changing(autojump_clock: object) -> None:
    settings = BotSettings(session_timeout=HOUR)
    desk = Desk(
        {"demo": settings},
        [
            AgentProfile("alice", "Alice", frozenset({"demo"}), capacity=1),
            AgentProfile("bob", "Bob", frozenset({"demo"}), capacity=1),
        ],
        publish_interval=0.05,
        publish_interval_max=0.4,
    )
    async with open_switchboard({"demo": BotBinding(EchoBot(), settings)}, {"desk": desk}):
        alice = TimedSink()
        desk.attach("alice", alice)
        desk.attach("bob", TimedSink())
        await trio.sleep(1.0)
        assert alice.views

        # Bob changes presence every 10 ms for 3 s: every change is in Alice's view.
        start = trio.current_time()
        presence = Presence.ONLINE
        for step in range(300):
            presence = Presence.AWAY if step % 2 else Presence.ONLINE
            desk.set_presence("bob", presence)
            await trio.sleep(0.01)
        busy = [at for at, _ in alice.views if at >= start]
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(busy)]
        # The first change goes out at once, then the waits double up to the cap and stay.
        assert busy[0] - start < 0.05
        assert gaps[:4] == [0.05, 0.1, 0.2, 0.4]
        assert set(gaps[4:]) == {0.4}
        assert len(busy) <= 10  # a view every 50 ms would have been 60

        # Nothing is lost: the last change is in the next view, within the cap.
        last_change = trio.current_time()
        await trio.sleep(1.0)
        after = [(at, view) for at, view in alice.views if at >= last_change]
        assert len(after) == 1
        assert after[0][0] - last_change <= 0.4
        assert bob_seen(after[0][1]) == presence.value

        # Quiet again: the next change goes out at once, and the next after 50 ms.
        quiet = trio.current_time()
        desk.set_presence("bob", Presence.AWAY)
        await trio.sleep(0.02)
        desk.set_presence("bob", Presence.ONLINE)
        await trio.sleep(1.0)
        again = [(at, view) for at, view in alice.views if at >= quiet]
        assert [round(at - quiet, 6) for at, _ in again] == [0.0, 0.05]
        assert [bob_seen(view) for _, view in again] == ["away", "online"]
