"""What a running server is made of, gathered in one object the listeners share."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from actors import Desk, Switchboard
from transport.bots.connections import BotConnections
from transport.protocol.limits import Limits


@attrs.define
class Services:
    """The core and the credentials every listener needs.

    ``agent_tokens`` maps a secret token to an agent id; ``bot_tokens`` maps a secret token to
    a bot id (for bots that connect or push). ``secret`` signs users' resume tokens.
    ``bot_connections`` lists the bots connected over WebSocket (the connected-bot adapter
    reaches them through it).
    """

    board: Switchboard
    desk: Desk
    secret: str
    agent_tokens: Mapping[str, str] = attrs.field(factory=dict)
    bot_tokens: Mapping[str, str] = attrs.field(factory=dict)
    limits: Limits = Limits()
    default_bot: str = "demo"
    bot_connections: BotConnections = attrs.field(factory=BotConnections)
