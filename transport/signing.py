"""Signed HTTP requests from Switchover (what webhook bots and livechat platforms receive),
and the headers its own HTTP API reads.

Every request Switchover sends to someone else's server carries ``X-Switchover-Timestamp``
(Unix seconds) and ``X-Switchover-Signature: v1=<hex>``, the HMAC-SHA256 under a shared
secret of ``"<timestamp>." + body``. Signing the timestamp lets the receiver refuse a
replayed request; :func:`verify_signature` does both checks. One scheme for every receiver,
so a helpdesk and a bot verify Switchover the same way (docs/bots.md, docs/platforms.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

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


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in any mapping, matching names case-insensitively."""
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
    timestamp = header(headers, TIMESTAMP_HEADER)
    signatures = header(headers, SIGNATURE_HEADER)
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


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    value = header(headers, "authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
