"""Every bot's livechat backend, built from the config: the one built-in desk for the bots
that use it, and a platform of its own for each bot whose humans are elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx

from actors import Desk
from actors.ports import LivechatBackend
from transport.config import Config
from transport.errors import ConfigError
from transport.livechat.chatwoot.connector import ChatwootConnector
from transport.livechat.chatwoot.options import ChatwootOptions
from transport.livechat.platform import PlatformBackend
from transport.livechat.tickets import FILE_NAME, MemoryTickets, SQLiteTickets, Tickets
from transport.livechat.webhook import WebhookConnector, WebhookOptions


@attrs.frozen
class Backends:
    """The backends by the name the core knows them by; for each bot of the generic
    webhook platform its backend and the token its helpdesk calls Switchover's API with;
    for each Chatwoot-backed bot its backend and options (its webhook's checks)."""

    by_name: Mapping[str, LivechatBackend]
    platforms: Mapping[str, tuple[PlatformBackend, str]]
    chatwoot: Mapping[str, tuple[PlatformBackend, ChatwootOptions]] = attrs.field(factory=dict)


def check_platforms(config: Config, environ: Mapping[str, str] | None = None) -> None:
    """Raise a :class:`ConfigError` listing every platform option problem of every bot."""
    problems: list[str] = []
    for bot_id, bot in config.bots.items():
        reader = _READERS.get(bot.livechat.kind)
        if reader is not None:
            try:
                reader(bot_id, bot.livechat.options, environ)
            except ConfigError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)


def build_backends(
    config: Config, desk: Desk, http: httpx.AsyncClient, data_dir: Path | None
) -> Backends:
    """``data_dir``: where platforms keep their tickets (``None``: in memory)."""
    check_platforms(config)
    by_name: dict[str, LivechatBackend] = {"desk": desk}
    platforms: dict[str, tuple[PlatformBackend, str]] = {}
    chatwoot: dict[str, tuple[PlatformBackend, ChatwootOptions]] = {}
    for bot_id, bot in config.bots.items():
        if bot.livechat.kind not in _READERS:
            continue
        tickets: Tickets = (
            SQLiteTickets(data_dir / FILE_NAME, bot_id) if data_dir is not None else MemoryTickets()
        )
        if bot.livechat.kind == "chatwoot":
            site = ChatwootOptions.read(bot_id, bot.livechat.options)
            backend = PlatformBackend(
                bot.backend,
                ChatwootConnector(site, http),
                tickets,
                workers=site.workers,
                unreachable_after=site.unreachable_after,
                max_backoff=site.max_backoff,
                reconcile_every=site.reconcile_every,
            )
            chatwoot[bot_id] = (backend, site)
        else:
            options = WebhookOptions.read(bot_id, bot.livechat.options)
            backend = PlatformBackend(
                bot.backend,
                WebhookConnector(options, http),
                tickets,
                workers=options.workers,
                unreachable_after=options.unreachable_after,
                max_backoff=options.max_backoff,
            )
            platforms[bot_id] = (backend, options.api_token)
        by_name[bot.backend] = backend
    return Backends(by_name, platforms, chatwoot)


#: Each platform kind's option reader (the desk takes none).
_READERS: Mapping[str, Callable[[str, Mapping[str, Any], Mapping[str, str] | None], object]] = {
    "webhook": WebhookOptions.read,
    "chatwoot": ChatwootOptions.read,
}
