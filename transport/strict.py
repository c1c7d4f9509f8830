"""What any JSON from outside must be before it goes further: strict JSON every client can
read back.

Every entrance (WebSocket frames, the HTTP push, bots' webhook and CSML answers) reads its
JSON with :func:`loads` and checks what it got with :func:`problem`, so that what is taken can
always be stored and sent back as strict JSON to a browser:

* strings are valid Unicode: no lone surrogates (``"\\ud800"`` is valid JSON, but cannot be
  written as UTF-8, so SQLite and every socket would refuse it);
* numbers are finite (``1e400`` is valid JSON and reads as infinity; ``NaN`` and
  ``Infinity`` are not JSON at all), and integers lie within ±(2^53 - 1), what a JavaScript
  client can represent;
* values nest at most :data:`MAX_DEPTH` levels.

What the server writes back (frames, stored rows) goes through :func:`compact_encoder`.

Content types in :data:`RESERVED_CONTENT_TYPES` are the system's own: a client or a bot
that sends one is refused (see :func:`content_problem`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

MAX_DEPTH: Final = 32
MAX_SAFE_INTEGER: Final = 2**53 - 1
#: Content types only the system may write (its notices): refused from users, agents, bots.
RESERVED_CONTENT_TYPES: Final = frozenset({"notice"})
MAX_CONTENT_TYPE: Final = 64

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class Unrepresentable(ValueError):
    """Valid JSON that cannot be taken: a number beyond what clients can represent."""


class NotJson(ValueError):
    """Not JSON at all (``NaN``, ``Infinity``, a syntax error)."""


def _no_constants(name: str) -> Any:
    raise NotJson(f"{name} is not JSON")


def _integer(text: str) -> int:
    # A long run of digits is refused before int() parses it (quadratic in its length).
    value = int(text) if len(text) <= 17 else MAX_SAFE_INTEGER + 1
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise Unrepresentable(f"integers must lie within ±{MAX_SAFE_INTEGER}")
    return value


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Unrepresentable("numbers must be finite")
    return value


_decode: Final = json.JSONDecoder(
    parse_constant=_no_constants, parse_int=_integer, parse_float=_number
).decode


def loads(text: str | bytes) -> Any:
    """Read strict JSON. Raises :class:`Unrepresentable` for a number out of range,
    :class:`NotJson` (a ``ValueError``) for anything else that is not JSON, including nesting
    too deep for the parser."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise NotJson("not UTF-8") from None
    try:
        return _decode(text)
    except Unrepresentable:
        raise
    except RecursionError:
        raise NotJson("nests too deeply") from None
    except ValueError as exc:
        raise NotJson(str(exc)) from None


def compact_encoder(*, default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` from one encoder built
    once: ``json.dumps`` builds one per call (bench/README.md, Store, 2026-11-25, second pass).

    NaN and Infinity raise ``ValueError`` (they are not JSON). A value JSON does not have goes
    through ``default`` (without one it raises ``TypeError``). There are no circular-reference
    checks: a cycle ends in ``RecursionError``, like nesting too deep.
    """
    fallback = json.JSONEncoder(
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
        check_circular=False,
        default=default,
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the pure-Python encoder
        return fallback.encode
    encode = make(
        None,  # no circular-reference markers
        fallback.default,
        json.encoder.encode_basestring,
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


def bad_text(value: str) -> bool:
    """Whether a string holds a lone surrogate (it cannot be written as UTF-8)."""
    return not value.isascii() and _SURROGATE.search(value) is not None


def problem(value: object, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a decoded JSON value cannot be taken, or ``None`` when it can: a lone surrogate in
    a string or a key, a number that is not finite or an integer beyond ±(2^53 - 1), nesting
    deeper than ``max_depth``, or a value JSON does not have."""
    return _walk(value, 0, max_depth)


def _walk(value: object, level: int, max_depth: int) -> str | None:
    if isinstance(value, str):
        return "strings must be valid Unicode (no lone surrogates)" if bad_text(value) else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return None
        return f"integers must lie within ±{MAX_SAFE_INTEGER}"
    if isinstance(value, float):
        return None if math.isfinite(value) else "numbers must be finite"
    if isinstance(value, Mapping | list | tuple):
        if level >= max_depth:
            return f"values nest deeper than {max_depth} levels"
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    return "object keys must be strings"
                found = _walk(key, level, max_depth) or _walk(item, level + 1, max_depth)
                if found:
                    return found
            return None
        for item in value:
            found = _walk(item, level + 1, max_depth)
            if found:
                return found
        return None
    return f"{type(value).__name__} is not a JSON value"


def content_problem(
    content_type: object, content: object, max_depth: int = MAX_DEPTH
) -> str | None:
    """Why a message's content cannot be taken from a client or a bot, or ``None``."""
    if not isinstance(content_type, str) or not 0 < len(content_type) <= MAX_CONTENT_TYPE:
        return f"content_type must be a string of 1 to {MAX_CONTENT_TYPE} characters"
    if content_type in RESERVED_CONTENT_TYPES:
        return f"content_type {content_type!r} is reserved for the system"
    if not isinstance(content, Mapping):
        return "content must be an object"
    return problem(content_type) or problem(content, max_depth)


__all__ = [
    "MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "RESERVED_CONTENT_TYPES",
    "NotJson",
    "Unrepresentable",
    "bad_text",
    "compact_encoder",
    "content_problem",
    "loads",
    "problem",
]
