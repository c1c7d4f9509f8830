"""``switchover gorgias setup``: create (or update) the HTTP integration through which Gorgias
tells Switchover that a ticket changed, and print what else to configure in Gorgias.

The integration (``POST /api/integrations``, ``type: "http"``) calls Switchover's
``POST /v1/livechat/<bot id>/gorgias`` on ``ticket-message-created`` and ``ticket-updated``,
with the platform's ``webhook_token`` in the header ``X-Switchover-Token`` and a JSON body of
ticket fields (:data:`FORM`, rendered by Gorgias's ``{{...}}`` templates). Run again, it
updates the integration of the same name instead of adding a second one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio

from transport.config import load_file
from transport.errors import ConfigError
from transport.livechat.gorgias.connector import GorgiasConnector
from transport.livechat.gorgias.options import GorgiasOptions
from transport.livechat.gorgias.webhook import PATH, TOKEN_HEADER
from transport.livechat.platform import PlatformRefused, PlatformUnavailable

TRIGGERS = ("ticket-message-created", "ticket-updated")
#: The body Gorgias sends (its templates filled in); see transport/livechat/gorgias/webhook.py.
FORM = {
    "ticket_id": "{{ticket.id}}",
    "external_id": "{{ticket.external_id}}",
    "event": "{{event.type}}",
    "status": "{{ticket.status}}",
    "assignee_user_id": "{{ticket.assignee_user_id}}",
    "message_id": "{{message.id}}",
    "from_agent": "{{message.from_agent}}",
    "channel": "{{message.channel}}",
}
MACRO_TEXT = "Let us know if we can do anything else.\n\nLIVECHAT_SESSION_END"


def integration_name(bot_id: str) -> str:
    return f"Switchover livechat ({bot_id})"


def webhook_url(given: str, bot_id: str) -> str:
    """``given`` as is, or, when it names only a server (no path), with the bot's route."""
    parts = urlsplit(given)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--webhook-url must be an http:// or https:// URL, got {given!r}")
    if parts.path in ("", "/"):
        path = PATH.replace("{bot_id}", bot_id)
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return given


def integration(bot_id: str, url: str, token: str) -> dict[str, Any]:
    """The HTTP integration's body for ``POST /api/integrations``."""
    return {
        "name": integration_name(bot_id),
        "type": "http",
        "description": "Tells Switchover when a livechat ticket changes.",
        "http": {
            "url": url,
            "method": "POST",
            "request_content_type": "application/json",
            "response_content_type": "application/json",
            "headers": {TOKEN_HEADER: token},
            "form": dict(FORM),
            "triggers": {trigger: True for trigger in TRIGGERS},
        },
    }


async def create_integration(
    connector: GorgiasConnector, bot_id: str, url: str
) -> tuple[Mapping[str, Any], bool]:
    """Create the bot's integration, or update the one of the same name. Returns it, and
    whether it is new."""
    body = integration(bot_id, url, connector.options.webhook_token)
    page = await connector.request("GET", "/api/integrations", params={"type": "http"})
    existing = page.get("data") if isinstance(page, Mapping) else None
    for found in existing or []:
        if isinstance(found, Mapping) and found.get("name") == body["name"]:
            updated = await connector.request("PUT", f"/api/integrations/{found['id']}", body=body)
            return (updated if isinstance(updated, Mapping) else found), False
    created = await connector.request("POST", "/api/integrations", body=body)
    return (created if isinstance(created, Mapping) else {}), True


def instructions(
    bot_id: str, options: GorgiasOptions, made: Mapping[str, Any], new: bool, url: str
) -> str:
    done = "Created" if new else "Updated"
    name = integration_name(bot_id)
    return f"""{done} the Gorgias HTTP integration {name!r} (id {made.get("id")}):
  POST {url}
  header {TOKEN_HEADER}: the webhook_token of [bots.{bot_id}.livechat.options]
  triggers: {", ".join(TRIGGERS)}

Still to do in Gorgias ({options.base_url}):
  1. Make sure Gorgias can reach {url} (a public https:// address).
  2. Create a macro (Settings > Macros) that ends the livechat session, its text ending
     with LIVECHAT_SESSION_END, for example:

{_indent(MACRO_TEXT, 8)}

     The user sees the text before the token and is offered the end button.
  3. Tickets arrive on the API channel, one per livechat session, with the session id as
     their external id: a view filtered on channel "api" lists them. Assigning a ticket
     joins the session; closing it ends the session (reason ticket_closed); internal notes
     stay in Gorgias.
"""


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else "" for line in text.splitlines())


# -- the command ----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``gorgias setup`` to the ``switchover`` command."""
    gorgias = subparsers.add_parser(
        "gorgias",
        help="set up a bot's Gorgias account",
        description="Commands for bots whose livechat platform is Gorgias.",
    )
    commands = gorgias.add_subparsers(dest="gorgias_command", metavar="COMMAND")
    setup = commands.add_parser(
        "setup",
        help="create the HTTP integration that tells Switchover about ticket changes",
        description=(
            "Create (or update) the Gorgias HTTP integration that calls Switchover's "
            "/v1/livechat/<bot>/gorgias, then print what else to configure in Gorgias."
        ),
    )
    setup.add_argument("--config", type=Path, required=True, help="the TOML config file")
    setup.add_argument("--bot", required=True, help="the bot whose livechat kind is gorgias")
    setup.add_argument(
        "--webhook-url",
        required=True,
        metavar="URL",
        help="Switchover's public address, or the full URL of /v1/livechat/<bot>/gorgias",
    )
    setup.set_defaults(handler=setup_command)
    gorgias.set_defaults(handler=lambda args: (gorgias.print_help(), 2)[1])


def setup_command(args: argparse.Namespace) -> int:
    try:
        config = load_file(args.config)
        bot = config.bots.get(args.bot)
        if bot is None or bot.livechat.kind != "gorgias":
            known = [b for b, c in config.bots.items() if c.livechat.kind == "gorgias"]
            raise ConfigError(
                [
                    f"bots.{args.bot}.livechat.kind: must be gorgias for this command"
                    f" (bots with Gorgias: {', '.join(known) or 'none'})"
                ]
            )
        options = GorgiasOptions.read(args.bot, bot.livechat.options)
        url = webhook_url(args.webhook_url, args.bot)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"switchover gorgias setup: {exc}", file=sys.stderr)
        return 2
    try:
        made, new = trio.run(_setup, options, args.bot, url)
    except (PlatformRefused, PlatformUnavailable) as exc:
        print(f"switchover gorgias setup: Gorgias did not take it: {exc}", file=sys.stderr)
        return 1
    print(instructions(args.bot, options, made, new, url), end="")
    return 0


async def _setup(options: GorgiasOptions, bot_id: str, url: str) -> tuple[Mapping[str, Any], bool]:
    async with httpx.AsyncClient() as http:
        return await create_integration(GorgiasConnector(options, http), bot_id, url)
