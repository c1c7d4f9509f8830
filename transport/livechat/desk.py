"""The built-in desk, set up from the config: its bots' settings and its agents."""

from __future__ import annotations

from collections.abc import Mapping

from actors import AgentProfile, BotSettings, Desk
from transport.config import Config


def build_desk(config: Config) -> Desk:
    settings: Mapping[str, BotSettings] = {k: b.settings for k, b in config.bots.items()}
    profiles = [
        AgentProfile(agent.agent_id, agent.name, agent.bots, agent.capacity)
        for agent in config.agents.values()
    ]
    return Desk(settings, profiles)
