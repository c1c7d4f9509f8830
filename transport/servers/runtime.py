"""Running the whole server: store, core, WebSocket and HTTP listeners, and a clean stop.

The parts nest so that each outlives what depends on it: the store outlives the switchboard
(its last writes commit before it closes), the switchboard outlives the listeners (in-flight
messages get their answers), and the listeners stop first on shutdown. A shutdown (SIGINT,
SIGTERM, or :meth:`RunningServer.stop`) marks the server as stopping in ``/healthz``, stops
the WebSocket listener (which tells its clients "going away", close code 1001) and the HTTP
listener, gives them ``listeners.shutdown_timeout`` seconds to finish, then stops the core.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
import httpx
import trio

from actors import BotBinding, BotSettings, Desk, MemoryStore, Store, Switchboard
from actors.trio.collector import raise_thresholds, tune_collector
from transport.bots import build_bot
from transport.bots.connections import BotConnections
from transport.bots.resilience import make_http_client
from transport.config import Config, ListenerConfig, signing_secret
from transport.errors import ConfigError
from transport.livechat.backends import Backends, build_backends
from transport.livechat.desk import build_desk
from transport.livechat.settings import BotSettingsBook
from transport.protocol.services import Services
from transport.servers.http.app import HttpApp
from transport.servers.http.attachments import Attachments
from transport.servers.http.serve import serve_http
from transport.servers.websocket import serve_websockets
from transport.store import sqlite as sqlite_store
from transport.store.attachments import FOLDER as attachments_folder
from transport.store.attachments import AttachmentKeeper, AttachmentStore
from transport.store.retention import keep_pruning
from transport.version import version

log = logging.getLogger("switchover.runtime")


class ListenError(Exception):
    """A listener could not bind its address (in use, not permitted, no such address)."""

    def __init__(self, what: str, host: str, port: int, cause: OSError) -> None:
        self.port = port
        reason = cause.strerror or str(cause)
        super().__init__(f"the {what} listener cannot use {_url_host(host)}:{port}: {reason}")

    @classmethod
    def within(cls, exc: Exception, what: str, host: str, port: int) -> ListenError | None:
        """A ListenError for the first OSError in ``exc`` (servers may raise it inside an
        exception group), or ``None`` when there is none."""
        found: BaseException = exc
        while isinstance(found, BaseExceptionGroup) and found.exceptions:
            found = found.exceptions[0]
        return cls(what, host, port, found) if isinstance(found, OSError) else None


@attrs.define
class RunningServer:
    """What :func:`run_server` reports once both listeners are bound."""

    host: str
    ws_port: int
    http_port: int
    services: Services
    app: HttpApp
    shutdown: trio.Event

    @property
    def ws_url(self) -> str:
        return f"ws://{_url_host(self.host)}:{self.ws_port}/"

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.http_port}"

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        self.shutdown.set()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def build_bindings(
    config: Config,
    http: httpx.AsyncClient | None = None,
    connections: BotConnections | None = None,
) -> dict[str, BotBinding]:
    """Every configured bot, built by its adapter (remote ones share ``http``; connected ones
    are reached through ``connections``, which must be the registry the WebSocket server
    uses: without one, a private registry serves for checking the config only). Raises
    :class:`ConfigError` listing every bot's problems."""
    connections = connections if connections is not None else BotConnections()
    bindings = {}
    problems = []
    for bot_id, bot in config.bots.items():
        try:
            built = build_bot(bot_id, bot.adapter, bot.options, http=http, connections=connections)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        bindings[bot_id] = BotBinding(built, bot.settings, bot.backend)
    if problems:
        raise ConfigError(problems)
    return bindings


