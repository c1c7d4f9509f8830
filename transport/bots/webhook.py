"""A bot behind an HTTP webhook: each event is POSTed as signed JSON, the answer carries the
messages to show.

The request body (see docs/bots.md)::

    {"type": "event", "event_id": "<stable across retries>", "conversation_id": "...",
     "bot_id": "...", "user_id": "...",
     "content": {"content_type": "text", "content": {"text": "hi"}},
     "metadata": {...}}

Headers: ``X-Switchover-Timestamp`` (Unix seconds) and ``X-Switchover-Signature:
v1=<hex>``, the HMAC-SHA256 with the bot's secret of ``"<timestamp>." + body``. Signing the
timestamp lets the bot refuse a replayed request; :func:`verify_signature` does both checks.

The answer is ``{"messages": [<content>, ...]}`` (each ``{"content_type": ..., "content":
{...}}``), or an empty body / 204 for no messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from actors import BotEvent, Content
from transport import strict
from transport.bots.events import event_fields
from transport.bots.options import RESILIENCE_KEYS, OptionReader
from transport.bots.remote import RemoteBot
from transport.bots.resilience import BotReplyInvalid, Resilience

OPTION_KEYS = RESILIENCE_KEYS | {"url", "secret"}

TIMESTAMP_HEADER = "X-Switchover-Timestamp"
SIGNATURE_HEADER = "X-Switchover-Signature"
EVENT_ID_HEADER = "X-Switchover-Event-Id"
SIGNATURE_VERSION = "v1"
MIN_SECRET_LENGTH = 16


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: f"{SIGNATURE_VERSION}={signature(secret, timestamp, body)}",
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float = 300.0,
    *,
    now: float | None = None,
) -> bool:
    """Whether a webhook request really comes from Switchover, and recently.

    For bot authors: pass the raw request body (before any JSON parsing) and its headers
    (any mapping; names are matched case-insensitively). True only when the timestamp is
    within ``tolerance`` seconds of ``now`` (the current time by default) and one of the
    ``v1=`` signatures matches.
    """
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signatures = _header(headers, SIGNATURE_HEADER)
    if timestamp is None or signatures is None:
        return False
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    found = False
    for part in signatures.split(","):
        version, _, value = part.strip().partition("=")
        if version == SIGNATURE_VERSION and hmac.compare_digest(
            value.encode("utf-8", "replace"), expected.encode("ascii")
        ):
            found = True
    return found


def event_body(event: BotEvent) -> dict[str, Any]:
    """The JSON a webhook bot receives for one event."""
    return {
        **event_fields(event),
        "content": event.content.to_json(),
        "metadata": dict(event.metadata),
    }


def messages_from(raw: bytes) -> list[Content]:
    """The messages of a webhook's answer. Raises :class:`BotReplyInvalid` on anything that
    is not ``{"messages": [content, ...]}`` (an empty body means no messages)."""
    if not raw.strip():
        return []
    try:
        data = strict.loads(raw)
    except ValueError as exc:
        raise BotReplyInvalid(f"the bot's answer is not strict JSON: {exc}"[:200]) from None
    if not isinstance(data, Mapping) or not isinstance(data.get("messages", []), list):
        raise BotReplyInvalid('the bot\'s answer must be {"messages": [...]}')
    contents: list[Content] = []
    for index, item in enumerate(data.get("messages", [])):
        if not isinstance(item, Mapping):
            raise BotReplyInvalid(f"message {index} of the bot's answer is not an object")
        problem = strict.content_problem(item.get("content_type"), item.get("content", {}))
        if problem is not None:
            raise BotReplyInvalid(f"message {index} of the bot's answer: {problem}")
        try:
            contents.append(Content.from_json(item))
        except ValueError as exc:
            raise BotReplyInvalid(f"message {index} of the bot's answer: {exc}") from None
    return contents


class WebhookBot(RemoteBot):
    """A Switchover bot reached by signed HTTP POSTs to ``url`` (``http`` and
    ``resilience``: see :class:`~transport.bots.remote.RemoteBot`)."""

    def __init__(
        self,
        bot_id: str,
        url: str,
        secret: str,
        *,
        http: httpx.AsyncClient | None = None,
        resilience: Resilience | None = None,
    ) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"a webhook secret needs at least {MIN_SECRET_LENGTH} characters")
        super().__init__(bot_id, http=http, resilience=resilience)
        self.url = url
        self._secret = secret

    @classmethod
    def from_options(
        cls, bot_id: str, options: Mapping[str, Any], *, http: httpx.AsyncClient | None = None
    ) -> WebhookBot:
        reader = OptionReader(bot_id, options)
        url = reader.url("url")
        secret = reader.string("secret", required=True)
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            reader.problem("secret", f"must be at least {MIN_SECRET_LENGTH} characters long")
        resilience = reader.resilience()
        reader.done(OPTION_KEYS)
        assert url is not None and secret is not None
        return cls(bot_id, url, secret, http=http, resilience=resilience)

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        body = json.dumps(event_body(event), separators=(",", ":")).encode("utf-8")

        async def attempt(number: int) -> list[Content]:
            # Signed per attempt: a retry carries a fresh timestamp, the same event id.
            headers = {
                "Content-Type": "application/json",
                "Accept": "application/json",
                EVENT_ID_HEADER: event.event_id,
                **signed_headers(self._secret, body),
            }
            response = await self._post(self.url, headers, content=body)
            return messages_from(response.content)

        return await self.resilience.call(
            event.conversation_id, f"webhook for event {event.event_id}", attempt
        )
