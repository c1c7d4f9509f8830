"""What people and bots say to each other.

A piece of content has the same shape as a CSML payload: a ``content_type`` and a JSON-like
``content`` mapping. Keeping that shape means a bot's replies (a question with buttons, an
image, a type Switchover has never heard of) pass through the router untouched, and the only
contents the lifecycle looks inside are the few it must recognise: button payloads and the
agent's sign-off token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

SESSION_START: Final = "LIVECHAT_SESSION_START"
SESSION_END: Final = "LIVECHAT_SESSION_END"
SESSION_EXPIRED: Final = "LIVECHAT_SESSION_EXPIRED"

TEXT: Final = "text"
PAYLOAD: Final = "payload"
QUESTION: Final = "question"
NOTICE: Final = "notice"


@attrs.frozen
class Content:
    """One message body: ``content_type`` plus its ``content``, CSML style."""

    content_type: str
    content: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def text(cls, text: str) -> Content:
        return cls(TEXT, {"text": text})

    @classmethod
    def payload(cls, payload: str) -> Content:
        return cls(PAYLOAD, {"payload": payload})

    @classmethod
    def question(cls, title: str, buttons: list[tuple[str, str]]) -> Content:
        """A question with buttons, each given as ``(title, payload)``."""
        return cls(
            QUESTION,
            {
                "title": title,
                "buttons": [
                    {
                        "content_type": "button",
                        "content": {"title": label, "payload": payload, "accepts": [label]},
                    }
                    for label, payload in buttons
                ],
            },
        )

    @classmethod
    def notice(cls, code: str, **details: Any) -> Content:
        """A system notice (queue position, agent joined, session ended...)."""
        return cls(NOTICE, {"code": code, **details})

    def is_payload(self, payload: str) -> bool:
        return self.content_type == PAYLOAD and self.content.get("payload") == payload

    @property
    def text_value(self) -> str | None:
        value = self.content.get("text")
        return value if self.content_type == TEXT and isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "content": dict(self.content)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Content:
        content = data.get("content", {})
        if not isinstance(data.get("content_type"), str) or not isinstance(content, Mapping):
            raise ValueError("content needs a string content_type and an object content")
        return cls(data["content_type"], dict(content))


def split_sign_off(content: Content) -> tuple[Content | None, bool]:
    """Separate an agent's message from a trailing ``LIVECHAT_SESSION_END`` token.

    CSML's Chatwoot integration lets agents sign off with a canned response whose text ends
    with the token. Returns the message to show (``None`` when nothing is left once the token
    is removed) and whether the agent signed off.
    """
    if content.is_payload(SESSION_END):
        return None, True
    text = content.text_value
    if text is None or not text.rstrip().endswith(SESSION_END):
        return content, False
    remainder = text.rstrip()[: -len(SESSION_END)].rstrip()
    return (Content.text(remainder) if remainder else None), True
