"""A CSML chatbot served by a CSML engine server (``POST /run``), as a Switchover bot.

Each event the bot must see becomes one ``/run`` request::

    {"bot_id": "<engine bot id>", "version_id": "<when configured>",
     "event": {"request_id": "<the event id, stable across retries>",
               "client": {"user_id": "<user id>", "channel_id": "<conversation id>",
                          "bot_id": "<engine bot id>"},
               "payload": {"content_type": "text", "content": {"text": "hi"}},
               "metadata": {<the user's metadata>, "reason": ..., "session_id": ...}}}

and the ``payload`` of each message the engine answers with is shown to the user as it is:
text, a question with buttons, image, url, file, or any type Switchover does not know. A
button whose payload is ``LIVECHAT_SESSION_START`` needs nothing special here: when the user
clicks it, the core opens the session and the engine hears nothing until the session ends.

When the engine conversation is closed
--------------------------------------

CSML's reference livechat flow offers the human button, then ``hold``\\s, waiting for
``LIVECHAT_SESSION_END`` or ``LIVECHAT_SESSION_EXPIRED``. Closing the engine conversation
at hand-off (as Chatwoot's integration effectively did by treating ``conversation_end`` as
"hand off") would throw that held step away: the end-of-session event would start the flow
from scratch and the bot's "thanks for chatting" would never be said. So the hand-off does
not close anything, and ``conversation_end`` is never taken to mean "hand off".

Chatwoot's "ghost conversations" came from the other side: engine conversations left held
after the session was over, which later messages were attached to. Here:

* the engine client is derived from the Switchover conversation (``channel_id`` is the
  conversation id), so one conversation's held step can never catch another's messages;
* the core always tells the bot that a session is over, with END or EXPIRED (and the
  reason), which resumes the held step exactly as the reference flow expects; the flow then
  ends it (``goto end``) or carries on, its choice;
* when that END or EXPIRED could not be delivered (the engine was down), the held step would
  wait for an event that will never come and swallow the user's next message. The adapter
  remembers it and closes the engine conversation (``POST /conversations/close``) before
  that next event, which then starts the flow afresh;
* :meth:`CsmlBot.close_conversation` closes it on demand, for a host that deletes or
  abandons a conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx

from actors import SESSION_END, SESSION_EXPIRED, BotEvent, Content
from transport import strict
from transport.bots.options import RESILIENCE_KEYS, OptionReader
from transport.bots.remote import RemoteBot
from transport.bots.resilience import BotReplyInvalid, Resilience

log = logging.getLogger("switchover.bots.csml")

OPTION_KEYS = RESILIENCE_KEYS | {"engine_url", "engine_bot_id", "version_id", "api_key"}


@attrs.frozen
class CsmlEngine:
    """Where the engine is and which of its bots to run. ``engine_bot_id`` is the bot's id
    in the engine (often the same as Switchover's bot id); ``version_id`` pins a version of
    a stored bot; ``api_key`` is sent as ``X-Api-Key`` when the engine requires keys."""

    engine_url: str
    engine_bot_id: str
    version_id: str | None = None
    api_key: str | None = None

    def url(self, path: str) -> str:
        return self.engine_url.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key is not None:
            headers["X-Api-Key"] = self.api_key
        return headers


def client_for(engine: CsmlEngine, conversation_id: str, user_id: str) -> dict[str, str]:
    """The engine's client of a Switchover conversation: one engine conversation per
    Switchover conversation, so no two conversations ever share a held step."""
    return {"user_id": user_id, "channel_id": conversation_id, "bot_id": engine.engine_bot_id}


def event_payload(content: Content) -> dict[str, Any]:
    """A Switchover content as a CSML event payload. Text and button payloads already have
    CSML's shape (``{"content_type": "text", "content": {"text": ...}}``,
    ``{"content_type": "payload", "content": {"payload": ...}}``); every other type (file,
    image, url, flow_trigger...) is passed through as it is."""
    return {"content_type": content.content_type, "content": dict(content.content)}


def run_request(engine: CsmlEngine, event: BotEvent) -> dict[str, Any]:
    """The body of ``POST /run`` for one event."""
    body: dict[str, Any] = {"bot_id": engine.engine_bot_id}
    if engine.version_id is not None:
        body["version_id"] = engine.version_id
    body["event"] = {
        "request_id": event.event_id,
        "client": client_for(engine, event.conversation_id, event.user_id),
        "payload": event_payload(event.content),
        # The engine's event has no field for it: who sent the event rides in the metadata.
        "metadata": {**event.metadata, "sender": event.sender.value},
    }
    return body


def replies_from(data: object) -> tuple[list[Content], bool]:
    """The messages of a ``/run`` answer, in interaction order, and its
    ``conversation_end``. Raises :class:`BotReplyInvalid` when the answer is not shaped
    like the engine's."""
    if not isinstance(data, Mapping):
        raise BotReplyInvalid("the engine's answer is not a JSON object")
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise BotReplyInvalid("the engine's answer has no messages array")
    ordered: list[tuple[int, int, Content]] = []
    for index, message in enumerate(messages):
        payload = message.get("payload") if isinstance(message, Mapping) else None
        if not isinstance(payload, Mapping):
            raise BotReplyInvalid(f"message {index} of the engine's answer has no payload")
        content_type = payload.get("content_type")
        content = payload.get("content", {})
        if not isinstance(content_type, str) or not content_type:
            raise BotReplyInvalid(f"message {index} has no content_type")
        if not isinstance(content, Mapping):
            raise BotReplyInvalid(f"message {index} has a content that is not an object")
        problem = strict.content_problem(content_type, content)
        if problem is not None:
            raise BotReplyInvalid(f"message {index} of the engine's answer: {problem}")
        order = message.get("interaction_order")
        order = order if isinstance(order, int) and not isinstance(order, bool) else index
        ordered.append((order, index, Content(content_type, dict(content))))
    ordered.sort(key=lambda item: (item[0], item[1]))
    ended = data.get("conversation_end") is True
    return [content for _, _, content in ordered], ended


