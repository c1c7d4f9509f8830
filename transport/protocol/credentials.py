"""Agents' and bots' tokens, and the guard against guessing them.

A token is configured in clear or as its SHA-256 (``"sha256:<64 hex digits>"``, made with
``printf %s TOKEN | sha256sum`` or :func:`hash_token`), so a config file that leaks does not
hand out working tokens. :func:`find_token` compares a presented token with every
configured one in constant time: how long it takes says nothing about which, or how much of
one, matched.

:class:`AddressGuard` keeps, per client address, the failed authentications (a wrong agent or
bot token, a forged or expired resume token) and the new conversations: an address that fails
``auth_failures`` times within ``auth_window`` seconds is refused (4429) until the window
passes, and new conversations come from a token bucket per address. Both are bounded in
memory, and 0 turns either off.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

HASH_PREFIX: Final = "sha256:"
MIN_TOKEN_LENGTH: Final = 16
_HASHED: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
#: How many addresses the guard remembers (the least recently seen are forgotten first).
MAX_ADDRESSES: Final = 10_000


def hash_token(token: str) -> str:
    """The form of ``token`` a config may give instead of the token itself."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_hashed(token: str) -> bool:
    return token.startswith(HASH_PREFIX)


def well_formed_hash(token: str) -> bool:
    return _HASHED.match(token) is not None


def token_problem(token: str) -> str | None:
    """Why a configured token is refused, or ``None``."""
    if is_hashed(token):
        if not well_formed_hash(token):
            return 'a hashed token is "sha256:" and 64 lowercase hex digits'
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        return (
            f"is shorter than {MIN_TOKEN_LENGTH} characters; use a long random one "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return None


def find_token(known: Mapping[str, str], presented: object) -> str | None:
    """Whose token ``presented`` is (the value ``known`` maps it to), comparing with every
    configured token, clear or hashed, in constant time."""
    if not isinstance(presented, str):
        return None
    raw = presented.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(raw).hexdigest().encode("ascii")
    found = None
    for token, owner in known.items():
        if token.startswith(HASH_PREFIX):
            same = hmac.compare_digest(token[len(HASH_PREFIX) :].encode("ascii", "replace"), digest)
        else:
            same = hmac.compare_digest(token.encode("utf-8"), raw)
        if same:
            found = owner
    return found


class AddressGuard:
    """Per client address: failed authentications, and a bucket of new conversations."""

    def __init__(
        self,
        *,
        auth_failures: int,
        auth_window: float,
        conversations_per_minute: float,
        conversations_burst: int,
        clock: Callable[[], float],
    ) -> None:
        self.auth_failures = auth_failures
        self.auth_window = auth_window
        self.rate = conversations_per_minute / 60.0
        self.burst = float(max(conversations_burst, 1))
        self.clock = clock
        # address -> (failures, start of the window)
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # address -> (tokens, when last refilled)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def locked_for(self, address: str) -> float:
        """Seconds until ``address`` may try to authenticate again (0: it may now)."""
        if self.auth_failures <= 0:
            return 0.0
        seen = self._failures.get(address)
        if seen is None:
            return 0.0
        failures, since = seen
        left = since + self.auth_window - self.clock()
        if left <= 0:
            del self._failures[address]
            return 0.0
        return left if failures >= self.auth_failures else 0.0

    def failed(self, address: str) -> None:
        """``address`` presented a credential that did not check out."""
        if self.auth_failures <= 0:
            return
        now = self.clock()
        failures, since = self._failures.pop(address, (0, now))
        if since + self.auth_window <= now:
            failures, since = 0, now
        self._failures[address] = (failures + 1, since)
        if len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)

    def new_conversation(self, address: str) -> float:
        """Take one new conversation for ``address``: 0 when it may, else the seconds until
        it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, then = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_ADDRESSES:
            self._buckets.popitem(last=False)
        return 0.0


def retry_words(seconds: float) -> str:
    return f"retry in {max(1, math.ceil(seconds))} s"


__all__ = [
    "HASH_PREFIX",
    "MIN_TOKEN_LENGTH",
    "AddressGuard",
    "find_token",
    "hash_token",
    "retry_words",
    "token_problem",
]
