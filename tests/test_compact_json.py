"""The compact JSON encoder of frames and stored rows writes what ``json.dumps`` writes."""

from __future__ import annotations

import datetime
import decimal
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport import strict


def obvious(value: Any, **options: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), **options)


def pure_python(**options: Any) -> Callable[[Any], str]:
    """The encoder as built where the C accelerator is missing (the pure-Python encoder also
    looks it up as it encodes, so it is kept missing then too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json.encoder, "c_make_encoder", None)
        encode = strict.compact_encoder(**options)

    def without_c(value: Any) -> str:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(json.encoder, "c_make_encoder", None)
            return encode(value)

    return without_c


# Every kind of text, lone surrogates included (what the encoder is given is checked elsewhere).
TEXT = st.text(st.characters(codec=None), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
KEYS = (
    TEXT
    | st.integers()
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(KEYS, inner, max_size=4)
    ),
    max_leaves=20,
)
FAST, SLOW = strict.compact_encoder(), pure_python()
FAST_STR, SLOW_STR = strict.compact_encoder(default=str), pure_python(default=str)


@given(VALUES)
def test_it_writes_what_json_dumps_writes(value: Any) -> None:
    expected = obvious(value)
    assert FAST(value) == expected
    assert SLOW(value) == expected


OTHER = st.sampled_from(
    [decimal.Decimal("1.5"), datetime.date(2026, 1, 2), {1, 2}, b"bytes", object]
)


@given(st.recursive(SCALARS | OTHER, lambda inner: st.lists(inner, max_size=4), max_leaves=10))
def test_with_a_default_it_writes_what_json_dumps_writes_with_it(value: Any) -> None:
    expected = obvious(value, default=str)
    assert FAST_STR(value) == expected
    assert SLOW_STR(value) == expected


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("encode", [FAST, SLOW, FAST_STR, SLOW_STR])
def test_numbers_that_are_not_json_are_refused(encode: Callable[[Any], str], number: float) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode({"a": [1, number]})
    # A refusal leaves nothing behind: the encoder goes on as before.
    assert encode({"a": [1, 2.5]}) == '{"a":[1,2.5]}'


@pytest.mark.parametrize("encode", [FAST, SLOW])
def test_a_type_json_does_not_have_is_refused_without_a_default(
    encode: Callable[[Any], str],
) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode({"when": datetime.date(2026, 1, 2)})


@pytest.mark.parametrize("encode", [FAST, SLOW])
def test_a_cycle_ends_in_recursion_error(encode: Callable[[Any], str]) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(RecursionError):
        encode(loop)


def test_without_the_accelerator_it_is_the_pure_python_encoder() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json.encoder, "c_make_encoder", None)
        encode = strict.compact_encoder()
    assert isinstance(getattr(encode, "__self__", None), json.JSONEncoder)
