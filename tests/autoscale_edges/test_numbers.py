"""The compiled number parser reads every token exactly as ``float()`` does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsched.autoscale.numbers import parse_numbers

tokens = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=1e12).map(lambda v: f"{v:.3f}"),
    st.integers(-(10**25), 10**25).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=20).map(str),
    st.tuples(st.integers(0, 10**17), st.integers(-30, 30)).map(lambda t: f"{t[0]}e{t[1]}"),
    st.sampled_from(["NaN", "+Inf", "-Inf", "-0", "0.", ".5", "1_0", " 3 ", "1e", "0x10", "--1", "1.2.3", "", "e5"]),
)


def _float_or_error(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


@settings(max_examples=2000, deadline=None)
@given(st.lists(tokens, min_size=1, max_size=20))
def test_reads_like_float(parts: list[str]) -> None:
    text = ",".join(parts).encode()
    if not text:  # b"" holds no numbers at all
        assert parse_numbers(text).shape == (0,)
        return
    expected = [_float_or_error(p) for p in parts]
    if any(e is None for e in expected):
        with pytest.raises(ValueError):
            parse_numbers(text)
        return
    got = parse_numbers(text).tolist()
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert (math.isnan(g) and math.isnan(e)) or (g == e and math.copysign(1, g) == math.copysign(1, e)), (g, e)


def test_fast_path_values() -> None:
    got = parse_numbers(b"1759320000,12.345,0.1,-0,1e22,2539377048,9007199254740993")
    assert got.tolist()[:6] == [1759320000.0, 12.345, 0.1, -0.0, 1e22, 2539377048.0]
    assert got[6] == float("9007199254740993")  # beyond 2**53: float() decides
    assert parse_numbers(b"").shape == (0,)
    assert np.isnan(parse_numbers(b"NaN")[0])
