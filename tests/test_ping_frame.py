"""A ping skips the schema walk (so a heartbeat measures the server, not the validator), and
takes exactly what its schema takes: the same frames are accepted and refused."""

from __future__ import annotations

import json

import pytest

from transport.protocol.frames import FrameRefused, Ping, parse_frame

LIMIT = 64 * 1024


@pytest.mark.parametrize("role", ["user", "agent", "bot"])
@pytest.mark.parametrize(
    "fields", [{}, {"id": 7}, {"id": "p1"}, {"id": "x" * 64}, {"id": -(2**53 - 1)}]
)
def test_a_valid_ping_is_taken_from_every_role(role: str, fields: dict[str, object]) -> None:
    assert parse_frame(json.dumps({"type": "ping", **fields}), role, LIMIT) == Ping(
        fields.get("id")
    )


@pytest.mark.parametrize(
    "fields",
    [{"id": "x" * 65}, {"id": 2**53}, {"id": True}, {"id": 1.5}, {"id": None}, {"extra": 1}],
)
def test_a_ping_its_schema_refuses_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(FrameRefused) as caught:
        parse_frame(json.dumps({"type": "ping", **fields}), "user", LIMIT)
    assert caught.value.refusal.code == "invalid_frame"
