"""The desk's routing rules, on the pure :class:`~actors.machines.routing.Routing` machine."""

from __future__ import annotations

from collections.abc import Sequence

from actors import AgentRequest, BotSettings, Presence
from actors.machines import routing as rt

SETTINGS = {"demo": BotSettings(grace_period=30.0), "other": BotSettings(grace_period=5.0)}


def agent(agent_id: str, capacity: int = 2, bots: Sequence[str] = ("demo",)) -> rt.Agent:
    return rt.Agent(agent_id, agent_id.title(), frozenset(bots), capacity)


def online(routing: rt.Routing, *agent_ids: str, now: float = 0.0) -> list[rt.RoutingEffect]:
    effects: list[rt.RoutingEffect] = []
    for agent_id in agent_ids:
        effects += routing.connected(agent_id, now)
        effects += routing.set_presence(agent_id, Presence.ONLINE, now)
    return effects


def ask(routing: rt.Routing, conv: str, now: float = 0.0, bot: str = "demo") -> list[object]:
    return list(routing.request(AgentRequest(conv, f"{conv}/1", bot, now), now))


def assigned(effects: Sequence[object]) -> list[tuple[str, str]]:
    return [(e.conversation_id, e.agent_id) for e in effects if isinstance(e, rt.Assign)]


def positions(effects: Sequence[object]) -> dict[str, int]:
    return {e.conversation_id: e.position for e in effects if isinstance(e, rt.Position)}


def test_nobody_online_means_the_session_waits_with_a_position() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    effects = ask(routing, "c1")
    assert assigned(effects) == []
    assert positions(effects) == {"c1": 1}
    assert positions(ask(routing, "c2")) == {"c2": 2}


def test_a_second_request_for_the_same_conversation_is_ignored() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    ask(routing, "c1")
    assert ask(routing, "c1") == []
    assert len(routing.queue) == 1


def test_least_busy_agent_gets_the_session() -> None:
    routing = rt.Routing([agent("alice", 3), agent("bob", 3)], SETTINGS)
    online(routing, "alice", "bob")
    first = assigned(ask(routing, "c1", 1.0))
    second = assigned(ask(routing, "c2", 2.0))
    third = assigned(ask(routing, "c3", 3.0))
    holders = [first[0][1], second[0][1], third[0][1]]
    # Two agents with equal load take turns: the one who picked up least recently goes first.
    assert holders[0] != holders[1]
    assert holders[2] == holders[0]
    assert sorted(len(a.chats) for a in routing.agents.values()) == [1, 2]


def test_capacity_is_never_exceeded_and_the_rest_waits() -> None:
    routing = rt.Routing([agent("alice", 1)], SETTINGS)
    online(routing, "alice")
    assert assigned(ask(routing, "c1")) == [("c1", "alice")]
    effects = ask(routing, "c2")
    assert assigned(effects) == [] and positions(effects) == {"c2": 1}
    assert len(routing.agents["alice"].chats) == 1


def test_first_come_first_served_when_an_agent_comes_online() -> None:
    routing = rt.Routing([agent("alice", 2)], SETTINGS)
    for n, conv in enumerate(["c1", "c2", "c3"]):
        ask(routing, conv, float(n))
    effects = online(routing, "alice", now=10.0)
    assert assigned(effects) == [("c1", "alice"), ("c2", "alice")]
    assert positions(effects) == {"c3": 1}
    assert [w.conversation_id for w in routing.queue] == ["c3"]


def test_position_changes_are_reported_and_unchanged_ones_are_not() -> None:
    routing = rt.Routing([agent("alice", 1)], SETTINGS)
    for conv in ("c1", "c2", "c3"):
        ask(routing, conv)
    effects = routing.withdraw("c1", "c1/1", 1.0)
    assert positions(effects) == {"c2": 1, "c3": 2}
    assert positions(ask(routing, "c4")) == {"c4": 3}


def test_positions_are_counted_per_bot() -> None:
    routing = rt.Routing([agent("alice", 1, ("demo", "other"))], SETTINGS)
    assert positions(ask(routing, "c1", bot="demo")) == {"c1": 1}
    assert positions(ask(routing, "c2", bot="other")) == {"c2": 1}
    assert positions(ask(routing, "c3", bot="demo")) == {"c3": 2}


def test_agents_only_get_sessions_of_bots_they_serve() -> None:
    routing = rt.Routing([agent("alice", 2, ("other",))], SETTINGS)
    online(routing, "alice")
    assert assigned(ask(routing, "c1", bot="demo")) == []
    assert assigned(ask(routing, "c2", bot="other")) == [("c2", "alice")]


