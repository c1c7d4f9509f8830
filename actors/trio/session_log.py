"""One log line for each step of a livechat session, for operators: started, picked up,
transferred, returned to the queue, signed off, ended, expired.

The conversation actor calls :func:`log_session_steps` once per committed transition, so a
line means the step is durable. The lines go to the standard :mod:`logging` logger
``switchover.sessions`` at INFO with their ids as ``extra=`` fields (the transport's JSON
format makes each a key); they carry ids and reasons only, never what anyone wrote, and every
value is cut to :data:`FIELD_LIMIT` characters, so a line stays short whatever a client or a
platform sent.
"""

from __future__ import annotations

import logging

from actors.machines.lifecycle import Transition
from actors.model import effects as fx
from actors.model.content import SESSION_EXPIRED
from actors.model.records import Party
from actors.model.state import ConversationState

log = logging.getLogger("switchover.sessions")

#: The longest value a session line carries; longer ids or reasons are cut, marked with "…".
FIELD_LIMIT = 120


def _bounded(value: str | None) -> str | None:
    if value is None or len(value) <= FIELD_LIMIT:
        return value
    return value[: FIELD_LIMIT - 1] + "…"


def _line(message: str, state: ConversationState, session_id: str, **fields: str | None) -> None:
    extra = {
        "conversation_id": _bounded(state.conversation_id),
        "session_id": _bounded(session_id),
        "bot_id": _bounded(state.bot_id),
    }
    for key, value in fields.items():
        if value is not None:
            extra[key] = _bounded(value)
    log.info(message, extra=extra)


def _ending(transition: Transition) -> tuple[bool, str]:
    """Whether the session ending in ``transition`` expired, and why it ended: both are in
    what the bot is told (``LIVECHAT_SESSION_EXPIRED`` or ``_END``, with its reason)."""
    for effect in transition.effects:
        if type(effect) is fx.Emit and Party.BOT in effect.entry.audience:
            entry = effect.entry
            if entry.session_id is not None and "reason" in entry.metadata:
                reason = str(entry.metadata["reason"])
                return entry.content.is_payload(SESSION_EXPIRED), reason
    return False, "unknown"


def log_session_steps(before: ConversationState, transition: Transition) -> None:
    """Log what ``transition`` did to the open session, if anything. Cheap when nothing
    happened to it (a message in a live session): a few attribute reads."""
    old = before.session
    new = transition.state.session
    if old is new:
        return
    if (
        old is not None
        and new is not None
        and new.session_id == old.session_id
        and new.agent_id == old.agent_id
        and (old.sign_off_offered or not new.sign_off_offered)
    ):
        return  # the same session, touched: a message
    if not log.isEnabledFor(logging.INFO):
        return
    after = transition.state
    if old is None or (new is not None and new.session_id != old.session_id):
        assert new is not None
        _line("livechat session started", after, new.session_id)
        return
    if new is None:
        expired, reason = _ending(transition)
        _line(
            "livechat session expired" if expired else "livechat session ended",
            before,
            old.session_id,
            agent_id=old.agent_id,
            reason=reason,
        )
        return
    if new.agent_id != old.agent_id:
        if old.agent_id is None:
            _line("agent picked up the session", after, new.session_id, agent_id=new.agent_id)
        elif new.agent_id is None:
            reason = next(
                (
                    str(e.entry.content.content.get("reason", ""))
                    for e in transition.effects
                    if type(e) is fx.Emit and e.entry.content.content.get("code") == "agent_left"
                ),
                "",
            )
            _line(
                "session returned to the queue",
                after,
                new.session_id,
                agent_id=old.agent_id,
                reason=reason or None,
            )
        else:
            _line(
                "session transferred",
                after,
                new.session_id,
                from_agent=old.agent_id,
                to_agent=new.agent_id,
            )
        return
    if new.sign_off_offered and not old.sign_off_offered:
        _line("agent signed off", after, new.session_id, agent_id=new.agent_id)
