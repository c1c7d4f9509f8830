"""What a conversation asks of its livechat backend, and how the backend's decisions are
stamped so that a re-assertion and a decision can be ordered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

Decision = tuple[int, int]
"""A backend's stamp on what it decided about a session (an assignment, a return to the
queue): its run (it grows with every restart of the backend) and a counter, so two stamps
compare in the order they were made. A re-assertion carries the stamp of the last decision
the conversation applied: a backend that decided since keeps its own view (its word is on
the way to the conversation); otherwise the conversation's view wins."""

NO_DECISION: Decision = (0, 0)


@attrs.frozen
class AgentRequest:
    """A session asking for a human, or re-asserting where it stands: ``held_by`` is the
    agent the conversation last heard holds it (``None``: it waits), ``as_of`` the stamp of
    the last backend decision about it the conversation applied (see :data:`Decision`).
    ``user_name``: how the desk shows the user in its queue (see :func:`user_name`)."""

    conversation_id: str
    session_id: str
    bot_id: str
    queued_at: float
    held_by: str | None = None
    as_of: Decision = NO_DECISION
    user_name: str = ""


def user_name(metadata: Mapping[str, Any]) -> str:
    """What the desk calls the user: the ``name`` (else ``email``) the user's client gave,
    cut to 100 characters; empty when it gave neither."""
    for key in ("name", "email"):
        value = metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:100]
    return ""
