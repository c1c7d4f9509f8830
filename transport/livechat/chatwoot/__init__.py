"""Chatwoot as a bot's livechat platform (``[bots.<id>.livechat] kind = "chatwoot"``).

A Chatwoot conversation per livechat session in an API-channel inbox, written through the
Application API (:mod:`~transport.livechat.chatwoot.connector`, its options in
:mod:`~transport.livechat.chatwoot.options`), read back when the inbox's webhook pokes
Switchover (:mod:`~transport.livechat.chatwoot.webhook`) and on a timer;
``switchover chatwoot setup`` creates the inbox (:mod:`~transport.livechat.chatwoot.setup`).
docs/platforms.md has the walkthrough.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from transport.livechat.chatwoot.connector import ChatwootConnector
from transport.livechat.chatwoot.options import ChatwootOptions
from transport.livechat.platform import PlatformBackend
from transport.livechat.tickets import Tickets


def build_backend(
    name: str,
    bot_id: str,
    options: Mapping[str, Any],
    http: httpx.AsyncClient,
    tickets: Tickets,
) -> tuple[PlatformBackend, ChatwootOptions]:
    """The backend of one bot's Chatwoot inbox, named ``name``, and its options (what the
    inbox's webhook is checked against)."""
    read = ChatwootOptions.read(bot_id, options)
    backend = PlatformBackend.configured(
        name, ChatwootConnector(read, http), tickets, read, reconcile_every=read.reconcile_every
    )
    return backend, read


__all__ = ["ChatwootConnector", "ChatwootOptions", "build_backend"]
