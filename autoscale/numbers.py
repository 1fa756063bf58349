"""Comma-separated ASCII numbers to float64, exactly as Python's ``float()`` reads them.

Prometheus answers carry millions of numbers as text; C's ``strtod`` (behind
``numpy.fromstring``) takes about 200 ns each.  Most are short decimals, and
for those a compiled loop gives the same float: when the digits form an
integer ``m ≤ 2**53`` and the decimal exponent ``e`` has ``|e| ≤ 22``, both
``m`` and ``10**|e|`` are exact doubles, so one IEEE multiplication or
division rounds the exact value ``m·10**e`` once, correctly, just as a
correctly rounded parser does (Clinger's fast path).  Every other token (more
digits, big exponents, ``NaN``, ``Inf``, anything odd) is handed to
``float()`` itself, so no input reads differently.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_EXACT_POWERS = np.array([10.0**k for k in range(23)], np.float64)
_MAX_EXACT = 2**53
_COMMA, _MINUS, _PLUS, _DOT, _ZERO, _NINE = (ord(c) for c in ",-+.09")
_LOWER_E, _UPPER_E = ord("e"), ord("E")


@njit(cache=True)
def _parse_kernel(buf: np.ndarray, powers: np.ndarray, out: np.ndarray, slow: np.ndarray) -> tuple[int, int]:
    """Fill ``out`` with the numbers of ``buf``; tokens not on the fast path go
    to ``slow`` as (index, start, end).  Returns (numbers, slow tokens)."""
    n = buf.shape[0]
    count = 0
    slow_count = 0
    start = 0
    while start <= n:
        end = start
        while end < n and buf[end] != _COMMA:
            end += 1
        i = start
        negative = False
        if i < end and (buf[i] == _MINUS or buf[i] == _PLUS):
            negative = buf[i] == _MINUS
            i += 1
        mantissa = 0
        digits = 0
        exponent = 0
        fast = True
        seen_dot = False
        while i < end:
            c = buf[i]
            if _ZERO <= c <= _NINE:
                if mantissa > _MAX_EXACT:
                    fast = False  # more digits than a double holds exactly: float() decides
                else:
                    mantissa = mantissa * 10 + (c - _ZERO)
                    if seen_dot:
                        exponent -= 1
                digits += 1
            elif c == _DOT and not seen_dot:
                seen_dot = True
            else:
                break
            i += 1
        if i < end and (buf[i] == _LOWER_E or buf[i] == _UPPER_E):
            i += 1
            exp_negative = False
            if i < end and (buf[i] == _MINUS or buf[i] == _PLUS):
                exp_negative = buf[i] == _MINUS
                i += 1
            value = 0
            exp_digits = 0
            while i < end and _ZERO <= buf[i] <= _NINE:
                if value < 10_000:
                    value = value * 10 + (buf[i] - _ZERO)
                exp_digits += 1
                i += 1
            if exp_digits == 0:
                fast = False
            exponent += -value if exp_negative else value
        if digits == 0 or i != end or mantissa > _MAX_EXACT or exponent > 22 or exponent < -22:
            fast = False
        if fast:
            number = float(mantissa)
            number = number * powers[exponent] if exponent >= 0 else number / powers[-exponent]
            out[count] = -number if negative else number
        else:
            out[count] = np.nan
            slow[slow_count, 0] = count
            slow[slow_count, 1] = start
            slow[slow_count, 2] = end
            slow_count += 1
        count += 1
        start = end + 1
    return count, slow_count


def parse_numbers(text: bytes) -> np.ndarray:
    """The comma-separated numbers of ``text`` (``b""`` has none).

    Raises ``ValueError`` where ``float()`` would, naming the token.
    """
    if not text:
        return np.empty(0, np.float64)
    buf = np.frombuffer(text, np.uint8)
    tokens = text.count(b",") + 1
    out = np.empty(tokens, np.float64)
    slow = np.empty((tokens, 3), np.int64)
    count, slow_count = _parse_kernel(buf, _EXACT_POWERS, out, slow)
    assert count == tokens
    taken = slow[:slow_count]
    for index, start, end in zip(taken[:, 0].tolist(), taken[:, 1].tolist(), taken[:, 2].tolist(), strict=True):
        token = text[start:end]
        try:
            out[index] = float(token)
        except ValueError:
            raise ValueError(f"not a number: {token[:40]!r}") from None
    return out
