"""Users' resume tokens: the signed proof that a client may return to a conversation.

A user gets one in every ``welcome``. The token names the conversation (and its bot) and is
signed with the server's secret by itsdangerous (HMAC-SHA1 over a salted key derivation), so a
client cannot forge one or turn its own into another conversation's. It is the only way back
into a conversation.

A token also carries the time it was issued, and is refused once older than ``max_age``: a
token copied off a shared or stolen device stops opening the conversation after a while.
Every successful resume hands out a fresh token, so a client that keeps coming back keeps a
valid one; only a conversation left alone longer than ``max_age`` cannot be resumed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

# The salt names the token format: tokens of the untimed first format do not verify under it.
_SALT: Final = "switchover.resume.v2"
DEFAULT_MAX_AGE: Final = 30 * 24 * 3600.0

Clock = Callable[[], float]


class InvalidToken(Exception):
    """The token is forged, damaged, or signed with another secret."""


class ExpiredToken(InvalidToken):
    """The token is genuine but older than the maximum age. Raised only once the signature
    checked out, so a forged token can never pass for a merely expired one."""


@attrs.frozen
class ResumeGrant:
    """What a valid token opens."""

    conversation_id: str
    bot_id: str


class _ClockedSigner(TimestampSigner):
    """A timestamp signer reading the time from ``clock`` (wall-clock seconds) both when it
    signs and when it checks an age, so tests can issue tokens in the past without waiting."""

    def __init__(self, *args: Any, clock: Clock = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class ResumeTokens:
    """Issues and checks resume tokens under one secret; tokens older than ``max_age``
    seconds are refused. ``clock`` is the wall clock (seconds since the epoch)."""

    def __init__(
        self, secret: str, *, max_age: float = DEFAULT_MAX_AGE, clock: Clock = time.time
    ) -> None:
        if not secret:
            raise ValueError("resume tokens need a non-empty secret")
        if not 0 < max_age < math.inf:
            raise ValueError(f"the resume token max age must be positive and finite, got {max_age}")
        self.max_age = max_age
        self._serializer = URLSafeTimedSerializer(
            secret, salt=_SALT, signer=_ClockedSigner, signer_kwargs={"clock": clock}
        )

    def issue(self, conversation_id: str, bot_id: str) -> str:
        token: str = self._serializer.dumps({"c": conversation_id, "b": bot_id})
        return token

    def verify(self, token: str) -> ResumeGrant:
        try:
            # itsdangerous compares whole seconds; its max_age is annotated as an int.
            data = self._serializer.loads(token, max_age=int(self.max_age))
        except SignatureExpired:
            raise ExpiredToken("the resume token has expired") from None
        except BadSignature:
            raise InvalidToken("the resume token is not valid") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("c"), str)
            or not isinstance(data.get("b"), str)
        ):
            raise InvalidToken("the resume token is not valid")
        return ResumeGrant(data["c"], data["b"])


__all__ = ["DEFAULT_MAX_AGE", "ExpiredToken", "InvalidToken", "ResumeGrant", "ResumeTokens"]
