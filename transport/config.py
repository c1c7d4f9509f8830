"""The server's configuration: a TOML file, environment variables, and embedded defaults.

Precedence, lowest first: the embedded defaults, the TOML file, ``SWITCHOVER_*`` environment
variables, then command-line flags (applied by the CLI with :func:`with_overrides`). Without a
file, Switchover serves one demo bot and one demo agent whose token is generated on first start
(and kept in the data directory, see :func:`with_kept_demo_tokens`),
so ``switchover serve`` is useful on a fresh machine.

Every problem found is reported with the dotted key it concerns (``bots.demo.settings.
session_timeout``), and all problems are reported at once, so a config is fixed in one pass.
See docs/configuration.md for the reference.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import tomllib
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from actors.model.settings import BotSettings, CannedResponse, canned_problems
from transport.errors import ConfigError
from transport.logs import LOG_FORMATS
from transport.protocol.attachments import AttachmentLimits, well_formed_type
from transport.protocol.credentials import hash_token, is_hashed, token_problem
from transport.protocol.limits import Limits
from transport.strict import bad_text
from transport.validators import sign_problem

log = logging.getLogger("switchover.config")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_WS_PORT = 8765
DEFAULT_HTTP_PORT = 8080
DEFAULT_BOT = "demo"
DEFAULT_AGENT = "demo-agent"
STORE_KINDS = ("sqlite", "memory", "valkey")
#: How a clustered store makes a commit durable before it is acknowledged (docs/cluster.md).
CLUSTER_DURABILITY = ("aof", "replica", "none")
DEFAULT_DATA_DIR = Path("data")
#: WebSocket listener implementations; the first is the default (see
#: transport/servers/websocket.py).
WS_LISTENERS = ("fast", "trio-websocket")
LOG_LEVELS = ("debug", "info", "warning", "error")
SECRET_FILE = "secret"
DEMO_TOKEN_FILE = "demo-agent-token"


#: Where a bot's humans can be: the built-in desk, or a helpdesk (the signed webhook
#: protocol, or a platform with its own connector: Gorgias, Chatwoot; docs/platforms.md).
LIVECHAT_KINDS = ("desk", "webhook", "gorgias", "chatwoot")


@attrs.frozen
class LivechatConfig:
    """Where a bot's livechat sessions go (``[bots.<id>.livechat]``): ``kind`` and its
    ``options``, checked by the platform that reads them when the server is built (and by
    ``switchover check``)."""

    kind: str = "desk"
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class BotConfig:
    """A bot served: how to reach it (``adapter`` and its ``options``), its livechat
    settings, and where its sessions' humans are. ``token`` lets it connect or push."""

    bot_id: str
    adapter: str = "demo"
    options: Mapping[str, Any] = attrs.field(factory=dict)
    settings: BotSettings = BotSettings()
    livechat: LivechatConfig = LivechatConfig()
    token: str | None = None

    @property
    def backend(self) -> str:
        """The name the core knows this bot's livechat backend by: the one built-in desk
        serves every bot that has it, each platform-backed bot has its own."""
        kind = self.livechat.kind
        return kind if kind == "desk" else f"{kind}:{self.bot_id}"


@attrs.frozen
class AgentConfig:
    """A human agent of the built-in desk. ``generated`` marks a token made up at start-up,
    which the server prints so someone can use it."""

    agent_id: str
    name: str
    token: str
    bots: frozenset[str]
    capacity: int | None = None
    generated: bool = False


@attrs.frozen
class AdminConfig:
    """An administrator: may read and change the bots' livechat settings at run time
    (``/settings`` and ``/api/bots``). Its token opens nothing else, and no agent's or bot's
    token opens this."""

    admin_id: str
    name: str
    token: str


@attrs.frozen
class ListenerConfig:
    """Where the server listens. ``public_ws_url`` is the WebSocket address the web pages
    are told to use when the server sits behind a proxy; by default they use the host they
    loaded the page from with ``ws_port``. ``websocket`` picks the WebSocket listener's
    implementation: "fast" (transport/servers/fastws.py) or "trio-websocket"; both speak the same
    protocol."""

    host: str = DEFAULT_HOST
    ws_port: int = DEFAULT_WS_PORT
    http_port: int = DEFAULT_HTTP_PORT
    public_ws_url: str | None = None
    shutdown_timeout: float = 5.0
    websocket: str = WS_LISTENERS[0]
    #: Origins allowed to frame the ``/widget`` page (CSP ``frame-ancestors``); none by default.
    widget_frame_ancestors: tuple[str, ...] = ()


