"""Every bot's livechat backend, built from the config: the one built-in desk for the bots
that use it, and a platform of its own for each bot whose humans are elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs
import httpx

from actors import Desk
from actors.ports import LivechatBackend
from transport.config import Config
from transport.errors import ConfigError
from transport.livechat.platform import PlatformBackend
from transport.livechat.tickets import FILE_NAME, MemoryTickets, SQLiteTickets, Tickets
from transport.livechat.webhook import WebhookConnector, WebhookOptions


@attrs.frozen
class Backends:
    """The backends by the name the core knows them by, and for each platform-backed bot
    its backend and the token its platform calls Switchover's API with."""

    by_name: Mapping[str, LivechatBackend]
    platforms: Mapping[str, tuple[PlatformBackend, str]]


def check_platforms(config: Config, environ: Mapping[str, str] | None = None) -> None:
    """Raise a :class:`ConfigError` listing every platform option problem of every bot."""
    problems: list[str] = []
    for bot_id, bot in config.bots.items():
        if bot.livechat.kind == "webhook":
            try:
                WebhookOptions.read(bot_id, bot.livechat.options, environ)
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
    for bot_id, bot in config.bots.items():
        if bot.livechat.kind != "webhook":
            continue
        options = WebhookOptions.read(bot_id, bot.livechat.options)
        tickets: Tickets = (
            SQLiteTickets(data_dir / FILE_NAME, bot_id) if data_dir is not None else MemoryTickets()
        )
        backend = PlatformBackend(
            bot.backend,
            WebhookConnector(options, http),
            tickets,
            workers=options.workers,
            unreachable_after=options.unreachable_after,
            max_backoff=options.max_backoff,
        )
        by_name[bot.backend] = backend
        platforms[bot_id] = (backend, options.api_token)
    return Backends(by_name, platforms)