def test_away_and_offline_agents_get_nothing_new() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    online(routing, "alice")
    routing.set_presence("alice", Presence.AWAY, 0.0)
    assert assigned(ask(routing, "c1")) == []
    routing.set_presence("alice", Presence.OFFLINE, 0.0)
    assert assigned(ask(routing, "c2")) == []
    assert assigned(routing.set_presence("alice", Presence.ONLINE, 1.0)) == [
        ("c1", "alice"),
        ("c2", "alice"),
    ]


def test_online_but_not_connected_gets_nothing() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    routing.set_presence("alice", Presence.ONLINE, 0.0)
    assert assigned(ask(routing, "c1")) == []
    assert assigned(routing.connected("alice", 1.0)) == [("c1", "alice")]


def test_away_agent_keeps_its_chats_without_a_grace_period() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    online(routing, "alice")
    ask(routing, "c1")
    routing.set_presence("alice", Presence.AWAY, 1.0)
    assert routing.next_deadline() is None
    assert "c1" in routing.agents["alice"].chats


def test_disconnect_starts_the_grace_period_then_sessions_go_to_the_head() -> None:
    routing = rt.Routing([agent("alice", 1), agent("bob", 1)], SETTINGS)
    online(routing, "alice")
    ask(routing, "c1", 0.0)
    ask(routing, "c2", 1.0)  # waits: alice is full and bob is offline
    routing.disconnected("alice", 10.0)
    assert routing.next_deadline() == 40.0
    assert routing.expire_grace(39.9) == []
    effects = routing.expire_grace(40.0)
    requeued = [e for e in effects if isinstance(e, rt.Requeued)]
    assert requeued == [rt.Requeued("c1", "c1/1", "alice", "agent_left")]
    assert [w.conversation_id for w in routing.queue] == ["c1", "c2"]
    assert positions(effects) == {"c1": 1, "c2": 2}
    # The next agent to come online takes the requeued session first.
    assert assigned(online(routing, "bob", now=41.0)) == [("c1", "bob")]


def test_reconnecting_within_the_grace_period_keeps_the_chats() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    online(routing, "alice")
    ask(routing, "c1")
    routing.disconnected("alice", 10.0)
    routing.connected("alice", 20.0)
    assert routing.next_deadline() is None
    assert routing.expire_grace(100.0) == []
    assert "c1" in routing.agents["alice"].chats


def test_grace_period_follows_each_bots_setting() -> None:
    routing = rt.Routing([agent("alice", 2, ("demo", "other"))], SETTINGS)
    online(routing, "alice")
    ask(routing, "c1", bot="demo")
    ask(routing, "c2", bot="other")
    routing.set_presence("alice", Presence.OFFLINE, 100.0)
    graces = {c.conversation_id: c.grace_until for c in routing.agents["alice"].chats.values()}
    assert graces == {"c1": 130.0, "c2": 105.0}


def test_transfer_to_another_agent() -> None:
    routing = rt.Routing([agent("alice"), agent("bob")], SETTINGS)
    online(routing, "alice")
    ask(routing, "c1")
    online(routing, "bob")
    effects = routing.transfer("c1", "c1/1", "alice", "bob", 5.0)
    assert assigned(effects) == [("c1", "bob")]
    assert "c1" not in routing.agents["alice"].chats and "c1" in routing.agents["bob"].chats


def test_transfer_to_an_unavailable_or_full_agent_is_refused() -> None:
    routing = rt.Routing([agent("alice"), agent("bob", 1), agent("carol")], SETTINGS)
    online(routing, "alice", "bob")
    ask(routing, "c1")
    ask(routing, "c2")
    holder = routing.holder_of("c1")
    assert holder is not None
    full = "bob" if holder.agent_id == "alice" else "alice"
    if full == "alice":
        routing.agents["alice"].capacity = 1
    refusals = [
        e
        for target in ("carol", "nobody", full)
        for e in routing.transfer("c1", "c1/1", holder.agent_id, target, 1.0)
    ]
    assert [r.refusal.code for r in refusals if isinstance(r, rt.AgentRefusal)] == [
        "transfer_failed"
    ] * 3
    assert routing.holder_of("c1") is holder


