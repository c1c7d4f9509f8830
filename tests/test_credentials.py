"""Agents' and bots' tokens (length, hashed form, constant-time lookup) and the per-address
guard: failed authentications and new conversations, over real sockets where it matters."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from transport.config import embedded_defaults, from_mapping
from transport.errors import ConfigError
from transport.protocol.credentials import (
    MIN_TOKEN_LENGTH,
    AddressGuard,
    find_token,
    hash_token,
    token_problem,
)
from transport.protocol.limits import Limits

from .support.ws import running_ws_server

LONG = "a-long-enough-agent-token"


def test_tokens_are_found_in_clear_or_hashed() -> None:
    known = {LONG: "alice", hash_token("bobs-long-secret-token"): "bob"}
    assert find_token(known, LONG) == "alice"
    assert find_token(known, "bobs-long-secret-token") == "bob"
    assert find_token(known, hash_token("bobs-long-secret-token")) is None  # not the hash
    assert find_token(known, LONG[:-1]) is None
    assert find_token(known, "\ud800") is None
    assert find_token(known, 42) is None


def test_short_and_malformed_tokens_are_refused_by_the_config() -> None:
    assert token_problem("x" * MIN_TOKEN_LENGTH) is None
    assert token_problem(hash_token("anything")) is None
    assert "shorter than" in str(token_problem("x" * (MIN_TOKEN_LENGTH - 1)))
    assert token_problem("sha256:abc") is not None
    with pytest.raises(ConfigError, match=r"agents\.a\.token: is shorter than 16"):
        from_mapping({"agents": {"a": {"token": "short"}}})
    with pytest.raises(ConfigError, match="is the same token as"):
        from_mapping({"agents": {"a": {"token": LONG}, "b": {"token": hash_token(LONG)}}})
    hashed = from_mapping({"agents": {"a": {"token": hash_token(LONG)}}})
    assert hashed.agents["a"].token == hash_token(LONG)
    assert len(embedded_defaults().agents["demo-agent"].token) >= 32


def test_the_guard_locks_an_address_after_repeated_failures() -> None:
    now = [0.0]
    guard = AddressGuard(
        auth_failures=3,
        auth_window=60.0,
        conversations_per_minute=6.0,
        conversations_burst=2,
        clock=lambda: now[0],
    )
    for _ in range(3):
        assert guard.locked_for("10.0.0.1") == 0
        guard.failed("10.0.0.1")
    assert guard.locked_for("10.0.0.1") == 60.0
    assert guard.locked_for("10.0.0.2") == 0  # another address is not concerned
    now[0] = 59.0
    assert guard.locked_for("10.0.0.1") == pytest.approx(1.0)
    now[0] = 60.0
    assert guard.locked_for("10.0.0.1") == 0
    # New conversations: a burst of 2, then one every 10 s.
    assert guard.new_conversation("10.0.0.1") == 0
    assert guard.new_conversation("10.0.0.1") == 0
    assert guard.new_conversation("10.0.0.1") == pytest.approx(10.0)
    now[0] += 10.0
    assert guard.new_conversation("10.0.0.1") == 0
    off = AddressGuard(
        auth_failures=0,
        auth_window=60.0,
        conversations_per_minute=0.0,
        conversations_burst=1,
        clock=lambda: now[0],
    )
    for _ in range(100):
        off.failed("x")
        assert off.new_conversation("x") == 0
    assert off.locked_for("x") == 0


async def close_code(url: str, hello: str) -> int | None:
    async with open_websocket_url(url) as ws:
        await ws.send_message(hello)
        with trio.fail_after(5):
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code if closed.reason else None


async def test_repeated_failed_hellos_from_one_address_are_throttled() -> None:
    limits = Limits(rate=1000.0, burst=1000, auth_failures=3)
    async with running_ws_server(limits=limits) as h:
        wrong = '{"type":"hello","v":1,"role":"agent","token":"guessing-the-token"}'
        forged = '{"type":"hello","v":1,"role":"user","resume_token":"forged"}'
        assert [await close_code(h.url, raw) for raw in (wrong, forged, wrong)] == [4401] * 3
        assert await close_code(h.url, wrong) == 4429
        # Now even the right token waits for the window; new conversations still open.
        right = '{"type":"hello","v":1,"role":"agent","token":"alice-token"}'
        assert await close_code(h.url, right) == 4429
        async with h.user() as user:
            assert await user.say_text("still open to users") == 1


async def test_new_conversations_per_address_are_rate_limited() -> None:
    limits = Limits(
        rate=1000.0, burst=1000, new_conversations_per_minute=1.0, new_conversations_burst=2
    )
    async with running_ws_server(limits=limits) as h:
        async with h.user() as first, h.user():
            token = first.resume_token
        assert await close_code(h.url, '{"type":"hello","v":1,"role":"user"}') == 4429
        # Returning to a conversation is not a new one.
        async with h.user(resume_token=token) as back:
            assert back.conversation_id == first.conversation_id


async def test_a_hashed_token_signs_in() -> None:
    async with running_ws_server() as h:
        h.services.agent_tokens = {hash_token("alice-token"): "alice"}
        async with h.agent("alice") as alice:
            assert alice.agent_id == "alice"
