"""Bot adapters: how Switchover reaches the bots it serves.

``demo`` is the built-in in-process bot, ``csml`` a CSML engine server, ``webhook`` any bot
behind a signed HTTP webhook, ``connected`` a bot that connects over WebSocket itself. Any
object with ``async def on_event(event) -> contents`` (:class:`actors.Bot`) can also be
embedded directly. See docs/bots.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, cast

import httpx

from actors import Bot
from transport.bots.connections import BotConnections
from transport.errors import ConfigError

ADAPTERS = ("demo", "csml", "webhook", "connected")


def build_bot(
    bot_id: str,
    adapter: str,
    options: Mapping[str, Any],
    *,
    http: httpx.AsyncClient | None = None,
    connections: BotConnections | None = None,
) -> Bot:
    """The bot ``bot_id`` served through ``adapter`` with its ``options`` (the
    ``[bots.<id>.options]`` table). ``http`` is the pooled client remote adapters share;
    without one, each remote bot makes its own (closed by its ``aclose()``).
    ``connections`` is the registry of open bot connections the WebSocket server fills
    (:attr:`transport.protocol.services.Services.bot_connections`): a connected bot is only
    reachable through the very registry its connections join, so it has no default.

    Raises :class:`~transport.errors.ConfigError` naming every bad option.
    """
    if adapter == "demo":
        # Imported only when used: the demo bot is one adapter among others.
        demo = importlib.import_module("transport.bots.demo")
        try:
            return cast(Bot, demo.DemoBot(**dict(options)))
        except TypeError as exc:
            raise ConfigError(
                f"bots.{bot_id}.options: not accepted by the demo bot: {exc}"
            ) from None
    if adapter == "csml":
        from transport.bots.csml import CsmlBot

        return CsmlBot.from_options(bot_id, options, http=http)
    if adapter == "webhook":
        from transport.bots.webhook import WebhookBot

        return WebhookBot.from_options(bot_id, options, http=http)
    if adapter == "connected":
        from transport.bots.connected import ConnectedBot

        if connections is None:
            raise ValueError("the connected adapter needs the server's bot connections")
        return ConnectedBot.from_options(bot_id, options, connections)
    raise ConfigError(
        f"bots.{bot_id}.adapter: unknown adapter {adapter!r}; known: {', '.join(ADAPTERS)}"
    )


__all__ = ["ADAPTERS", "build_bot"]
