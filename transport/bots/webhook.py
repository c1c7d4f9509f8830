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

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from actors import BotEvent, Content
from transport import strict
from transport.bots.events import event_fields
from transport.bots.options import RESILIENCE_KEYS, OptionReader
from transport.bots.remote import RemoteBot
from transport.bots.resilience import BotReplyInvalid, Resilience
from transport.signing import (
    EVENT_ID_HEADER,
    MIN_SECRET_LENGTH,
    SIGNATURE_HEADER,
    SIGNATURE_VERSION,
    TIMESTAMP_HEADER,
    signature,
    signed_headers,
    verify_signature,
)

OPTION_KEYS = RESILIENCE_KEYS | {"url", "secret"}

# Bot authors verify requests with these (transport/signing.py has them for every receiver).
__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "SIGNATURE_VERSION",
    "TIMESTAMP_HEADER",
    "WebhookBot",
    "event_body",
    "messages_from",
    "signature",
    "signed_headers",
    "verify_signature",
]


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
