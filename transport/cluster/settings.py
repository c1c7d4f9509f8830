"""Administrators' changes to the bots' settings, shared by every node (docs/cluster.md).

A change made through one node's settings API is kept in the engine, one hash field per bot
(``sw:bot-settings``: the entry the single server keeps in ``bot-settings.json``), made
durable as the commits are, then announced on ``sw:settings``. Every node, the one that made
it included, reads the bot's entry again when it hears the announcement, and at start-up
reads them all (after subscribing, so no change falls between the two). So every node's core
and the desk serve a bot under the same settings, and a node that starts later starts under
them too. Two administrators changing the same bot at once through two nodes: the last
write wins, on every node.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from transport.cluster.engine import Engine, EngineError, subscriber
from transport.cluster.streams import pairs
from transport.cluster.streams import text as _text

log = logging.getLogger("switchover.cluster")

#: Each bot's stored changes (bot id -> the entry's JSON).
KEY = "sw:bot-settings"
#: Announces a change: the message is the bot's id.
CHANNEL = "sw:settings"

FIRST_PAUSE = 0.1
MAX_PAUSE = 5.0

Take = Callable[[str, Mapping[str, Any]], None]


class SharedSettings:
    """The engine's side of :class:`~transport.livechat.settings.BotSettingsBook` in the
    clustered mode: ``keep`` stores a bot's entry, ``follow`` hands every stored entry to
    ``take`` at start and each changed one as it is announced."""

    def __init__(
        self, engine: Engine, addresses: Sequence[str], durable: Callable[[str], Awaitable[None]]
    ) -> None:
        self.engine = engine
        self.addresses = list(addresses)
        self.durable = durable

    async def keep(self, bot_id: str, entry: Mapping[str, Any]) -> None:
        await self.engine.command(["HSET", KEY, bot_id, json.dumps(entry)], key=KEY)
        await self.durable(KEY)
        await self.engine.command(["PUBLISH", CHANNEL, bot_id], key=CHANNEL)

    async def follow(self, take: Take, *, task_status: trio.TaskStatus[None]) -> None:
        """Hand ``take`` every stored entry, report started, then each one announced. A
        lost subscription is made again (with back-off), and every entry read again: an
        announcement made meanwhile is not missed."""
        started = False
        pause = FIRST_PAUSE
        while True:
            try:
                listener = await subscriber(self.addresses, {CHANNEL})
                try:
                    await self._take_all(take)
                    if not started:
                        task_status.started()
                        started = True
                    pause = FIRST_PAUSE
                    while True:
                        message = await listener.client.get_pubsub_message()
                        bot_id = _text(message.message)
                        entry = await self.engine.command(["HGET", KEY, bot_id], key=KEY)
                        if entry is not None:
                            self._take(take, bot_id, entry)
                finally:
                    with trio.CancelScope(shield=True):
                        await listener.close()
            except EngineError as exc:
                if not started:
                    raise
                log.warning("bots' settings: lost the engine (%s); again in %g s", exc, pause)
                await trio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE)

    async def _take_all(self, take: Take) -> None:
        stored = await self.engine.command(["HGETALL", KEY], key=KEY) or {}
        for bot_id, entry in pairs(stored):
            self._take(take, bot_id, entry)

    @staticmethod
    def _take(take: Take, bot_id: Any, entry: Any) -> None:
        try:
            data = json.loads(entry)
        except ValueError:
            log.warning("the stored settings of bot %s are not JSON: ignored", _text(bot_id))
            return
        if isinstance(data, dict):
            take(_text(bot_id), data)