def test_transfer_by_an_agent_who_does_not_hold_it_is_refused() -> None:
    routing = rt.Routing([agent("alice"), agent("bob")], SETTINGS)
    online(routing, "alice")
    ask(routing, "c1")
    [refusal] = routing.transfer("c1", "c1/1", "bob", None, 1.0)
    assert isinstance(refusal, rt.AgentRefusal) and refusal.refusal.code == "not_assigned"


def test_transfer_back_to_the_queue_goes_to_the_head_and_skips_the_sender() -> None:
    routing = rt.Routing([agent("alice", 1), agent("bob", 1)], SETTINGS)
    online(routing, "alice")
    ask(routing, "c1", 0.0)
    ask(routing, "c2", 1.0)
    effects = routing.transfer("c1", "c1/1", "alice", None, 5.0)
    assert rt.Requeued("c1", "c1/1", "alice", "transferred") in effects
    # alice is free again, but does not get back the chat she sent away: she takes c2.
    assert assigned(effects) == [("c2", "alice")]
    assert [w.conversation_id for w in routing.queue] == ["c1"]
    assert assigned(online(routing, "bob", now=6.0)) == [("c1", "bob")]


def test_claim_picks_a_waiting_session_by_hand() -> None:
    routing = rt.Routing([agent("alice", 1)], SETTINGS)
    ask(routing, "c1")
    ask(routing, "c2")
    online(routing, "alice")  # takes c1 (first come first served)
    routing.release("c1", "c1/1", "alice", 2.0)  # ... and c2 follows at once
    assert routing.holder_of("c2") is not None
    ask(routing, "c3")
    refused = routing.claim("alice", "c3", 3.0)
    assert [e.refusal.code for e in refused if isinstance(e, rt.AgentRefusal)] == ["cannot_claim"]
    routing.release("c2", "c2/1", "alice", 4.0)
    assert routing.holder_of("c3") is not None
    ask(routing, "c4")
    routing.agents["alice"].capacity = 2
    assert assigned(routing.claim("alice", "c4", 5.0)) == [("c4", "alice")]


def test_an_away_agent_is_offered_nothing_but_may_claim_by_hand() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    routing.connected("alice", 0.0)
    assert assigned(routing.set_presence("alice", Presence.AWAY, 0.0)) == []
    assert assigned(ask(routing, "c1", 1.0)) == []
    assert assigned(routing.claim("alice", "c1", 2.0)) == [("c1", "alice")]
    # Offline (or disconnected) is another matter: no claim then.
    ask(routing, "c2", 3.0)
    routing.set_presence("alice", Presence.OFFLINE, 4.0)
    refused = routing.claim("alice", "c2", 5.0)
    assert [e.refusal.code for e in refused if isinstance(e, rt.AgentRefusal)] == ["cannot_claim"]


def test_claiming_what_is_not_waiting_is_refused() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    online(routing, "alice")
    [refusal] = routing.claim("alice", "ghost", 1.0)
    assert isinstance(refusal, rt.AgentRefusal) and refusal.refusal.code == "not_waiting"


def test_release_frees_a_slot_for_the_queue() -> None:
    routing = rt.Routing([agent("alice", 1)], SETTINGS)
    online(routing, "alice")
    ask(routing, "c1")
    ask(routing, "c2")
    assert routing.release("c1", "c1/9", "alice", 1.0) == []  # another session: ignored
    assert assigned(routing.release("c1", "c1/1", "alice", 1.0)) == [("c2", "alice")]


def test_restored_session_goes_back_to_its_agent_with_a_grace_period() -> None:
    routing = rt.Routing([agent("alice")], SETTINGS)
    request = AgentRequest("c1", "c1/1", "demo", 0.0, held_by="alice")
    routing.request(request, 100.0)
    assert routing.holder_of("c1") is routing.agents["alice"]
    assert routing.next_deadline() == 130.0
    online(routing, "alice", now=110.0)
    assert routing.next_deadline() is None


def test_only_agents_whose_view_changed_are_reported() -> None:
    routing = rt.Routing([agent("alice"), agent("bob"), agent("carol", bots=("other",))], SETTINGS)
    online(routing, "alice", "bob", "carol")
    routing.take_changes()
    ask(routing, "c1")  # passes through the demo queue: demo agents only, not carol
    holder = routing.holder_of("c1")
    assert holder is not None
    assert routing.take_changes() == ["alice", "bob"]
    assert routing.take_changes() == []
    routing.release("c1", "c1/1", holder.agent_id, 1.0)
    # The holder's chats changed, and its colleague sees its free slots: not carol.
    assert routing.take_changes() == ["alice", "bob"]
    routing.set_presence("carol", Presence.AWAY, 2.0)
    assert routing.take_changes() == ["carol"]  # nobody else serves "other"
    routing.set_presence("alice", Presence.OFFLINE, 3.0)
    routing.set_presence("bob", Presence.OFFLINE, 3.0)
    routing.take_changes()
    ask(routing, "c2")  # waits: the demo queue changed for every demo agent, not carol
    assert routing.take_changes() == ["alice", "bob"]