def open_store(config: Config) -> AbstractAsyncContextManager[Store]:
    """The SQLite store in ``data_dir`` when asked for, the clustered store on Valkey
    (docs/cluster.md), else memory."""
    if config.store.kind == "valkey":
        # Imported here: the Valkey client is needed only in the clustered mode.
        from transport.cluster.store import open_valkey_store

        store = config.store
        return open_valkey_store(
            store.addresses,
            store.node_id or "",
            partitions=store.partitions,
            lease_seconds=store.lease_seconds,
            durability=store.durability,
            settings={k: b.settings for k, b in config.bots.items()},
        )
    if config.store.kind == "sqlite" and config.store.data_dir is not None:
        config.store.data_dir.mkdir(parents=True, exist_ok=True)
        return sqlite_store.open_sqlite_store(
            sqlite_store.database_path(config.store.data_dir),
            settings={k: b.settings for k, b in config.bots.items()},
        )
    return _memory_store()


@asynccontextmanager
async def _memory_store() -> AsyncIterator[Store]:
    yield MemoryStore()


def attachment_store(config: Config) -> AttachmentStore:
    """Attachments beside the SQLite store (``<data_dir>/attachments``), so they outlive a
    restart as their conversations do; with the memory store, in a temporary folder removed
    when the server stops (:meth:`AttachmentStore.close`)."""
    if config.store.kind == "sqlite" and config.store.data_dir is not None:
        return AttachmentStore(config.store.data_dir / attachments_folder)
    return AttachmentStore(Path(tempfile.mkdtemp(prefix="switchover-attachments-")), temporary=True)


@runtime_checkable
class PresenceHistory(Protocol):
    """A store that gives back each agent's last recorded presence (the SQLite store does;
    the memory store keeps none)."""

    async def last_presences(self) -> dict[str, tuple[str, float]]: ...


async def restore_presences(desk: Desk, store: Store) -> None:
    """Agents come back as they left: online, away or offline, as they last set it."""
    if not isinstance(store, PresenceHistory):
        return
    kept = await store.last_presences()
    restored = desk.restore_presences({agent: p for agent, (p, _) in kept.items()})
    if restored:
        log.info("restored the presence of %d agents", restored)


async def _serve_websockets(
    services: Services, listen: ListenerConfig, *, task_status: trio.TaskStatus[int]
) -> None:
    await serve_websockets(
        services,
        listen.host,
        listen.ws_port,
        listener=listen.websocket,
        shutdown_timeout=listen.shutdown_timeout,
        task_status=task_status,
    )


