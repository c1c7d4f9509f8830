"""``switchover chatwoot setup``: the API-channel inbox a bot's sessions go to.

With an administrator's access token (``--admin-token-env NAME``), it creates the inbox
(``POST /api/v1/accounts/<account>/inboxes`` with ``{"name", "channel": {"type": "api",
"webhook_url"}}``); with ``--inbox-id N`` it uses an inbox made by hand. Either way it prints
the ``[bots.<id>.livechat]`` table to paste, the environment variables to set, and the canned
response agents sign off with. The webhook URL carries a ``token`` (a URL token), so
installations that sign nothing are covered; the inbox's signing secret is added when
Chatwoot shows it (4.13 and later, to administrators).

It reads ``base_url`` and ``account_id`` from the bot's ``[bots.<id>.livechat.options]``, or
from ``--base-url`` and ``--account-id``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from transport.config import load_file
from transport.errors import ConfigError
from transport.livechat.chatwoot.webhook import PATH as WEBHOOK_PATH

SIGN_OFF = "Let us know if we can do anything else.\n\nLIVECHAT_SESSION_END"


class SetupFailed(Exception):
    """Setting up cannot go on; the message says why and what to do."""


def register(subparsers: Any) -> None:
    """Add ``switchover chatwoot setup``."""
    chatwoot = subparsers.add_parser(
        "chatwoot",
        help="connect a bot's livechat to a Chatwoot inbox",
        description="Chatwoot commands.",
    )
    commands = chatwoot.add_subparsers(dest="chatwoot_command", metavar="COMMAND")
    setup = commands.add_parser(
        "setup",
        help="create (or take) the API inbox and print the config to paste",
        description=(
            "Create a Chatwoot API-channel inbox for a bot (with an administrator's access "
            "token), or take an existing one, and print the [bots.<id>.livechat] table, the "
            "environment variables and the sign-off canned response. base_url and account_id "
            "come from the bot's [bots.<id>.livechat.options]."
        ),
    )
    setup.add_argument("--config", type=Path, required=True, help="the TOML config file")
    setup.add_argument("--bot", required=True, help="the bot whose sessions go to Chatwoot")
    source = setup.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--admin-token-env",
        metavar="NAME",
        help="the environment variable holding an administrator's access token: create the inbox",
    )
    source.add_argument("--inbox-id", type=int, metavar="N", help="use this existing API inbox")
    setup.add_argument(
        "--webhook-url",
        required=True,
        metavar="URL",
        help=(
            "where Chatwoot reaches Switchover: its public base URL, or the whole "
            "/v1/livechat/<bot>/chatwoot URL"
        ),
    )
    setup.add_argument("--inbox-name", help="the new inbox's name (default: Switchover <bot>)")
    setup.add_argument("--base-url", help="Chatwoot's URL, when the config has no base_url yet")
    setup.add_argument(
        "--account-id", type=int, help="the Chatwoot account, when the config has no account_id"
    )
    setup.set_defaults(handler=setup_command)


def setup_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    try:
        config = load_file(args.config)
        bot = config.bots.get(args.bot)
        if bot is None:
            known = ", ".join(config.bots) or "none"
            raise SetupFailed(f"{args.config} has no bot {args.bot!r} (bots: {known})")
        options = bot.livechat.options
        given = {"base_url": args.base_url, "account_id": args.account_id}
        base_url, account_id = _account(
            args.bot, {**options, **{k: v for k, v in given.items() if v is not None}}
        )
        url_token = _url_token(options)
        hook = webhook_url(args.webhook_url, args.bot, url_token)
        secret: str | None = None
        if args.admin_token_env is not None:
            token = os.environ.get(args.admin_token_env)
            if not token:
                raise SetupFailed(f"the environment variable {args.admin_token_env} is not set")
            name = args.inbox_name or f"Switchover {args.bot}"
            inbox = create_inbox(base_url, account_id, token, name, hook)
            inbox_id = inbox["id"]
            found = inbox.get("secret")
            secret = found if isinstance(found, str) and found else None
        else:
            inbox_id = args.inbox_id
            if inbox_id < 1:
                raise SetupFailed("--inbox-id must be a whole number of at least 1")
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except SetupFailed as exc:
        print(f"switchover chatwoot setup: {exc}", file=sys.stderr)
        return 1
    created = args.admin_token_env is not None
    out.write(
        instructions(args.bot, base_url, account_id, inbox_id, hook, url_token, secret, created)
    )
    return 0


def _account(bot_id: str, options: Mapping[str, Any]) -> tuple[str, int]:
    where = f"[bots.{bot_id}.livechat.options]"
    base_url, account_id = options.get("base_url"), options.get("account_id")
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise SetupFailed(f"give --base-url or set base_url in {where} (Chatwoot's https:// URL)")
    if isinstance(account_id, bool) or not isinstance(account_id, int) or account_id < 1:
        raise SetupFailed(
            f"give --account-id or set account_id in {where} (the number after /accounts/ "
            "in Chatwoot's URLs)"
        )
    assert isinstance(base_url, str)
    return base_url.rstrip("/"), account_id


def _url_token(options: Mapping[str, Any]) -> str:
    """The URL token the config already has, else a new one."""
    given = options.get("url_token")
    if isinstance(given, str) and given:
        return given
    named = options.get("url_token_env")
    if isinstance(named, str) and os.environ.get(named):
        return os.environ[named]
    return secrets.token_urlsafe(24)


def webhook_url(given: str, bot_id: str, url_token: str) -> str:
    """The URL Chatwoot posts to: ``given`` (a base URL gets the route's path) with the
    URL token as its ``token`` parameter."""
    parts = urlsplit(given)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SetupFailed(f"--webhook-url must be an http:// or https:// URL, got {given!r}")
    path = parts.path
    if path in ("", "/"):
        path = WEBHOOK_PATH.format(bot_id=bot_id)
    query = "&".join(p for p in (parts.query, urlencode({"token": url_token})) if p)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def create_inbox(
    base_url: str, account_id: int, token: str, name: str, hook: str
) -> Mapping[str, Any]:
    """Create the API inbox; Chatwoot's answer (``id``, and ``secret`` when it signs)."""
    url = f"{base_url}/api/v1/accounts/{account_id}/inboxes"
    body = {"name": name, "channel": {"type": "api", "webhook_url": hook}}
    try:
        response = httpx.post(url, json=body, headers={"api_access_token": token}, timeout=30.0)
    except httpx.HTTPError as exc:
        raise SetupFailed(f"cannot reach Chatwoot at {base_url}: {exc}") from None
    if response.status_code == 401:
        raise SetupFailed(
            "Chatwoot refused the token (401): creating an inbox takes an administrator's "
            "access token of this account"
        )
    if response.status_code == 404:
        raise SetupFailed(f"Chatwoot has no account {account_id} at {base_url} (404)")
    if not 200 <= response.status_code < 300:
        raise SetupFailed(f"Chatwoot answered HTTP {response.status_code}: {response.text[:300]!r}")
    try:
        inbox = response.json()
    except ValueError:
        raise SetupFailed("Chatwoot's answer is not JSON") from None
    if not isinstance(inbox, Mapping) or not isinstance(inbox.get("id"), int):
        raise SetupFailed("Chatwoot's answer names no inbox id")
    return inbox


def env_name(bot_id: str, what: str) -> str:
    """An environment variable's name for one of a bot's Chatwoot secrets."""
    return re.sub(r"[^A-Z0-9]+", "_", f"{bot_id}_CHATWOOT_{what}".upper()).strip("_")


def instructions(
    bot_id: str,
    base_url: str,
    account_id: int,
    inbox_id: int,
    hook: str,
    url_token: str,
    secret: str | None,
    created: bool,
) -> str:
    api_env = env_name(bot_id, "API_TOKEN")
    token_env = env_name(bot_id, "URL_TOKEN")
    secret_env = env_name(bot_id, "WEBHOOK_SECRET")
    table = [
        f"[bots.{bot_id}.livechat]",
        'kind = "chatwoot"',
        "",
        f"[bots.{bot_id}.livechat.options]",
        f"base_url = {json.dumps(base_url)}",
        f"account_id = {account_id}",
        f"inbox_id = {inbox_id}",
        f"api_token_env = {json.dumps(api_env)}",
        f"url_token_env = {json.dumps(token_env)}",
    ]
    if secret is not None:
        table.append(f"webhook_secret_env = {json.dumps(secret_env)}")
    table.append('on_resolve = "end"')
    env = [f"{token_env}={url_token}"]
    if secret is not None:
        env.append(f"{secret_env}={secret}")
    env.append(f"{api_env}=<the access token of the agent Switchover posts as>")
    lines = [
        f"Chatwoot inbox {inbox_id} {'was created' if created else 'is used'} for bot {bot_id!r}.",
        "",
        "1. Put this in the config (in place of any other [bots.<id>.livechat] table):",
        "",
        *table,
        "",
        "2. Set these environment variables where Switchover runs (keep them secret):",
        "",
        *(f"   {line}" for line in env),
        "",
        "   The access token is in Chatwoot under Profile settings; an agent who belongs to",
        "   the inbox will do (an agent bot's token too).",
        "",
    ]
    step = 3
    if not created:
        lines += [
            f"{step}. In Chatwoot, set inbox {inbox_id}'s webhook URL (Settings, Inboxes, the",
            "   inbox, Configuration) to:",
            "",
            f"   {hook}",
            "",
            "   If the inbox shows a webhook secret (Chatwoot 4.13 and later), add",
            f"   webhook_secret_env = {json.dumps(secret_env)} to the options",
            f"   and set {secret_env} to it.",
            "",
        ]
        step += 1
    lines += [
        f"{step}. Create the canned response agents sign off with (Settings, Canned responses),",
        "   short code signoff, content (it must end with LIVECHAT_SESSION_END):",
        "",
        *(f"   {line}" if line else "" for line in SIGN_OFF.split("\n")),
        "",
        "   An agent who sends it (/signoff) offers the user the end button.",
        "",
        f"{step + 1}. Add the agents who answer as the inbox's collaborators, then check the",
        "   config with: switchover check --config <file>",
        "",
    ]
    return "\n".join(lines)