def test_a_presence_change_is_seen_by_every_colleague_and_only_them() -> None:
    routing = rt.Routing(
        [
            agent("alice", bots=("demo",)),
            agent("bob", bots=("demo", "other")),
            agent("carol", bots=("other",)),
            agent("dave", bots=("third",)),
        ],
        {**SETTINGS, "third": BotSettings()},
    )
    routing.take_changes()
    online(routing, "alice")
    assert routing.take_changes() == ["alice", "bob"]
    routing.connected("carol", 1.0)
    assert routing.take_changes() == ["bob", "carol"]
    routing.disconnected("bob", 2.0)
    assert routing.take_changes() == ["alice", "bob", "carol"]
    routing.set_presence("dave", Presence.ONLINE, 3.0)
    assert routing.take_changes() == ["dave"]


# -- re-assertions after a restart ----------------------------------------------------------


def reassert(
    routing: rt.Routing, conv: str, held_by: str | None, as_of: tuple[int, int] = (0, 0)
) -> list[rt.RoutingEffect]:
    request = AgentRequest(conv, f"{conv}/1", "demo", 0.0, held_by=held_by, as_of=as_of)
    return routing.request(request, 10.0)


def test_a_held_reassertion_moves_a_waiting_session_the_desk_never_decided_about() -> None:
    routing = rt.Routing([agent("alice", 1)], SETTINGS, run=2)
    ask(routing, "c1", 0.0)  # an older re-assertion: waiting
    reassert(routing, "c1", "alice", as_of=(1, 7))  # it went live with Alice, run 1
    holder = routing.holder_of("c1")
    assert holder is not None and holder.agent_id == "alice"
    assert routing.waiting("c1") is None


def test_a_reassertion_older_than_the_desks_decision_changes_nothing() -> None:
    routing = rt.Routing([agent("alice", 1)], SETTINGS, run=2)
    online(routing, "alice")
    effects = ask(routing, "c1", 0.0)
    (assign,) = [e for e in effects if isinstance(e, rt.Assign)]
    assert assign.decision[0] == 2
    # The conversation has not heard of the assignment yet: it still says it waits.
    assert reassert(routing, "c1", None, as_of=(0, 0)) == []
    holder = routing.holder_of("c1")
    assert holder is not None and holder.agent_id == "alice"


def test_a_chat_given_back_may_exceed_capacity_but_no_offer_does() -> None:
    routing = rt.Routing([agent("alice", 1)], SETTINGS)
    online(routing, "alice")
    ask(routing, "c2", 0.0)  # offered to Alice: her one slot
    reassert(routing, "c1", "alice")  # a live chat given back after a restart
    alice = routing.agents["alice"]
    assert sorted(alice.chats) == ["c1", "c2"]
    ask(routing, "c3", 1.0)
    assert routing.waiting("c3") is not None  # Alice is offered nothing more


def test_chats_ending_with_nobody_waiting_only_change_the_views() -> None:
    routing = rt.Routing([agent("alice", 3), agent("bob", 3)], SETTINGS)
    online(routing, "alice", "bob")
    for conv in ("c1", "c2", "c3"):
        ask(routing, conv)
    routing.take_changes()
    holder = routing.holder_of("c1")
    assert holder is not None
    assert routing.release("c1", "c1/1", holder.agent_id, 1.0) == [rt.DeskChanged()]
    assert routing.take_changes() == ["alice", "bob"]
    # The queue's bookkeeping still holds once a line forms again: with nobody online the
    # next session waits, told so, and it is handed out as soon as an agent is back.
    routing.set_presence("alice", Presence.OFFLINE, 2.0)
    routing.set_presence("bob", Presence.OFFLINE, 2.0)
    waiting = [e for e in ask(routing, "c4", 3.0) if isinstance(e, rt.Position)]
    assert [(e.conversation_id, e.position, e.agents_available) for e in waiting] == [
        ("c4", 1, False)
    ]
    assert assigned(routing.set_presence("bob", Presence.ONLINE, 4.0)) == [("c4", "bob")]