@attrs.frozen
class StoreConfig:
    """``kind`` "sqlite" keeps conversations in ``data_dir``; "memory" forgets them on exit.
    A server started from the command line keeps them by default, in ``data/`` (under the
    working directory, or beside the config file); this class's own default, memory, is for
    code that builds a config by hand. ``retention_days``: a running server with the SQLite
    store deletes conversations quiet for that long (``None``: keep all)."""

    kind: str = "memory"
    data_dir: Path | None = None
    retention_days: float | None = None
    #: The clustered mode (``kind`` "valkey", docs/cluster.md): the engine's addresses
    #: ("host:port"), this node's id, the number of partitions, their lease, and durability.
    addresses: tuple[str, ...] = ()
    node_id: str | None = None
    partitions: int = 64
    lease_seconds: float = 2.0
    durability: str = "aof"


@attrs.frozen
class LoggingConfig:
    format: str = "text"
    level: str = "info"


@attrs.frozen
class Config:
    bots: Mapping[str, BotConfig]
    agents: Mapping[str, AgentConfig]
    listeners: ListenerConfig = ListenerConfig()
    limits: Limits = Limits()
    store: StoreConfig = StoreConfig()
    logging: LoggingConfig = LoggingConfig()
    attachments: AttachmentLimits = AttachmentLimits()
    secret: str | None = None
    default_bot: str = DEFAULT_BOT
    source: str = "embedded defaults"
    admins: Mapping[str, AdminConfig] = attrs.field(factory=dict)

    @property
    def generated_agents(self) -> list[AgentConfig]:
        return [agent for agent in self.agents.values() if agent.generated]


# -- reading values -----------------------------------------------------------------------


