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
from transport.livechat import chatwoot, gorgias
from transport.livechat.platform import PlatformBackend
from transport.livechat.tickets import FILE_NAME, MemoryTickets, SQLiteTickets, Tickets
from transport.livechat.webhook import WebhookConnector, WebhookOptions


@attrs.frozen
class Backends:
    """The backends by the name the core knows them by, and for each platform-backed bot
    its backend and the token its platform calls Switchover's API with."""

    by_name: Mapping[str, LivechatBackend]
    platforms: Mapping[str, tuple[PlatformBackend, str]]
    #: Each Gorgias-backed bot's backend and the token its HTTP integration sends.
    gorgias: Mapping[str, tuple[PlatformBackend, str]] = attrs.field(factory=dict)
    #: Each Chatwoot-backed bot's backend and options (what its inbox's webhook must carry).
    chatwoot: Mapping[str, tuple[PlatformBackend, chatwoot.ChatwootOptions]] = attrs.field(
        factory=dict
    )


def check_platforms(config: Config, environ: Mapping[str, str] | None = None) -> None:
    """Raise a :class:`ConfigError` listing every platform option problem of every bot."""
    problems: list[str] = []
    for bot_id, bot in config.bots.items():
        if bot.livechat.kind == "webhook":
            try:
                WebhookOptions.read(bot_id, bot.livechat.options, environ)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if bot.livechat.kind == "gorgias":
            try:
                gorgias.GorgiasOptions.read(bot_id, bot.livechat.options, environ)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if bot.livechat.kind == "chatwoot":
            try:
                chatwoot.ChatwootOptions.read(bot_id, bot.livechat.options, environ)
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
    gorgias_bots: dict[str, tuple[PlatformBackend, str]] = {}
    chatwoot_bots: dict[str, tuple[PlatformBackend, chatwoot.ChatwootOptions]] = {}
    for bot_id, bot in config.bots.items():
        if bot.livechat.kind == "gorgias":
            gorgias_bots[bot_id] = gorgias.build_backend(
                bot.backend, bot_id, bot.livechat.options, http, _tickets(data_dir, bot_id)
            )
            by_name[bot.backend] = gorgias_bots[bot_id][0]
            continue
        if bot.livechat.kind == "chatwoot":
            chatwoot_bots[bot_id] = chatwoot.build_backend(
                bot.backend, bot_id, bot.livechat.options, http, _tickets(data_dir, bot_id)
            )
            by_name[bot.backend] = chatwoot_bots[bot_id][0]
            continue
        if bot.livechat.kind != "webhook":
            continue
        options = WebhookOptions.read(bot_id, bot.livechat.options)
        tickets: Tickets = (
            SQLiteTickets(data_dir / FILE_NAME, bot_id) if data_dir is not None else MemoryTickets()
        )
        backend = PlatformBackend.configured(
            bot.backend, WebhookConnector(options, http), tickets, options
        )
        by_name[bot.backend] = backend
        platforms[bot_id] = (backend, options.api_token)
    return Backends(by_name, platforms, gorgias=gorgias_bots, chatwoot=chatwoot_bots)


def _tickets(data_dir: Path | None, bot_id: str) -> Tickets:
    """Where a platform-backed bot keeps its tickets: beside the store, else in memory."""
    return SQLiteTickets(data_dir / FILE_NAME, bot_id) if data_dir is not None else MemoryTickets()
