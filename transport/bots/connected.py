"""A bot that connects to Switchover over WebSocket instead of being called.

:class:`ConnectedBot` implements :class:`actors.Bot` by handing each event, as an ``event``
frame, to an open connection of that bot (see docs/protocol.md, "Connected bots"). It returns
no messages itself: the bot answers whenever it likes by pushing ``message`` frames. With no
connection open the event fails, and the core tells the user the assistant is unavailable.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors import BotEvent, Content
from transport.bot_connections import BotConnections
from transport.protocol import event_frame


class BotNotConnected(Exception):
    pass


class ConnectedBot:
    """The bot ``bot_id``, reached through the connections registered in ``connections``
    (share the one in :attr:`transport.services.Services.bot_connections`)."""

    def __init__(self, bot_id: str, connections: BotConnections) -> None:
        self.bot_id = bot_id
        self.connections = connections

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        if not self.connections.send(self.bot_id, event_frame(event)):
            raise BotNotConnected(f"bot {self.bot_id!r} has no open connection")
        return ()


__all__ = ["BotNotConnected", "ConnectedBot"]