class _Reader:
    """Collects problems while taking typed values out of a TOML table."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def table(self, data: Mapping[str, Any], key: str, name: str) -> Mapping[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, Mapping):
            self.problem(_join(key, name), f"must be a table, got {_kind(value)}")
            return {}
        return value

    def unknown(self, data: Mapping[str, Any], key: str, allowed: set[str]) -> None:
        for name in data:
            if name not in allowed:
                hint = f"; known keys: {', '.join(sorted(allowed))}" if allowed else ""
                self.problem(_join(key, name), f"unknown key{hint}")

    def string(
        self, data: Mapping[str, Any], key: str, name: str, default: str | None = None
    ) -> str | None:
        value = data.get(name, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(_join(key, name), f"must be a non-empty string, got {_shown(value)}")
            return default
        return value

    def choice(
        self, data: Mapping[str, Any], key: str, name: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self.string(data, key, name, default) or default
        if value.lower() not in choices:
            self.problem(_join(key, name), f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value.lower()

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        name: str,
        default: int | None,
        *,
        low: int = 0,
        high: int | None = None,
    ) -> int | None:
        value = data.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(_join(key, name), f"must be an integer, got {_shown(value)}")
            return default
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(_join(key, name), f"must be {bounds}, got {value}")
            return default
        return value

    def number(self, data: Mapping[str, Any], key: str, name: str, default: float) -> float:
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(_join(key, name), f"must be a number, got {_shown(value)}")
            return default
        problem = sign_problem(value)
        if problem is not None:
            self.problem(_join(key, name), problem)
            return default
        return float(value)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return f"{_kind(value)} ({value!r})"
    return _kind(value)


def _attrs_from_table(
    reader: _Reader,
    data: Mapping[str, Any],
    key: str,
    cls: type[Any],
    what: str,
    base: Any = None,
) -> Any:
    """Build an attrs class (BotSettings, Limits) from a table, checking each field's type
    from its declared annotation, so new fields are configurable without touching this.
    ``base``: an instance whose values stand for the keys the table leaves out (the
    defaults without one); a ``None`` value then unsets an optional field."""
    fields = {field.name: field for field in attrs.fields(cls)}
    reader.unknown(data, key, set(fields))
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in fields:
            continue
        declared = str(fields[name].type)
        full = _join(key, name)
        if value is None and base is not None and "None" in declared:
            values[name] = None
            continue
        if "str" in declared:
            ok = isinstance(value, str)
            expected = "a string"
        elif "float" in declared:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            expected = "a number"
        elif "int" in declared:
            ok = isinstance(value, int) and not isinstance(value, bool)
            expected = "an integer"
        else:
            ok, expected = True, ""
        if not ok:
            reader.problem(full, f"must be {expected}, got {_shown(value)}")
            continue
        zero_is_off = fields[name].metadata.get("zero_is_off", False)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        problem = sign_problem(value, zero_is_off=zero_is_off) if number else None
        if problem is not None:
            reader.problem(full, problem)
            continue
        values[name] = float(value) if "float" in declared and isinstance(value, int) else value
    try:
        return cls(**values) if base is None else attrs.evolve(base, **values)
    except (TypeError, ValueError) as exc:
        reader.problem(key, f"invalid {what}: {exc}")
        return cls() if base is None else base


def read_bot_settings(
    data: Mapping[str, Any], bot_id: str, base: BotSettings | None = None
) -> BotSettings:
    """A bot's livechat settings from ``data`` (``[bots.<id>.settings]``'s keys), checked
    and worded exactly as in the config file, so anything that changes them at run time
    refuses what the file refuses, in the same words. ``base``: the settings the keys
    change (the defaults without one); ``None`` unsets an optional key. Raises
    :class:`ConfigError` listing every problem, each under its dotted key."""
    reader = _Reader()
    key = bot_settings_key(bot_id)
    settings: BotSettings = _attrs_from_table(reader, data, key, BotSettings, "settings", base)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def bot_settings_key(bot_id: str) -> str:
    """The dotted key a bot's settings' problems are reported under."""
    return f"bots.{bot_id}.settings"


# -- the sections -------------------------------------------------------------------------

_TOP_KEYS = {
    "bots",
    "agents",
    "admins",
    "listeners",
    "limits",
    "store",
    "logging",
    "secret",
    "default_bot",
}
_BOT_KEYS = {"adapter", "options", "settings", "livechat", "backend", "token"}
_LIVECHAT_KEYS = {"kind", "options"}
_AGENT_KEYS = {"name", "token", "capacity", "bots"}
_ADMIN_KEYS = {"name", "token", "token_env"}
_LISTENER_KEYS = {
    "host",
    "ws_port",
    "http_port",
    "public_ws_url",
    "shutdown_timeout",
    "websocket",
    "widget_frame_ancestors",
}
CLUSTER_KEYS = ("addresses", "node_id", "partitions", "lease_seconds", "durability")
_STORE_KEYS = {"kind", "data_dir", "retention_days", *CLUSTER_KEYS}
_LOGGING_KEYS = {"format", "level"}


def _bots(reader: _Reader, data: Mapping[str, Any]) -> dict[str, BotConfig]:
    table = reader.table(data, "", "bots")
    if not table and "bots" in data:
        reader.problem("bots", "at least one bot is required")
    bots: dict[str, BotConfig] = {}
    for bot_id, entry in table.items():
        key = f"bots.{bot_id}"
        if not isinstance(entry, Mapping):
            reader.problem(key, f"must be a table, got {_kind(entry)}")
            continue
        reader.unknown(entry, key, _BOT_KEYS)
        table = reader.table(entry, key, "settings")
        canned = _canned_responses(reader, table, f"{key}.settings")
        settings = _attrs_from_table(
            reader,
            {name: value for name, value in table.items() if name != "canned_responses"},
            f"{key}.settings",
            BotSettings,
            "settings",
        )
        if canned:
            settings = attrs.evolve(settings, canned_responses=canned)
        livechat = _livechat(reader, entry, key)
        adapter = reader.string(entry, key, "adapter", "demo") or "demo"
        token = reader.string(entry, key, "token")
        if adapter == "connected" and token is None and "token" not in entry:
            reader.problem(
                f"{key}.token", 'is required with adapter "connected" (the bot connects with it)'
            )
        bots[bot_id] = BotConfig(
            bot_id,
            adapter=adapter,
            options=dict(reader.table(entry, key, "options")),
            settings=settings,
            livechat=livechat,
            token=token,
        )
    return bots


def _canned_responses(
    reader: _Reader, table: Mapping[str, Any], key: str
) -> tuple[CannedResponse, ...]:
    """``[[bots.<id>.settings.canned_responses]]``: each with a ``shortcut`` and a ``text``,
    every problem reported under its own index."""
    value = table.get("canned_responses", [])
    key = f"{key}.canned_responses"
    if not isinstance(value, list):
        reader.problem(
            key, f"must be an array of tables with shortcut and text, got {_kind(value)}"
        )
        return ()
    responses: list[CannedResponse] = []
    indexes: list[int] = []  # each response's place in the file, for the problems' keys
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(item, Mapping):
            reader.problem(where, f"must be a table with shortcut and text, got {_kind(item)}")
            continue
        reader.unknown(item, where, {"shortcut", "text"})
        shortcut, text = item.get("shortcut"), item.get("text")
        for name, given in (("shortcut", shortcut), ("text", text)):
            if given is None:
                reader.problem(f"{where}.{name}", "is required")
            elif not isinstance(given, str):
                reader.problem(f"{where}.{name}", f"must be a string, got {_shown(given)}")
        if isinstance(shortcut, str) and isinstance(text, str):
            responses.append(CannedResponse(shortcut, text))
            indexes.append(index)
    problems = canned_problems(tuple(responses))
    for at, problem in problems:
        reader.problem(key if at is None else f"{key}[{indexes[at]}]", problem)
    return () if problems else tuple(responses)


def _livechat(reader: _Reader, entry: Mapping[str, Any], key: str) -> LivechatConfig:
    """``[bots.<id>.livechat]``; the older ``backend = "desk"`` key still means the desk."""
    backend = reader.string(entry, key, "backend", "desk") or "desk"
    if backend != "desk":
        reader.problem(
            f"{key}.backend", f"unknown livechat backend {backend!r}; use [{key}.livechat]"
        )
    table = reader.table(entry, key, "livechat")
    where = f"{key}.livechat"
    reader.unknown(table, where, _LIVECHAT_KEYS)
    kind = reader.choice(table, where, "kind", LIVECHAT_KINDS, "desk")
    options = reader.table(table, where, "options")
    if kind == "desk" and options:
        reader.problem(f"{where}.options", "the built-in desk takes no options")
    return LivechatConfig(kind, dict(options))


def _agents(reader: _Reader, data: Mapping[str, Any], bot_ids: list[str]) -> dict[str, AgentConfig]:
    agents: dict[str, AgentConfig] = {}
    for agent_id, entry in reader.table(data, "", "agents").items():
        key = f"agents.{agent_id}"
        if not isinstance(entry, Mapping):
            reader.problem(key, f"must be a table, got {_kind(entry)}")
            continue
        reader.unknown(entry, key, _AGENT_KEYS)
        token = reader.string(entry, key, "token")
        if token is None and "token" not in entry:
            reader.problem(f"{key}.token", "is required (the secret this agent signs in with)")
        served = entry.get("bots", bot_ids)
        if not isinstance(served, list) or not all(isinstance(b, str) for b in served):
            reader.problem(f"{key}.bots", f"must be an array of bot ids, got {_kind(served)}")
            served = []
        for bot_id in served:
            if bot_id not in bot_ids:
                reader.problem(
                    f"{key}.bots", f"names unknown bot {bot_id!r}; known: {', '.join(bot_ids)}"
                )
        agents[agent_id] = AgentConfig(
            agent_id,
            name=reader.string(entry, key, "name", agent_id) or agent_id,
            token=token or "",
            bots=frozenset(b for b in served if b in bot_ids),
            capacity=reader.integer(entry, key, "capacity", None, low=1),
        )
    return agents


def _admins(
    reader: _Reader, data: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, AdminConfig]:
    """``[admins.<id>]``, like agents: a ``token``, or ``token_env`` naming an environment
    variable holding it (so the file need not hold the secret)."""
    admins: dict[str, AdminConfig] = {}
    for admin_id, entry in reader.table(data, "", "admins").items():
        key = f"admins.{admin_id}"
        if not isinstance(entry, Mapping):
            reader.problem(key, f"must be a table, got {_kind(entry)}")
            continue
        reader.unknown(entry, key, _ADMIN_KEYS)
        token = reader.string(entry, key, "token")
        variable = reader.string(entry, key, "token_env")
        if token is not None and variable is not None:
            reader.problem(f"{key}.token", "give token or token_env, not both")
        elif variable is not None:
            token = environ.get(variable) or None
            if token is None:
                reader.problem(f"{key}.token_env", f"the environment variable {variable} is unset")
        elif token is None and "token" not in entry:
            reader.problem(
                f"{key}.token", "is required (or token_env; the secret this admin signs in with)"
            )
        admins[admin_id] = AdminConfig(
            admin_id,
            name=reader.string(entry, key, "name", admin_id) or admin_id,
            token=token or "",
        )
    return admins


def _listeners(reader: _Reader, data: Mapping[str, Any]) -> ListenerConfig:
    table = reader.table(data, "", "listeners")
    reader.unknown(table, "listeners", _LISTENER_KEYS)
    return ListenerConfig(
        host=reader.string(table, "listeners", "host", DEFAULT_HOST) or DEFAULT_HOST,
        ws_port=_port(reader, table, "ws_port", DEFAULT_WS_PORT),
        http_port=_port(reader, table, "http_port", DEFAULT_HTTP_PORT),
        public_ws_url=reader.string(table, "listeners", "public_ws_url"),
        shutdown_timeout=reader.number(table, "listeners", "shutdown_timeout", 5.0),
        websocket=reader.choice(table, "listeners", "websocket", WS_LISTENERS, WS_LISTENERS[0]),
        widget_frame_ancestors=_frame_ancestors(reader, table),
    )


def _frame_ancestors(reader: _Reader, table: Mapping[str, Any]) -> tuple[str, ...]:
    value = table.get("widget_frame_ancestors", [])
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item and not any(c in item for c in " ;,'\"\n\r\t")
        for item in value
    ):
        reader.problem(
            "listeners.widget_frame_ancestors",
            'must be a list of origins such as ["https://shop.example.com"]',
        )
        return ()
    return tuple(value)


def _port(reader: _Reader, table: Mapping[str, Any], name: str, default: int) -> int:
    return reader.integer(table, "listeners", name, default, low=0, high=65535) or 0


def _store(reader: _Reader, data: Mapping[str, Any], base: Path) -> StoreConfig:
    table = reader.table(data, "", "store")
    reader.unknown(table, "store", _STORE_KEYS)
    kind = reader.choice(table, "store", "kind", STORE_KINDS, "sqlite")
    raw_dir = reader.string(table, "store", "data_dir")
    data_dir = (
        (base / (raw_dir or DEFAULT_DATA_DIR)).resolve()
        if raw_dir or kind in ("sqlite", "valkey")
        else None
    )
    store = StoreConfig(kind, data_dir, _retention_days(reader, table))
    return _cluster(reader, table, store) if kind == "valkey" else store


def _cluster(reader: _Reader, table: Mapping[str, Any], store: StoreConfig) -> StoreConfig:
    """The clustered mode's keys: every node names the same engine and partitions, and a
    node id of its own (two live nodes with one id would share leases)."""
    raw = table.get("addresses", ["127.0.0.1:6379"])
    addresses: list[str] = []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        reader.problem("store.addresses", f"must be a list of host:port, got {_shown(raw)}")
        raw = []
    for address in raw:
        host, _, port = str(address).rpartition(":")
        if not isinstance(address, str) or not host or not port.isdigit() or int(port) > 65535:
            reader.problem("store.addresses", f"must be host:port, got {_shown(address)}")
        else:
            addresses.append(address)
    node_id = reader.string(table, "store", "node_id")
    if node_id is None:
        reader.problem("store.node_id", 'is required when the store kind is "valkey"')
    elif not node_id.replace("-", "").replace("_", "").isalnum() or len(node_id) > 64:
        reader.problem("store.node_id", f"must be letters, digits, - or _, got {node_id!r}")
    partitions = reader.integer(table, "store", "partitions", 64, low=1, high=4096) or 64
    lease = reader.number(table, "store", "lease_seconds", 2.0)
    if not 0.2 <= lease <= 60:
        reader.problem("store.lease_seconds", f"must be between 0.2 and 60, got {lease}")
        lease = 2.0
    durability = reader.choice(table, "store", "durability", CLUSTER_DURABILITY, "aof")
    return attrs.evolve(
        store,
        addresses=tuple(addresses),
        node_id=node_id,
        partitions=partitions,
        lease_seconds=lease,
        durability=durability,
    )


def _retention_days(reader: _Reader, table: Mapping[str, Any]) -> float | None:
    """Optional, so absent means "keep everything"; zero is refused rather than read as
    "delete every quiet conversation at once", which is never what someone meant."""
    if "retention_days" not in table:
        return None
    days = reader.number(table, "store", "retention_days", 0.0)
    if not math.isfinite(days):
        reader.problem("store.retention_days", f"must be a finite number of days, got {days}")
        return None
    return days or None


def _logging(reader: _Reader, data: Mapping[str, Any]) -> LoggingConfig:
    table = reader.table(data, "", "logging")
    reader.unknown(table, "logging", _LOGGING_KEYS)
    return LoggingConfig(
        format=reader.choice(table, "logging", "format", LOG_FORMATS, "text"),
        level=reader.choice(table, "logging", "level", LOG_LEVELS, "info"),
    )


_TOP_KEYS.add("attachments")
_ATTACHMENT_KEYS = {
    "max_bytes",
    "allowed_types",
    "max_per_conversation",
    "max_conversation_bytes",
    "max_total_bytes",
}


def _attachments(reader: _Reader, data: Mapping[str, Any]) -> AttachmentLimits:
    """``[attachments]``: the bounds of the files users and agents send each other."""
    table = reader.table(data, "", "attachments")
    reader.unknown(table, "attachments", _ATTACHMENT_KEYS)
    default = AttachmentLimits()
    types = table.get("allowed_types", list(default.allowed_types))
    if not isinstance(types, list) or not all(
        isinstance(t, str) and well_formed_type(t) for t in types
    ):
        reader.problem(
            "attachments.allowed_types",
            'must be a list of lowercase MIME types such as ["image/png", "application/pdf"]',
        )
        types = list(default.allowed_types)
    number = partial(reader.integer, table, "attachments", low=1)
    return AttachmentLimits(
        max_bytes=number("max_bytes", default.max_bytes) or default.max_bytes,
        allowed_types=tuple(types),
        max_per_conversation=number("max_per_conversation", default.max_per_conversation)
        or default.max_per_conversation,
        max_conversation_bytes=number("max_conversation_bytes", default.max_conversation_bytes)
        or default.max_conversation_bytes,
        max_total_bytes=number("max_total_bytes", default.max_total_bytes)
        or default.max_total_bytes,
    )


def _check_tokens(reader: _Reader, config: Config) -> None:
    """Every token long enough (or a well-formed SHA-256 of one), and no two alike, even when
    one is given in clear and the other hashed."""
    seen: dict[str, str] = {}
    owners = (
        [(f"agents.{a.agent_id}.token", a.token) for a in config.agents.values()]
        + [(f"bots.{b.bot_id}.token", b.token) for b in config.bots.values() if b.token]
        + [(f"admins.{a.admin_id}.token", a.token) for a in config.admins.values()]
    )
    for key, token in owners:
        if not token:
            continue
        problem = token_problem(token)
        if problem is not None:
            reader.problem(key, problem)
            continue
        same = token if is_hashed(token) else hash_token(token)
        if same in seen:
            reader.problem(key, f"is the same token as {seen[same]}")
        else:
            seen[same] = key


# -- building a config --------------------------------------------------------------------


def from_mapping(
    data: Mapping[str, Any],
    *,
    base: Path | None = None,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a parsed TOML document. Relative paths are taken from ``base``; ``environ``
    (default: the process's) holds what ``token_env`` keys name."""
    config, problems = read_mapping(data, base=base, source=source, environ=environ)
    if problems:
        raise ConfigError(problems)
    return config


