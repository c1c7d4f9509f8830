"""The rules for numbers in settings, in one place: attrs validators for the settings classes
(the server's :class:`transport.protocol.limits.Limits`, a bot adapter's
:class:`transport.bots.resilience.RetryPolicy`), and the sign rule the config reader words as
problems of its own, naming the key (transport/config.py).

A leaf module: it imports nothing of Switchover, so every layer may use it (the bots, which
depend on the core only, as well as the wire protocol and the config).
"""

from __future__ import annotations

import math

import attrs


def positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    """Greater than zero (NaN is not)."""
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def positive_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    """A duration has to be a positive, finite number of seconds (infinity would not mean
    "forever" to the code that counts with it)."""
    if not (isinstance(value, int | float) and 0 < value < math.inf):
        raise ValueError(f"{attribute.name} must be a positive, finite number of seconds")


def at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    """1 or more."""
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value!r}")


def whole_number_at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    """An ``int`` of 1 or more (a count that sizes something)."""
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{attribute.name} must be a whole number of at least 1")


def sign_problem(value: float, *, zero_is_off: bool = False) -> str | None:
    """What is wrong with the sign of a number read from the config, in words the reader puts
    after the key: below zero, or zero where zero does not mean "off". ``None`` when the sign
    is fine. NaN has no sign and passes here: a reader's finiteness check, or the settings'
    validators, say what is wrong with it."""
    if value < 0 or (value == 0 and not zero_is_off):
        return f"must be positive{' or 0' if zero_is_off else ''}, got {value}"
    return None


__all__ = [
    "at_least_one",
    "positive",
    "positive_seconds",
    "sign_problem",
    "whole_number_at_least_one",
]
