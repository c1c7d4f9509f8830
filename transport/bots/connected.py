"""A bot that connects to Switchover over WebSocket instead of being called.

:class:`ConnectedBot` implements :class:`actors.Bot` by handing each event, as an ``event``
frame, to an open connection of that bot and waiting for the bot's ``event_ack`` (see
docs/protocol.md, "Connected bots"). It returns no messages itself: the bot answers whenever
it likes by pushing ``message`` frames. An event whose connection closes before the ack goes
to another connection of the bot, or waits up to ``connect_wait`` seconds for the bot to
(re)connect; only then, or when no ack comes within ``ack_timeout``, does the event fail and
the core tells the user the assistant is unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from actors import BotEvent, Content
from transport.bots.connections import (
    ACK_TIMEOUT,
    CONNECT_WAIT,
    BotConnections,
    BotNotAcknowledging,
    BotNotConnected,
)
from transport.bots.options import OptionReader
from transport.protocol.frames import event_frame

OPTION_KEYS: Final = frozenset({"connect_wait", "ack_timeout"})


class ConnectedBot:
    """The bot ``bot_id``, reached through the connections registered in ``connections``
    (share the one in :attr:`transport.protocol.services.Services.bot_connections`)."""

    def __init__(
        self,
        bot_id: str,
        connections: BotConnections,
        *,
        connect_wait: float = CONNECT_WAIT,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self.bot_id = bot_id
        self.connections = connections
        self.connect_wait = connect_wait
        self.ack_timeout = ack_timeout

    @classmethod
    def from_options(
        cls, bot_id: str, options: Mapping[str, Any], connections: BotConnections
    ) -> ConnectedBot:
        reader = OptionReader(bot_id, options)
        connect_wait = reader.number("connect_wait", CONNECT_WAIT)
        ack_timeout = reader.number("ack_timeout", ACK_TIMEOUT)
        reader.done(OPTION_KEYS)
        return cls(bot_id, connections, connect_wait=connect_wait, ack_timeout=ack_timeout)

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        await self.connections.deliver(
            self.bot_id,
            event.event_id,
            event_frame(event),
            connect_wait=self.connect_wait,
            ack_timeout=self.ack_timeout,
        )
        return ()


__all__ = ["OPTION_KEYS", "BotNotAcknowledging", "BotNotConnected", "ConnectedBot"]