async def _on_signals(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            shutdown.set()
            return


async def run_server(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    handle_signals: bool | None = None,
    prune_every: float = 3600.0,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a shutdown is asked for, then stop gracefully and return.

    ``handle_signals``: stop on SIGINT/SIGTERM (by default when running in the main thread,
    where signals can be received). ``shutdown``: an event that also stops the server.
    ``prune_every``: seconds between retention rounds when ``store.retention_days`` is set.
    """
    shutdown = shutdown or trio.Event()
    # Settings changed by administrators (kept in the data directory) win over the file's.
    book = BotSettingsBook.for_config(config)
    config = book.applied_to(config)
    if handle_signals is None:
        handle_signals = threading.current_thread() is threading.main_thread()
    http = make_http_client()
    connections = BotConnections()
    bindings = build_bindings(config, http, connections)
    desk = _cluster_desk(config) if config.store.kind == "valkey" else build_desk(config)
    data_dir = config.store.data_dir if config.store.kind == "sqlite" else None
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    backends = build_backends(config, desk, http, data_dir)
    files = attachment_store(config)
    listen = config.listeners
    try:
        await _serve(
            config,
            _Parts(bindings, desk, backends, connections, prune_every, book, files),
            shutdown,
            handle_signals,
            task_status,
        )
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(listen.shutdown_timeout):
            for binding in bindings.values():
                close = getattr(binding.bot, "aclose", None)
                if close is not None:
                    await close()
            await http.aclose()
        files.close()
    log.info("stopped")


@attrs.frozen
class _Parts:
    """What :func:`run_server` builds before the store opens, for :func:`_serve`."""

    bindings: Mapping[str, BotBinding]
    desk: Desk
    backends: Backends
    connections: BotConnections
    prune_every: float
    bot_settings: BotSettingsBook
    files: AttachmentStore


def _attachments_of(store: Store, files: AttachmentStore) -> AttachmentKeeper:
    """The clustered store keeps attachments in the engine, so every node serves them
    (docs/cluster.md); the others beside their data, in ``files``."""
    in_engine = getattr(store, "attachments", None)
    return in_engine() if in_engine is not None else files


def _start_retention(
    config: Config, store: Store, nursery: trio.Nursery, every: float, files: AttachmentStore
) -> None:
    """Prune old conversations for as long as the server runs, when asked to and possible;
    each round also deletes the attachments of the conversations it deleted."""
    days = config.store.retention_days
    if days is None:
        return
    if not isinstance(store, sqlite_store.SQLiteStore):
        log.warning("store.retention_days is ignored: this store cannot prune")
        return
    log.info("retention: deleting conversations quiet for %g days", days)

    async def sweep() -> None:
        await files.sweep(store)

    nursery.start_soon(partial(keep_pruning, store, days, every=every, after=sweep))


async def _serve(
    config: Config,
    parts: _Parts,
    shutdown: trio.Event,
    handle_signals: bool,
    task_status: trio.TaskStatus[RunningServer],
) -> None:
    listen = config.listeners
    desk, connections = parts.desk, parts.connections
    raise_thresholds()
    async with open_store(config) as store, trio.open_nursery() as core:
        await restore_presences(desk, store)
        # The clustered store routes conversations owned by other nodes (docs/cluster.md).
        make_board = getattr(store, "switchboard", Switchboard)
        board = make_board(
            parts.bindings,
            parts.backends.by_name,
            store,
            hibernate_after=config.limits.hibernate_after,
            limits=config.limits.for_conversations(),
            new_id=getattr(store, "new_conversation_id", None),
        )
        bind = getattr(desk, "bind", None)  # the cluster's desk runs on one node at a time
        if bind is not None:
            bind(store)
        await core.start(board.run)
        follow = getattr(store, "follow", None)  # the clustered store: partitions taken over
        if follow is not None:
            core.start_soon(follow, board)
        # Open sessions are restored: freeze what start-up built and space out collections,
        # so a crowd of expiries is not stalled by a full collection (actors/trio/collector.py).
        tune_collector()
        _start_retention(config, store, core, parts.prune_every, parts.files)
        parts.bot_settings.on_change = partial(_settings_changed, board, store)
        await _share_settings(store, parts.bot_settings, core)
        services = Services(
            board=board,
            desk=desk,
            secret=signing_secret(config),
            agent_tokens={a.token: a.agent_id for a in config.agents.values()},
            bot_tokens={b.token: b.bot_id for b in config.bots.values() if b.token},
            limits=config.limits,
            default_bot=config.default_bot,
            bot_connections=connections,
        )
        app = HttpApp(
            services,
            public_ws_url=listen.public_ws_url,
            ws_host=listen.host,
            widget_frame_ancestors=listen.widget_frame_ancestors,
            backends=parts.backends,
            bot_settings=parts.bot_settings,
            admins={a.token: (a.admin_id, a.name) for a in config.admins.values()},
            attachments=Attachments(_attachments_of(store, parts.files), config.attachments),
        )
        _watch_cluster(config, store, app)
        if handle_signals:
            core.start_soon(_on_signals, shutdown)
        http_stop = trio.Event()
        async with trio.open_nursery() as listeners:
            ws_scope = trio.CancelScope()
            try:
                ws_port: int = await listeners.start(_cancellable, ws_scope, services, listen)
            except (OSError, ExceptionGroup) as exc:
                error = ListenError.within(exc, "WebSocket", listen.host, listen.ws_port)
                if error is None:
                    raise
                raise error from exc
            app.ws_port = ws_port
            try:
                http_port: int = await listeners.start(
                    _http, app, listen, http_stop, listen.shutdown_timeout
                )
            except (OSError, ExceptionGroup) as exc:
                error = ListenError.within(exc, "HTTP", listen.host, listen.http_port)
                if error is None:
                    raise
                raise error from exc
            running = RunningServer(listen.host, ws_port, http_port, services, app, shutdown)
            # Agents can connect from now on: the grace periods of the chats they held before
            # a restart start now, however long the start-up took.
            desk.ready()
            log.info(
                "Switchover %s serving %s at %s and %s",
                version(),
                ", ".join(config.bots),
                running.ws_url,
                running.http_url,
                extra={"ws_port": ws_port, "http_port": http_port, "store": config.store.kind},
            )
            task_status.started(running)
            await shutdown.wait()
            log.info("shutting down: closing listeners")
            app.stopping = True
            ws_scope.cancel()
            http_stop.set()
            # Whatever the listeners still do after this bound is cut short.
            listeners.cancel_scope.deadline = trio.current_time() + listen.shutdown_timeout
        # Conversations finish what they hold and return; whatever is left is cancelled.
        with trio.move_on_after(listen.shutdown_timeout):
            await board.stop_conversations()
        core.cancel_scope.cancel()


async def _share_settings(store: Store, book: BotSettingsBook, nursery: trio.Nursery) -> None:
    """In the clustered mode, administrators' changes live in the engine: this node starts
    under those already made and takes up each one made on any node (docs/cluster.md)."""
    shared = getattr(store, "shared_settings", None)
    if shared is None:
        return
    settings = shared()
    book.keep = settings.keep
    await nursery.start(settings.follow, book.take)


def _settings_changed(board: Switchboard, store: Store, bot_id: str, settings: BotSettings) -> None:
    """An administrator changed a bot's settings: the core serves it under them from now on
    (open sessions from their next deadline), and the store words deadlines with them."""
    board.replace_settings(bot_id, settings)
    if isinstance(store, sqlite_store.SQLiteStore):
        store.settings[bot_id] = settings
    settings_changed = getattr(store, "settings_changed", None)  # the clustered store
    if settings_changed is not None:
        settings_changed(bot_id, settings)


def _cluster_desk(config: Config) -> Desk:
    """In the clustered mode, the desk every node shares (docs/cluster.md, The desk)."""
    from transport.cluster.desk import ClusterDesk

    plain = build_desk(config)
    return ClusterDesk(
        plain.settings,
        plain.profiles.values(),
        node_id=config.store.node_id or "",
        lease_seconds=config.store.lease_seconds,
        transcript_tail=plain.transcript_tail,
    )


def _watch_cluster(config: Config, store: Store, app: HttpApp) -> None:
    """In the clustered mode, this node's partitions and leases in /healthz and /metrics."""
    if config.store.kind != "valkey":
        return
    from transport.cluster.metrics import ClusterMetrics
    from transport.cluster.store import ValkeyStore

    if isinstance(store, ValkeyStore):
        app.registry.register(ClusterMetrics(store))
        app.health.append(store.health)


async def _cancellable(
    scope: trio.CancelScope,
    services: Services,
    listen: ListenerConfig,
    *,
    task_status: trio.TaskStatus[int],
) -> None:
    """The WebSocket listener, inside ``scope`` so a shutdown can stop it alone."""
    with scope:
        await _serve_websockets(services, listen, task_status=task_status)


async def _http(
    app: HttpApp,
    listen: ListenerConfig,
    stop: trio.Event,
    graceful: float,
    *,
    task_status: trio.TaskStatus[int],
) -> None:
    await serve_http(
        app,
        listen.host,
        listen.http_port,
        stop,
        graceful_timeout=graceful,
        task_status=task_status,
    )
