"""Users' resume tokens: the signed proof that a client may return to a conversation.

A user gets one in its first ``welcome``. The token names the conversation (and its bot) and is
signed with the server's secret by itsdangerous (HMAC-SHA1 over a salted key derivation), so a
client cannot forge one or turn its own into another conversation's. It is the only way back
into a conversation.
"""

from __future__ import annotations

from typing import Final

import attrs
from itsdangerous import BadSignature, URLSafeSerializer

_SALT: Final = "switchover.resume.v1"


class InvalidToken(Exception):
    """The token is forged, damaged, or signed with another secret."""


@attrs.frozen
class ResumeGrant:
    """What a valid token opens."""

    conversation_id: str
    bot_id: str


class ResumeTokens:
    """Issues and checks resume tokens under one secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("resume tokens need a non-empty secret")
        self._serializer = URLSafeSerializer(secret, salt=_SALT)

    def issue(self, conversation_id: str, bot_id: str) -> str:
        token: str = self._serializer.dumps({"c": conversation_id, "b": bot_id})
        return token

    def verify(self, token: str) -> ResumeGrant:
        try:
            data = self._serializer.loads(token)
        except BadSignature:
            raise InvalidToken("the resume token is not valid") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("c"), str)
            or not isinstance(data.get("b"), str)
        ):
            raise InvalidToken("the resume token is not valid")
        return ResumeGrant(data["c"], data["b"])


__all__ = ["InvalidToken", "ResumeGrant", "ResumeTokens"]
