"""The ``switchover`` command: ``serve`` runs the server, ``check`` validates a config,
``gorgias setup`` and ``chatwoot setup`` connect a bot to a Gorgias account or a Chatwoot
inbox.

Flags override environment variables, which override the config file, which overrides the
embedded defaults (see :mod:`transport.config`). Other modules add subcommands through a
``register(subparsers)`` function (the store's maintenance commands do); each subcommand sets
``handler`` (or ``func``) to a function taking the parsed arguments and returning the exit
status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from actors import StoreUnavailable
from transport.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_WS_PORT,
    ENVIRONMENT,
    WS_LISTENERS,
    Config,
    load,
    load_file,
    read_file,
    with_kept_demo_tokens,
    with_overrides,
)
from transport.errors import ConfigError
from transport.livechat.chatwoot import setup as chatwoot_setup
from transport.livechat.gorgias import setup as gorgias_setup
from transport.logs import LOG_FORMATS, configure_logging
from transport.servers.runtime import ListenError
from transport.store import commands as store_commands
from transport.version import version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchover",
        description=(
            "Switchover routes a chat conversation between a chatbot and human agents, "
            "with CSML-style livechat sessions."
        ),
        epilog="Environment variables: " + ", ".join(ENVIRONMENT) + ".",
    )
    parser.add_argument("--version", action="version", version=f"switchover {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = subparsers.add_parser(
        "serve",
        help="run the server (WebSocket and HTTP listeners)",
        description="Run Switchover. Without --config: the demo bot and one demo agent.",
    )
    serve.add_argument("--config", type=Path, help="a TOML config file")
    serve.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument(
        "--ws-port",
        type=int,
        help=f"WebSocket port, 0 for any free one (default {DEFAULT_WS_PORT})",
    )
    serve.add_argument(
        "--ws-impl",
        choices=WS_LISTENERS,
        help=f"WebSocket listener implementation (default {WS_LISTENERS[0]})",
    )
    serve.add_argument(
        "--http-port", type=int, help=f"HTTP port, 0 for any free one (default {DEFAULT_HTTP_PORT})"
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        help="keep conversations (SQLite) and the signing key here (default ./data)",
    )
    serve.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text (default) or json: one object a line"
    )
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(handler=serve_command)

    check = subparsers.add_parser(
        "check",
        help="validate a config file",
        description="Validate a config file and list every problem found; exit 1 if any.",
    )
    check.add_argument("--config", type=Path, required=True, help="the TOML config file")
    check.set_defaults(handler=check_command)

    store_commands.register(subparsers, data_dir_of)
    gorgias_setup.register(subparsers)
    chatwoot_setup.register(subparsers)
    return parser


def data_dir_of(args: argparse.Namespace) -> Path:
    """The data directory a maintenance command works on: ``--data-dir``, else
    ``$SWITCHOVER_DATA_DIR``, else the one ``--config`` names, else where ``switchover serve``
    keeps it when told nothing."""
    data_dir: Path | None = args.data_dir
    if data_dir is None and os.environ.get("SWITCHOVER_DATA_DIR"):
        data_dir = Path(os.environ["SWITCHOVER_DATA_DIR"])
    if data_dir is None and args.config is not None:
        data_dir = load_file(args.config).store.data_dir
    return data_dir if data_dir is not None else DEFAULT_DATA_DIR


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None) or getattr(
        args, "func", None
    )
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


# -- check ---------------------------------------------------------------------------------


def check_command(args: argparse.Namespace) -> int:
    path: Path = args.config
    # Every problem at once: the file's own, and what each bot's adapter and livechat
    # platform find in their options, even when the file has problems of its own.
    config, problems = read_file(path)
    if config is not None:
        problems.extend(option_problems(config))
    if problems or config is None:
        _print_problems(path, ConfigError(problems), sys.stderr)
        return 1
    print(f"{path}: OK ({_count(len(config.bots), 'bot')}, {_count(len(config.agents), 'agent')})")
    return 0


def option_problems(config: Config) -> list[str]:
    """What each bot's adapter and livechat platform find wrong in their options (the
    config file itself cannot know them)."""
    from transport.livechat.backends import check_platforms
    from transport.servers.runtime import build_bindings

    problems: list[str] = []
    for check in (build_bindings, check_platforms):
        try:
            check(config)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _print_problems(source: object, exc: ConfigError, stream: TextIO) -> None:
    problems = exc.problems
    print(f"{source}: {_count(len(problems), 'problem')}:", file=stream)
    for problem in problems:
        print(f"  - {problem}", file=stream)


# -- serve ---------------------------------------------------------------------------------


def serve_command(args: argparse.Namespace) -> int:
    flags: dict[str, str | int | None] = {
        "host": args.host,
        "ws_port": args.ws_port,
        "ws_impl": args.ws_impl,
        "http_port": args.http_port,
        "data_dir": str(args.data_dir) if args.data_dir is not None else None,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }
    source = args.config or "the configuration"
    try:
        config = load(args.config)
        config = with_overrides(config, flags, "flags")
    except ConfigError as exc:
        problems = exc.problems
        if args.config is not None:
            # As ``check`` does: the options' problems too, not only the first kind found.
            partial, _ = read_file(args.config)
            if partial is not None:
                problems = [*problems, *option_problems(partial)]
        _print_problems(source, ConfigError(problems), sys.stderr)
        return 1
    problems = option_problems(config)
    if problems:
        _print_problems(source, ConfigError(problems), sys.stderr)
        return 1
    configure_logging(config.logging.format, config.logging.level)
    try:
        trio.run(_serve_and_announce, config)
    except ConfigError as exc:
        _print_problems(source, exc, sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        cause = _first(group)
        if isinstance(cause, OSError | ConfigError | StoreUnavailable | ListenError):
            print(f"switchover: cannot start: {cause}", file=sys.stderr)
            return 1
        raise
    except (OSError, StoreUnavailable, ListenError) as exc:
        print(f"switchover: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _serve_and_announce(config: Config) -> None:
    from transport.servers.runtime import run_server

    # The same demo token after a restart: a desk signed in with it stays signed in.
    config = with_kept_demo_tokens(config)
    for agent in config.generated_agents:
        print(
            f"Demo agent token (agent {agent.agent_id!r}, bots {', '.join(sorted(agent.bots))}): "
            f"{agent.token}",
            flush=True,
        )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_server, config)
        print(
            f"Switchover {version()} ready: WebSocket {server.ws_url}  HTTP {server.http_url}  "
            f"(agent desk {server.http_url}/desk, chat widget {server.http_url}/widget)",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
