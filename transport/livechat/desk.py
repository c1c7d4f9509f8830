"""The built-in desk, set up from the config: its bots' settings and its agents."""

from __future__ import annotations

from collections.abc import Mapping

from actors import AgentProfile, BotSettings, Desk
from transport.config import Config


def build_desk(config: Config) -> Desk:
    """The desk of a server: no grace period runs out before the server says it is ready
    (:meth:`Desk.ready`), so agents who held chats before a restart can reconnect."""
    settings: Mapping[str, BotSettings] = {k: b.settings for k, b in config.bots.items()}
    profiles = [
        AgentProfile(agent.agent_id, agent.name, agent.bots, agent.capacity)
        for agent in config.agents.values()
    ]
    return Desk(
        settings,
        profiles,
        transcript_tail=config.limits.transcript_tail,
        wait_for_ready=True,
    )
