"""Which bots are connected over WebSocket right now, and how to reach them.

The WebSocket server registers each bot connection here after its hello; the connected-bot
adapter (:mod:`transport.bots.connected`) looks a bot up here to hand it an event. It lives
apart from both so that :class:`~transport.services.Services` can own one without importing
either.
"""

from __future__ import annotations

from typing import Protocol


class FrameOutlet(Protocol):
    """A connection that takes ready-made frames without blocking."""

    def send_frame(self, text: str) -> bool:
        """Queue ``text`` for the peer; ``False`` when the connection is closing."""
        ...


class BotConnections:
    """Open connections per bot id. A bot may hold several; events go to the oldest, so a
    bot's events stay in order while that connection lives."""

    def __init__(self) -> None:
        self._by_bot: dict[str, list[FrameOutlet]] = {}

    def add(self, bot_id: str, outlet: FrameOutlet) -> None:
        self._by_bot.setdefault(bot_id, []).append(outlet)

    def remove(self, bot_id: str, outlet: FrameOutlet) -> None:
        outlets = self._by_bot.get(bot_id, [])
        if outlet in outlets:
            outlets.remove(outlet)
        if not outlets:
            self._by_bot.pop(bot_id, None)

    def send(self, bot_id: str, text: str) -> bool:
        """Hand ``text`` to one open connection of the bot; ``False`` when none took it."""
        return any(outlet.send_frame(text) for outlet in list(self._by_bot.get(bot_id, ())))


__all__ = ["BotConnections", "FrameOutlet"]
