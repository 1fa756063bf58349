from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfsched.clustermodel.quantity import (
    QuantityError,
    format_bytes,
    format_bytes_rounded,
    format_tflops,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10Gi", 10 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1Ki", 1024),
        ("44", 44.0),
        ("1.5", 1.5),
        ("500m", 0.5),
        ("2k", 2000.0),
        ("1e3", 1000.0),
        ("1E-3", 0.001),
        ("5G", 5e9),
        (".5", 0.5),
        ("+3", 3.0),
        (7, 7.0),
        (2.5, 2.5),
    ],
)
def test_parses_kubernetes_quantities(text, value):
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "10GB", "1.2.3", "Gi", "10 Gi", "-1", "-5Gi", "nan", "inf", True, None])
def test_rejects_bad_or_negative_quantities(text):
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_negative_allowed_when_asked():
    assert parse_quantity("-2Gi", allow_negative=True) == -2 * 2**30


@given(st.integers(min_value=1, max_value=2**50))
def test_format_bytes_round_trips_exactly(n):
    assert parse_quantity(format_bytes(n)) == n


@given(st.floats(min_value=0.001, max_value=1e5, allow_nan=False))
def test_format_tflops_never_rounds_down(x):
    parsed = parse_quantity(format_tflops(x))
    assert parsed >= x - 1e-9
    assert parsed - x < 0.001 + 1e-9


def test_format_examples():
    assert format_bytes(10 * 2**30) == "10Gi"
    assert format_bytes(1536 * 2**20) == "1536Mi"
    assert format_tflops(13) == "13"
    assert format_tflops(12.3456) == "12346m"


def test_format_bytes_rounded_is_short_never_less_and_a_quantity():
    assert format_bytes_rounded(40 * 2**30) == "40Gi"
    assert format_bytes_rounded(10109348249) == "9642Mi"  # 9641.04… Mi, rounded up
    assert format_bytes_rounded(9641 * 2**20 + 1) == "9642Mi"
    assert format_bytes_rounded(1000) == "1000" and format_bytes_rounded(0) == "0"
    for value in (1.5 * 2**20, 10109348249, 16276050680123):
        assert parse_quantity(format_bytes_rounded(value)) >= value
        assert parse_quantity(format_bytes_rounded(value)) - value < 2**20
