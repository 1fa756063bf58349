from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfsched.clustermodel.quantity import MIB, QuantityError, format_bytes, format_tflops, parse_quantity


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


def test_format_bytes_for_reading_rounds_up_to_mi():
    assert format_bytes(2539377048, exact=False) == "2422Mi"
    assert format_bytes(17179869000, exact=False) == "16Gi"  # 16Gi less 184 bytes
    assert format_bytes(16 * 2**30, exact=False) == "16Gi"
    assert format_bytes(1, exact=False) == "1Mi"
    assert format_bytes(0, exact=False) == "0"
    assert format_bytes(2539377048) == "2539377048"  # exact keeps every byte


@given(st.integers(min_value=1, max_value=2**50))
def test_format_bytes_for_reading_is_the_next_whole_mi(n):
    shown = parse_quantity(format_bytes(n, exact=False))
    assert shown % MIB == 0
    assert n <= shown < n + MIB


@pytest.mark.parametrize("text", ["10Gi", " 500m", "1e3", "-2Gi"])
def test_a_cached_parse_answers_as_the_first(text):
    # Short strings are parsed once (thousands of GPUs share a few values); long ones every time.
    long = text + " " * 80
    assert parse_quantity(text, allow_negative=True) == parse_quantity(text, allow_negative=True)
    assert parse_quantity(long, allow_negative=True) == parse_quantity(text, allow_negative=True)


def test_a_cached_value_is_still_checked_for_sign_each_time():
    assert parse_quantity("-3", allow_negative=True) == -3
    with pytest.raises(QuantityError):
        parse_quantity("-3")
    for _ in range(2):  # errors are not cached away
        with pytest.raises(QuantityError, match="invalid quantity 'x1'"):
            parse_quantity("x1")