class CsmlBot(RemoteBot):
    """A Switchover bot backed by a CSML engine server (``http`` and ``resilience``: see
    :class:`~transport.bots.remote.RemoteBot`)."""

    def __init__(
        self,
        bot_id: str,
        engine: CsmlEngine,
        *,
        http: httpx.AsyncClient | None = None,
        resilience: Resilience | None = None,
    ) -> None:
        super().__init__(bot_id, http=http, resilience=resilience)
        self.engine = engine
        # Conversations whose session end never reached the engine: closed before their
        # next event (see the module's docstring).
        self._to_close: dict[str, str] = {}

    @classmethod
    def from_options(
        cls, bot_id: str, options: Mapping[str, Any], *, http: httpx.AsyncClient | None = None
    ) -> CsmlBot:
        reader = OptionReader(bot_id, options)
        engine_url = reader.url("engine_url")
        engine_bot_id = reader.string("engine_bot_id") or bot_id
        version_id = reader.string("version_id")
        api_key = reader.string("api_key")
        resilience = reader.resilience()
        reader.done(OPTION_KEYS)
        assert engine_url is not None
        engine = CsmlEngine(engine_url, engine_bot_id, version_id, api_key)
        return cls(bot_id, engine, http=http, resilience=resilience)

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        conversation_id = event.conversation_id
        if conversation_id in self._to_close:
            await self.close_conversation(conversation_id, self._to_close[conversation_id])
        try:
            replies, ended = await self._call_engine(event)
        except Exception:
            if event.content.is_payload(SESSION_END) or event.content.is_payload(SESSION_EXPIRED):
                self._to_close[conversation_id] = event.user_id
            raise
        if ended:
            log.debug(
                "engine conversation ended",
                extra={"conversation_id": conversation_id, "bot_id": self.bot_id},
            )
        return replies

    async def _call_engine(self, event: BotEvent) -> tuple[list[Content], bool]:
        body = run_request(self.engine, event)
        url = self.engine.url("/run")
        headers = self.engine.headers()

        async def attempt(number: int) -> tuple[list[Content], bool]:
            response = await self._post(url, headers, json=body)
            try:
                data = strict.loads(response.content)
            except ValueError as exc:
                raise BotReplyInvalid(
                    f"the engine's answer is not strict JSON: {exc}"[:200]
                ) from None
            replies = replies_from(data)
            echoed = data.get("request_id")
            if echoed is not None and echoed != event.event_id:
                log.warning(
                    "engine answered request %r for request %r",
                    echoed,
                    event.event_id,
                    extra={"conversation_id": event.conversation_id, "bot_id": self.bot_id},
                )
            return replies

        return await self.resilience.call(
            event.conversation_id, f"POST /run for event {event.event_id}", attempt
        )

    async def close_conversation(self, conversation_id: str, user_id: str) -> None:
        """Close the engine's open conversation for this Switchover conversation
        (``POST /conversations/close`` with its client), so a held step cannot outlive the
        conversation it belongs to."""
        body = client_for(self.engine, conversation_id, user_id)
        url = self.engine.url("/conversations/close")
        headers = self.engine.headers()

        async def attempt(number: int) -> None:
            await self._post(url, headers, json=body)

        await self.resilience.call(conversation_id, "POST /conversations/close", attempt)
        self._to_close.pop(conversation_id, None)
