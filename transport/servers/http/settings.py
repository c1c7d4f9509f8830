"""The administrators' settings API and page: each bot's livechat settings, read and changed
at run time (docs/admin.md).

Every ``/api/bots`` request carries an administrator's token (``Authorization: Bearer``,
``[admins.<id>]`` in the config): none or an unknown one is answered 401 (and counts
against the address like any failed authentication), an agent's or a bot's token 403.
Values are checked by the config reader's own code, so a value the config file would refuse
is answered 422 with the same words, each problem under its dotted key and its field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors import BotSettings
from transport import strict
from transport.config import bot_settings_key
from transport.errors import ConfigError
from transport.livechat.settings import UnknownBot
from transport.protocol.credentials import find_token
from transport.servers.http.errors import error_response
from transport.signing import bearer_token

if TYPE_CHECKING:
    from transport.livechat.settings import BotSettingsBook
    from transport.servers.http.app import HttpApp

#: A settings change is a handful of short values; anything longer is not one.
MAX_BODY_BYTES = 16 * 1024
_NO_STORE = {"cache-control": "no-store"}


@attrs.frozen
class Admin:
    admin_id: str
    name: str


def _app(request: Request) -> HttpApp:
    return cast("HttpApp", request.app)


def _answer(data: Mapping[str, Any], status: int = 200) -> Response:
    return JSONResponse(dict(data), status, _NO_STORE)


def _admin(request: Request) -> Admin | Response:
    """The administrator the request's token belongs to, or the refusal to answer with."""
    app = _app(request)
    token = bearer_token(request.headers)
    if token is None:
        return error_response(
            401, "unauthorized", "Send an administrator's token as 'Authorization: Bearer'."
        )
    admin_id = find_token(app.admin_tokens, token)
    if admin_id is not None:
        return Admin(admin_id, app.admin_names.get(admin_id, admin_id))
    services = app.services
    if find_token(services.agent_tokens, token) or find_token(services.bot_tokens, token):
        return error_response(403, "forbidden", "This token is not an administrator's.")
    return error_response(401, "unauthorized", "Unknown administrator token.")


def _allowed(request: Request) -> tuple[Admin, BotSettingsBook] | Response:
    """The administrator asking and the settings it may change, or the refusal to answer
    with (who asks is checked first)."""
    admin = _admin(request)
    if isinstance(admin, Response):
        return admin
    book = _app(request).bot_settings
    if book is None:
        return error_response(503, "unavailable", "This server does not change settings.")
    return admin, book


def _unknown_bot(bot_id: str) -> Response:
    return error_response(404, "unknown_bot", f"No bot {bot_id!r} is served here.")


async def list_bots(request: Request) -> Response:
    """``GET /api/bots``: every bot served, with its settings."""
    allowed = _allowed(request)
    if isinstance(allowed, Response):
        return allowed
    admin, book = allowed
    return _answer(
        {
            "admin": {"admin_id": admin.admin_id, "name": admin.name},
            "bots": [book.view(bot_id) for bot_id in book.bot_ids],
        }
    )


async def bot_settings(request: Request) -> Response:
    """``GET``, ``PATCH`` and ``DELETE /api/bots/{bot_id}/settings``."""
    allowed = _allowed(request)
    if isinstance(allowed, Response):
        return allowed
    admin, book = allowed
    bot_id: str = request.path_params["bot_id"]
    if bot_id not in book.bot_ids:
        return _unknown_bot(bot_id)
    if request.method == "PATCH":
        body = await request.body()
        values = _values(body)
        if isinstance(values, Response):
            return values
        try:
            await book.change(bot_id, values, admin.admin_id, admin.name)
        except ConfigError as exc:
            return _invalid(bot_id, exc)
    elif request.method == "DELETE":
        await book.reset(bot_id, None, admin.admin_id, admin.name)
    return _answer(book.view(bot_id))


async def reset_key(request: Request) -> Response:
    """``DELETE /api/bots/{bot_id}/settings/{key}``: the key's config file value again."""
    allowed = _allowed(request)
    if isinstance(allowed, Response):
        return allowed
    admin, book = allowed
    bot_id: str = request.path_params["bot_id"]
    try:
        await book.reset(bot_id, [request.path_params["key"]], admin.admin_id, admin.name)
    except UnknownBot:
        return _unknown_bot(bot_id)
    except ConfigError as exc:
        return _invalid(bot_id, exc)
    return _answer(book.view(bot_id))


def _values(body: bytes) -> dict[str, Any] | Response:
    """The body of a change: one JSON object of keys to values, strict JSON."""
    if len(body) > MAX_BODY_BYTES:
        return error_response(413, "too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    try:
        data = strict.loads(body)
    except (UnicodeDecodeError, ValueError):
        return error_response(400, "bad_request", "The body must be JSON.")
    if not isinstance(data, dict) or not data:
        return error_response(
            400, "bad_request", "The body must be a JSON object of settings to change."
        )
    problem = strict.problem(data)
    if problem is not None:
        return error_response(400, "bad_request", problem)
    return data


def _invalid(bot_id: str, exc: ConfigError) -> Response:
    """422 with the config reader's words, each problem also placed on its field (the page
    shows it beside that field)."""
    prefix = bot_settings_key(bot_id)
    fields = {field.name for field in attrs.fields(BotSettings)}
    problems = []
    for problem in exc.problems:
        key, _, message = problem.partition(": ")
        field = key[len(prefix) + 1 :] if key.startswith(prefix + ".") else None
        if field is None and key == prefix:
            # A rule of the settings class itself ("invalid settings: <field> must ...").
            named = message.removeprefix("invalid settings: ").split(" ", 1)[0]
            field = named if named in fields else None
        problems.append({"key": key, "field": field, "message": message})
    body = {"error": "invalid_settings", "message": "; ".join(exc.problems), "problems": problems}
    return JSONResponse(body, 422, _NO_STORE)


async def page(request: Request) -> Response:
    """``GET /settings``: the administrators' page."""
    return await _app(request).files.file("settings.html", request.scope)


ROUTES = [
    Route("/settings", page, methods=["GET"]),
    Route("/api/bots", list_bots, methods=["GET"]),
    Route("/api/bots/{bot_id}/settings", bot_settings, methods=["GET", "PATCH", "DELETE"]),
    Route("/api/bots/{bot_id}/settings/{key}", reset_key, methods=["DELETE"]),
]

__all__ = ["MAX_BODY_BYTES", "ROUTES"]
