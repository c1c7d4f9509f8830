"""Each bot's livechat settings at run time: the config file's, changed by administrators.

The config file is the starting point. A change made through the settings API (or the
``/settings`` page) is kept per key in ``bot-settings.json`` in the data directory (in memory
with the memory store), and wins over the file's value for that key, across restarts, until it
is reset: then the file's value counts again. Every change is checked by the config reader's
own code (:func:`transport.config.read_bot_settings`), so a value the file would refuse is
refused in the same words, and logged with who made it and what changed.

A change reaches the core through :meth:`actors.Switchboard.replace_settings`: open sessions
take it up from their next deadline on. In the clustered mode the changes are kept in the
engine instead (``keep``), and every node takes up each one (:meth:`BotSettingsBook.take`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from actors import BotSettings
from transport.config import Config, bot_settings_key, read_bot_settings, write_atomically
from transport.errors import ConfigError

log = logging.getLogger("switchover.settings")

FILENAME = "bot-settings.json"
#: The most keys a stored change may name (BotSettings has fewer; bounds what is read back).
_MAX_KEYS = 64


@attrs.frozen
class Change:
    """The last change of one bot's settings: who, when (seconds since the epoch), and each
    key's value before and after (``None`` after: reset to the file's value)."""

    admin_id: str
    admin_name: str
    at: float
    changes: Mapping[str, tuple[Any, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "admin_id": self.admin_id,
            "admin_name": self.admin_name,
            "at": self.at,
            "changes": {key: {"old": old, "new": new} for key, (old, new) in self.changes.items()},
        }


class UnknownBot(KeyError):
    pass


def settings_json(settings: BotSettings) -> dict[str, Any]:
    """Settings as JSON values, keyed as in the config file."""
    return attrs.asdict(settings)


def _field_kind(declared: str) -> str:
    """A field's kind as the config reader checks it (transport/config.py); a collection
    (``tuple[str, ...]``) is "other": the page edits it as JSON."""
    if "[" in declared:
        return "other"
    for name, kind in (("str", "string"), ("float", "number"), ("int", "integer")):
        if name in declared:
            return kind
    return "other"


#: Every settings key, its kind ("string", "number", "integer", "other") and whether it may
#: be unset (``null``), read from BotSettings itself, so pages need no list of their own.
FIELDS = [
    {
        "key": field.name,
        "kind": _field_kind(str(field.type)),
        "optional": "None" in str(field.type),
    }
    for field in attrs.fields(BotSettings)
]


class BotSettingsBook:
    """The bots' settings in force: the file's, with the stored changes over them.

    ``path``: where changes are kept (``None``: in memory only). :meth:`load` reads them at
    start-up; a stored key the file would now refuse (the bot or the key is gone, a rule
    changed) is left out with a warning. ``on_change`` is called with each bot's new
    settings once a change is stored; the runtime points it at the core.
    """

    def __init__(self, file_settings: Mapping[str, BotSettings], path: Path | None) -> None:
        self.file_settings = dict(file_settings)
        self.path = path
        self._stored: dict[str, dict[str, Any]] = {bot_id: {} for bot_id in file_settings}
        self._last: dict[str, Change] = {}
        self._current = dict(file_settings)
        self._lock = trio.Lock()
        self.on_change: Callable[[str, BotSettings], None] = lambda bot_id, settings: None
        #: Where a bot's stored changes are kept besides ``path`` (the clustered mode's
        #: engine, which hands them to every node): called with the bot's entry.
        self.keep: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None

    @classmethod
    def for_config(cls, config: Config) -> BotSettingsBook:
        """The book of a server: its file's settings, and the changes kept in its data
        directory (with the SQLite store)."""
        data_dir = config.store.data_dir if config.store.kind == "sqlite" else None
        book = cls(
            {bot_id: bot.settings for bot_id, bot in config.bots.items()},
            None if data_dir is None else data_dir / FILENAME,
        )
        book.load()
        return book

    def applied_to(self, config: Config) -> Config:
        """``config`` with every bot's settings as in force, to build the server from."""
        bots = {
            bot_id: attrs.evolve(bot, settings=self._current.get(bot_id, bot.settings))
            for bot_id, bot in config.bots.items()
        }
        return attrs.evolve(config, bots=bots)

    # -- reading ----------------------------------------------------------------------------

    @property
    def bot_ids(self) -> list[str]:
        return list(self.file_settings)

    def current(self, bot_id: str) -> BotSettings:
        try:
            return self._current[bot_id]
        except KeyError:
            raise UnknownBot(bot_id) from None

    def stored_keys(self, bot_id: str) -> list[str]:
        """The keys whose value comes from a change, not from the file."""
        self.current(bot_id)
        return sorted(self._stored[bot_id])

    def last_change(self, bot_id: str) -> Change | None:
        self.current(bot_id)
        return self._last.get(bot_id)

    def view(self, bot_id: str) -> dict[str, Any]:
        """What the API answers about one bot."""
        last = self.last_change(bot_id)
        return {
            "bot_id": bot_id,
            "fields": FIELDS,
            "settings": settings_json(self.current(bot_id)),
            "file": settings_json(self.file_settings[bot_id]),
            "changed": self.stored_keys(bot_id),
            "last_change": None if last is None else last.to_json(),
        }

    # -- changing ---------------------------------------------------------------------------

    async def change(
        self, bot_id: str, values: Mapping[str, Any], admin_id: str, admin_name: str
    ) -> BotSettings:
        """Set some keys of a bot's settings. Raises :class:`UnknownBot`, or
        :class:`ConfigError` with the config file's words (nothing is changed then)."""
        async with self._lock:
            old = self.current(bot_id)
            new = read_bot_settings(values, bot_id, old)
            stored = dict(self._stored[bot_id])
            shown = settings_json(new)
            stored.update({key: shown[key] for key in values})
            return await self._commit(bot_id, old, new, stored, admin_id, admin_name)

    async def reset(
        self, bot_id: str, keys: list[str] | None, admin_id: str, admin_name: str
    ) -> BotSettings:
        """Give keys (every key: ``None``) their config file's value back."""
        async with self._lock:
            old = self.current(bot_id)
            known = {field.name for field in attrs.fields(BotSettings)}
            unknown = [key for key in keys or () if key not in known]
            if unknown:
                raise ConfigError(
                    [f"{bot_settings_key(bot_id)}.{key}: unknown key" for key in unknown]
                )
            stored = {
                key: value
                for key, value in self._stored[bot_id].items()
                if keys is not None and key not in keys
            }
            new = read_bot_settings(_jsonable(stored), bot_id, self.file_settings[bot_id])
            return await self._commit(bot_id, old, new, stored, admin_id, admin_name)

    async def _commit(
        self,
        bot_id: str,
        old: BotSettings,
        new: BotSettings,
        stored: dict[str, Any],
        admin_id: str,
        admin_name: str,
    ) -> BotSettings:
        before, after = settings_json(old), settings_json(new)
        changes = {key: (before[key], after[key]) for key in after if before[key] != after[key]}
        if not changes and stored == self._stored[bot_id]:
            return old
        change = Change(admin_id, admin_name, time.time(), changes)
        last = dict(self._last)
        if changes:
            last[bot_id] = change
        everything = {**self._stored, bot_id: stored}
        # Shielded: a request cut short must not leave the change kept and the server
        # without it (a file write would go on in its thread anyway).
        with trio.CancelScope(shield=True):
            if self.path is not None:
                await trio.to_thread.run_sync(_write, self.path, everything, last)
            if self.keep is not None:
                await self.keep(bot_id, _entry(stored, last.get(bot_id)))
        self._stored = everything
        self._last = last
        self._current[bot_id] = new
        log.info(
            "settings of bot %s changed by admin %s: %s",
            bot_id,
            admin_id,
            ", ".join(
                f"{key} {_brief(old)} -> {_brief(new)}" for key, (old, new) in changes.items()
            )
            or "nothing",
            extra={"bot_id": bot_id, "admin_id": admin_id},
        )
        self.on_change(bot_id, new)
        return new

    # -- the file ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the stored changes, keeping only those the config reader still takes."""
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning(
                "%s cannot be read (%s): the config file's settings are used", self.path, exc
            )
            return
        bots = data.get("bots") if isinstance(data, dict) else None
        if not isinstance(bots, dict):
            log.warning("%s holds no settings: the config file's settings are used", self.path)
            return
        for bot_id, entry in bots.items():
            if bot_id not in self.file_settings:
                log.warning(
                    "%s: bot %s is no longer configured; its settings are ignored",
                    self.path,
                    bot_id,
                )
                continue
            if not isinstance(entry, dict):
                continue
            self._load_bot(bot_id, entry)

    def take(self, bot_id: str, entry: Mapping[str, Any]) -> None:
        """A bot's stored changes as another node kept them (the clustered mode): in force
        here from now on, as if changed here (``on_change`` when the settings differ)."""
        if bot_id not in self.file_settings:
            return
        old = self._current[bot_id]
        self._stored[bot_id] = {}
        self._current[bot_id] = self.file_settings[bot_id]
        self._last.pop(bot_id, None)
        self._load_bot(bot_id, entry)
        new = self._current[bot_id]
        if new != old:
            log.info("settings of bot %s changed on another node", bot_id)
            self.on_change(bot_id, new)

    def _load_bot(self, bot_id: str, entry: Mapping[str, Any]) -> None:
        values = entry.get("values")
        if isinstance(values, dict) and len(values) <= _MAX_KEYS:
            kept: dict[str, Any] = {}
            for key, value in values.items():
                try:
                    read_bot_settings({key: value}, bot_id, self.file_settings[bot_id])
                except ConfigError as exc:
                    log.warning(
                        "%s: a stored setting is ignored: %s", self.path, "; ".join(exc.problems)
                    )
                    continue
                kept[key] = value
            try:
                settings = read_bot_settings(kept, bot_id, self.file_settings[bot_id])
            except ConfigError as exc:
                log.warning(
                    "%s: the stored settings of bot %s are ignored: %s",
                    self.path,
                    bot_id,
                    "; ".join(exc.problems),
                )
            else:
                self._stored[bot_id] = {key: getattr(settings, key) for key in kept}
                self._current[bot_id] = settings
        last = entry.get("last_change")
        if isinstance(last, dict):
            self._last[bot_id] = _change_from_json(last)