def read_mapping(
    data: Mapping[str, Any],
    *,
    base: Path | None = None,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> tuple[Config, list[str]]:
    """A parsed TOML document as far as it could be read, and every problem found in it.
    The config is built even when there are problems (a bad value gives way to its default),
    so what is checked elsewhere (each bot's adapter options) can still be checked."""
    reader = _Reader()
    reader.unknown(data, "", _TOP_KEYS)
    bots = _bots(reader, data)
    if "bots" not in data:
        bots = {DEFAULT_BOT: BotConfig(DEFAULT_BOT)}
    agents = _agents(reader, data, list(bots))
    default_bot = reader.string(data, "", "default_bot", next(iter(bots), DEFAULT_BOT))
    if default_bot not in bots and bots:
        reader.problem(
            "default_bot", f"names unknown bot {default_bot!r}; known: {', '.join(bots)}"
        )
    limits_table = reader.table(data, "", "limits")
    config = Config(
        bots=bots,
        agents=agents,
        listeners=_listeners(reader, data),
        limits=_attrs_from_table(reader, limits_table, "limits", Limits, "limits"),
        store=_store(reader, data, base or Path.cwd()),
        logging=_logging(reader, data),
        attachments=_attachments(reader, data),
        secret=reader.string(data, "", "secret"),
        default_bot=default_bot or DEFAULT_BOT,
        source=source,
        admins=_admins(reader, data, os.environ if environ is None else environ),
    )
    _check_tokens(reader, config)
    return config, reader.problems


def embedded_defaults() -> Config:
    """One demo bot and one demo agent, whose token is made up now."""
    agent = AgentConfig(
        DEFAULT_AGENT,
        "Demo Agent",
        secrets.token_urlsafe(32),
        frozenset({DEFAULT_BOT}),
        generated=True,
    )
    return Config(
        bots={DEFAULT_BOT: BotConfig(DEFAULT_BOT)},
        agents={DEFAULT_AGENT: agent},
        store=StoreConfig("sqlite", DEFAULT_DATA_DIR.resolve()),
    )


def load_file(path: Path) -> Config:
    """Read and validate a TOML config file."""
    config, problems = read_file(path)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def read_file(path: Path) -> tuple[Config | None, list[str]]:
    """A TOML config file as far as it could be read, and every problem found in it
    (see :func:`read_mapping`); no config when the file cannot be read as UTF-8 TOML."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [f"{path}: cannot read the config file ({exc.strerror})"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            f"{path}: is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            "cannot be read); a config file must be saved as UTF-8"
        ]
    try:
        # Some editors start UTF-8 files with a byte order mark, which TOML does not expect.
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{path}: not valid TOML: {exc}"]
    return read_mapping(data, base=path.resolve().parent, source=str(path))


# -- overrides ----------------------------------------------------------------------------

ENVIRONMENT = {
    "SWITCHOVER_HOST": "host",
    "SWITCHOVER_WS_PORT": "ws_port",
    "SWITCHOVER_HTTP_PORT": "http_port",
    "SWITCHOVER_PUBLIC_WS_URL": "public_ws_url",
    "SWITCHOVER_WS_IMPL": "ws_impl",
    "SWITCHOVER_DATA_DIR": "data_dir",
    "SWITCHOVER_STORE": "store",
    "SWITCHOVER_SECRET": "secret",
    "SWITCHOVER_LOG_FORMAT": "log_format",
    "SWITCHOVER_LOG_LEVEL": "log_level",
}


def with_overrides(
    config: Config, overrides: Mapping[str, str | int | None], origin: str
) -> Config:
    """Apply overrides named as the values of :data:`ENVIRONMENT` (``None`` or empty values
    are skipped). ``origin`` is "environment" or "flags", for the error messages."""
    problems: list[str] = []

    def named(name: str) -> str:
        if origin == "environment":
            return next(env for env, field in ENVIRONMENT.items() if field == name)
        return f"--{name.replace('_', '-')}"

    def port(name: str, value: str | int) -> int | None:
        try:
            number = int(value)
        except ValueError:
            problems.append(f"{named(name)}: must be a port number, got {value!r}")
            return None
        if not 0 <= number <= 65535:
            problems.append(f"{named(name)}: must be between 0 and 65535, got {number}")
            return None
        return number

    def choice(name: str, value: str, choices: tuple[str, ...]) -> str | None:
        if value.lower() not in choices:
            problems.append(f"{named(name)}: must be one of {', '.join(choices)}, got {value!r}")
            return None
        return value.lower()

    listeners, store, logs = config.listeners, config.store, config.logging
    secret = config.secret
    for name, value in overrides.items():
        if value is None or value == "":
            continue
        text = str(value)
        if bad_text(text):  # bytes that are not UTF-8, decoded with surrogateescape
            problems.append(f"{named(name)}: is not valid UTF-8 text")
            continue
        if name == "host":
            listeners = attrs.evolve(listeners, host=text)
        elif name == "ws_port":
            number = port(name, value)
            listeners = listeners if number is None else attrs.evolve(listeners, ws_port=number)
        elif name == "http_port":
            number = port(name, value)
            listeners = listeners if number is None else attrs.evolve(listeners, http_port=number)
        elif name == "public_ws_url":
            listeners = attrs.evolve(listeners, public_ws_url=text)
        elif name == "ws_impl":
            chosen = choice(name, text, WS_LISTENERS)
            listeners = listeners if chosen is None else attrs.evolve(listeners, websocket=chosen)
        elif name == "data_dir":
            # Naming a data directory means "keep things there" unless memory was asked for.
            kind = "sqlite" if store.data_dir is None else store.kind
            store = attrs.evolve(store, kind=kind, data_dir=Path(text).expanduser().resolve())
        elif name == "store":
            chosen = choice(name, text, STORE_KINDS)
            store = store if chosen is None else attrs.evolve(store, kind=chosen)
        elif name == "secret":
            secret = text
        elif name == "log_format":
            chosen = choice(name, text, LOG_FORMATS)
            logs = logs if chosen is None else attrs.evolve(logs, format=chosen)
        elif name == "log_level":
            chosen = choice(name, text, LOG_LEVELS)
            logs = logs if chosen is None else attrs.evolve(logs, level=chosen)
        else:
            raise KeyError(f"unknown override {name!r}")
    if store.kind == "sqlite" and store.data_dir is None:
        problems.append(f'{named("data_dir")}: is required when the store kind is "sqlite"')
    if problems:
        raise ConfigError(problems)
    return attrs.evolve(config, listeners=listeners, store=store, logging=logs, secret=secret)


def environment_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str | int | None]:
    environ = os.environ if environ is None else environ
    return {field: environ.get(env) for env, field in ENVIRONMENT.items()}


def load(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str | int | None] | None = None,
) -> Config:
    """The effective config: the file (or the embedded defaults), then the environment,
    then command-line ``flags``."""
    config = load_file(path) if path is not None else embedded_defaults()
    config = with_overrides(config, environment_overrides(environ), "environment")
    if flags:
        config = with_overrides(config, flags, "flags")
    return config


# -- the signing secret -------------------------------------------------------------------


def signing_secret(config: Config) -> str:
    """The key that signs users' resume tokens.

    Taken from the config when set; otherwise read from ``data_dir/secret``, which is created
    on first start (see :func:`_kept`), so tokens stay valid across restarts. With no data
    directory, a fresh key per process: nothing else survives a restart either.
    """
    if config.secret:
        return config.secret
    return _kept(config.store.data_dir, SECRET_FILE, secrets.token_urlsafe(32))


def with_kept_demo_tokens(config: Config) -> Config:
    """The config with each generated agent token replaced by the one kept in the data
    directory (``demo-agent-token-<agent id>``, written on first start like the secret), so
    a restart prints the same token and a desk signed in with it stays signed in. With no
    data directory, the generated tokens stay as they are."""
    agents = dict(config.agents)
    for agent in config.generated_agents:
        token = _kept(config.store.data_dir, f"{DEMO_TOKEN_FILE}-{agent.agent_id}", agent.token)
        agents[agent.agent_id] = attrs.evolve(agent, token=token)
    return attrs.evolve(config, agents=agents)


def _kept(data_dir: Path | None, name: str, fresh: str) -> str:
    """The value kept in ``data_dir/name``, or ``fresh``, written there first (readable by
    its owner only). The file is written whole or not at all (a temporary file, flushed to
    disk, then renamed), an empty file counts as absent, and a file others may read is
    logged as a warning. With no data directory, ``fresh``: nothing survives a restart."""
    if data_dir is None:
        return fresh
    path = data_dir / name
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        _warn_if_readable(path)
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, fresh + "\n")
    return fresh


def _write_atomically(path: Path, text: str) -> None:
    """Write ``path`` (mode 0600) so that it holds all of ``text`` or stays as it was, even
    after a power cut: a temporary file beside it, fsync, rename, fsync of the folder."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


#: For other modules that keep a small file in the data directory.
write_atomically = _write_atomically


def _warn_if_readable(path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        if mode & 0o077:
            log.warning(
                "the file %s holds a secret and may be read by other users (mode %o); "
                "run chmod 600 on it",
                path,
                mode & 0o777,
            )
