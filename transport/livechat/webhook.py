"""The generic webhook platform: any helpdesk that takes signed events and answers through
Switchover's HTTP API (docs/platforms.md has the whole protocol).

Switchover POSTs one JSON event per call to the helpdesk's ``url``, signed like every request
it sends (transport/signing.py)::

    {"id": "<event id>", "type": "session.requested" | "session.message" |
     "session.typing" | "session.ended", "at": <unix seconds>, "bot_id": "...",
     "session_id": "...", "conversation_id": "...", "data": {...}}

A 2xx answer means the helpdesk has the event. ``id`` is stable across retries, so the
helpdesk drops a repeat. 429 and 503 may say ``Retry-After``; other 5xx, timeouts and
refused connections are retried with backoff; any other 4xx is a refusal for good.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx

from actors import Entry
from actors.model.deliveries import Transcript
from transport.bots.options import OptionReader
from transport.livechat.platform import (
    ENGINE_OPTION_KEYS,
    Action,
    PlatformRefused,
    PlatformUnavailable,
    read_engine_options,
)
from transport.livechat.tickets import Ticket
from transport.signing import EVENT_ID_HEADER, MIN_SECRET_LENGTH, signed_headers

OPTION_KEYS = ENGINE_OPTION_KEYS | {"url", "secret", "secret_env", "api_token", "api_token_env"}
EVENT_TYPES = ("session.requested", "session.message", "session.typing", "session.ended")


@attrs.frozen
class WebhookOptions:
    """``[bots.<id>.livechat.options]`` of a ``kind = "webhook"`` platform."""

    url: str
    secret: str
    api_token: str
    timeout: float = 10.0
    workers: int = 4
    unreachable_after: float = 30.0
    max_backoff: float = 60.0

    @classmethod
    def read(
        cls, bot_id: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> WebhookOptions:
        """Raises :class:`~transport.errors.ConfigError` naming every bad key."""
        reader = OptionReader(bot_id, options, table="livechat.options", environ=environ)
        url = reader.url("url")
        secret = reader.secret("secret", min_length=MIN_SECRET_LENGTH)
        api_token = reader.secret("api_token", min_length=MIN_SECRET_LENGTH)
        engine = read_engine_options(reader)
        reader.done(OPTION_KEYS)
        assert url is not None and secret is not None and api_token is not None
        return cls(url, secret, api_token, **engine)


def event(ticket: Ticket, kind: str, event_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """One event's body."""
    return {
        "id": event_id,
        "type": kind,
        "at": time.time(),
        "bot_id": ticket.bot_id,
        "session_id": ticket.session_id,
        "conversation_id": ticket.conversation_id,
        "data": dict(data),
    }


def transcript_entry(entry: Entry) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "seq": entry.seq,
        "at": entry.at,
        "sender": entry.sender.value,
        "content": entry.content.to_json(),
    }
    return shown


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class WebhookConnector:
    """Sends a session's events to a helpdesk's webhook URL."""

    def __init__(self, options: WebhookOptions, http: httpx.AsyncClient) -> None:
        self.options = options
        self.http = http

    async def open(self, ticket: Ticket, transcript: Transcript) -> str | None:
        data = {
            "user": {"id": transcript.user_id, "metadata": dict(transcript.user_metadata)},
            "transcript": [transcript_entry(e) for e in transcript.entries],
            "truncated": transcript.truncated,
        }
        await self._send(event(ticket, "session.requested", f"{ticket.session_id}:requested", data))
        return None

    async def post(self, ticket: Ticket, entry: Entry) -> None:
        data = {**transcript_entry(entry), "queued": bool(entry.metadata.get("queued"))}
        await self._send(event(ticket, "session.message", f"{ticket.session_id}:{entry.seq}", data))

    async def typing(self, ticket: Ticket) -> None:
        event_id = f"{ticket.session_id}:typing:{time.monotonic_ns()}"
        await self._send(event(ticket, "session.typing", event_id, {}))

    async def close(self, ticket: Ticket, reason: str) -> None:
        data = {"reason": reason}
        await self._send(event(ticket, "session.ended", f"{ticket.session_id}:ended", data))

    async def fetch(self, ticket: Ticket) -> Sequence[tuple[Action, str]]:
        """Nothing to read: the helpdesk posts its actions itself."""
        return ()

    async def _send(self, body: Mapping[str, Any]) -> None:
        raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: str(body["id"]),
            **signed_headers(self.options.secret, raw),
        }
        try:
            response = await self.http.post(
                self.options.url, content=raw, headers=headers, timeout=self.options.timeout
            )
        except httpx.TimeoutException as exc:
            raise PlatformUnavailable(f"no answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise PlatformUnavailable(f"cannot connect ({type(exc).__name__}: {exc})") from None
        check_status(response)


def check_status(response: httpx.Response) -> None:
    """Raise what a platform's status means: retry later, or give up on this call."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status >= 500 or status in (408, 429):
        raise PlatformUnavailable(
            f"answered HTTP {status}", retry_after(response.headers.get("retry-after"))
        )
    raise PlatformRefused(f"answered HTTP {status}: {response.text[:200]!r}")
