"""Gorgias as a bot's livechat platform (``[bots.<id>.livechat] kind = "gorgias"``).

A Gorgias ticket per livechat session, written through the REST API
(:mod:`~transport.livechat.gorgias.connector`) inside the account's rate limit
(:mod:`~transport.livechat.gorgias.ratelimit`), read back when Gorgias's HTTP integration
pokes Switchover (:mod:`~transport.livechat.gorgias.webhook`) and on a timer;
``switchover gorgias setup`` creates that integration (:mod:`~transport.livechat.gorgias.setup`).
docs/platforms.md has the walkthrough.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from transport.livechat.gorgias.connector import GorgiasConnector
from transport.livechat.gorgias.options import GorgiasOptions
from transport.livechat.platform import PlatformBackend
from transport.livechat.tickets import Tickets


def build_backend(
    name: str,
    bot_id: str,
    options: Mapping[str, Any],
    http: httpx.AsyncClient,
    tickets: Tickets,
) -> tuple[PlatformBackend, str]:
    """The backend of one bot's Gorgias account, named ``name``, and the token its HTTP
    integration sends."""
    read = GorgiasOptions.read(bot_id, options)
    backend = PlatformBackend.configured(
        name, GorgiasConnector(read, http), tickets, read, reconcile_every=read.reconcile_every
    )
    return backend, read.webhook_token


__all__ = ["GorgiasConnector", "GorgiasOptions", "build_backend"]