LOGGED_VALUE_LENGTH = 120


def _brief(value: object) -> str:
    """A value for the log line, cut short: a list of canned responses may be long."""
    shown = repr(value)
    if len(shown) <= LOGGED_VALUE_LENGTH:
        return shown
    return shown[: LOGGED_VALUE_LENGTH - 1] + "…"


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Stored values as the JSON they are read back from (tuples become lists)."""
    loaded: dict[str, Any] = json.loads(json.dumps(dict(values)))
    return loaded


def _write(path: Path, stored: Mapping[str, Mapping[str, Any]], last: Mapping[str, Change]) -> None:
    """The whole file, replaced at once: a crash leaves the old one or the new one."""
    data = {
        "version": 1,
        "bots": {bot_id: _entry(values, last.get(bot_id)) for bot_id, values in stored.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _entry(values: Mapping[str, Any], last: Change | None) -> dict[str, Any]:
    """One bot's stored changes, as kept (in the file, or in the clustered mode's engine)."""
    return {
        "values": _jsonable(values),
        "last_change": None if last is None else last.to_json(),
    }


def _change_from_json(data: Mapping[str, Any]) -> Change:
    raw = data.get("changes")
    changes: dict[str, tuple[Any, Any]] = {}
    if isinstance(raw, dict):
        for key, pair in raw.items():
            if isinstance(pair, dict):
                changes[str(key)] = (pair.get("old"), pair.get("new"))
    at = data.get("at")
    return Change(
        str(data.get("admin_id", "")),
        str(data.get("admin_name", "")),
        float(at) if isinstance(at, int | float) and not isinstance(at, bool) else 0.0,
        changes,
    )


__all__ = ["FILENAME", "BotSettingsBook", "Change", "UnknownBot", "settings_json"]
