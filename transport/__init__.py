"""Switchover's transports: everything that talks to the outside world.

WebSocket and HTTP listeners, bot adapters, the SQLite store, the CLI and the web pages.
Everything here depends on :mod:`actors`; nothing in :mod:`actors` depends on this package.
"""
