"""Kubernetes quantities: the one parser and formatter for TFLOPS and VRAM values.

Kubernetes accepts decimal SI suffixes (``500m``, ``2k``), binary suffixes
(``10Gi``) and decimal exponents (``1e3``).  Everything in tfsched that reads a
quantity goes through :func:`parse_quantity`, so a value means the same in an
annotation, a CRD field, a CLI flag and a usage trace.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal, DecimalException

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))(?:(?P<exp>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$"
)


# No real quantity needs a larger exponent; it bounds the Decimal work an annotation can ask for.
MAX_EXPONENT = 30


class QuantityError(ValueError):
    """A string that is not a valid, non-negative Kubernetes quantity."""


MAX_CACHED_TEXT = 64  # longer strings are no quantity anyone writes: parsed, never kept


@functools.lru_cache(maxsize=1024)
def _parse_text(value: str) -> float:
    text = value.strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise QuantityError(f"invalid quantity {value!r}")
    if match["exp"] and abs(int(match["exp"][1:])) > MAX_EXPONENT:
        raise QuantityError(f"invalid quantity {value!r}: exponent beyond ±{MAX_EXPONENT}")
    try:
        mantissa = Decimal(match["num"])
        if match["exp"]:
            scaled = mantissa * Decimal(10) ** int(match["exp"][1:])
        elif match["suffix"] in _BINARY:
            scaled = mantissa * _BINARY[match["suffix"]]
        else:
            scaled = mantissa * _DECIMAL[match["suffix"] or ""]
    except (DecimalException, OverflowError) as exc:
        raise QuantityError(f"invalid quantity {value!r}") from exc
    return float(scaled)


def parse_quantity(value: str | int | float, *, allow_negative: bool = False) -> float:
    """Parse a Kubernetes quantity into a float in base units.

    ``"10Gi"`` → 10737418240.0, ``"500m"`` → 0.5, ``"1.5"`` → 1.5, ``"1e3"`` → 1000.0.
    Raises :class:`QuantityError` with the offending text on anything else,
    including negative values unless ``allow_negative``.
    """
    if isinstance(value, str):  # the usual case first
        # Thousands of GPUs and pods carry the same few values: each is parsed once.
        number = _parse_text(value) if len(value) <= MAX_CACHED_TEXT else _parse_text.__wrapped__(value)
    elif isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: expected a number or a string")
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise QuantityError(f"invalid quantity {value!r}: expected a number or a string")
    if not math.isfinite(number):
        raise QuantityError(f"invalid quantity {value!r}: not finite")
    if number < 0 and not allow_negative:
        raise QuantityError(f"invalid quantity {value!r}: must not be negative")
    return number


MILLI_PER_TFLOPS = 1000


def milli_tflops(tflops: float) -> int:
    """TFLOPS → whole milli-TFLOPS, rounded up: the one rounding rule for TFLOPS.

    Requests are accounted, written back and recommended in these units, so a
    value never asks for less than was computed (``round(…, 6)`` first, so
    ``0.1 + 0.2`` is 300m and not 301m).
    """
    return math.ceil(round(tflops * MILLI_PER_TFLOPS, 6))


def whole_bytes(vram: float) -> int:
    """Bytes → whole bytes, rounded up: the one rounding rule for VRAM."""
    return math.ceil(vram)


MIB = 2**20


def whole_mebibytes(vram: float) -> int:
    """Bytes → bytes rounded up to a whole Mi: VRAM where exact bytes are not needed.

    What people read (reasons, events, condition messages) and what the
    recommender proposes (a byte-exact VRAM recommendation means nothing) use
    this; what the ledger accounts and bind writes stay :func:`whole_bytes`.
    """
    return math.ceil(whole_bytes(vram) / MIB) * MIB


def format_bytes(value: float, *, exact: bool = True) -> str:
    """Format a byte count as Kubernetes would: ``10Gi``, ``512Mi``, ``2422Mi``.

    ``exact`` (annotations, the ledger's values, GPU capacity): the largest
    binary suffix that divides the value is used, anything else is written as
    a whole number of bytes (rounded up), so parsing the text gives back
    exactly the bytes that were accounted.  ``exact=False`` (for reading:
    reasons, events, messages): rounded up to a whole Mi first, so
    ``2539377048`` reads ``2422Mi`` and ``17179869000`` reads ``16Gi``.
    """
    if value <= 0:
        return "0"
    whole = whole_bytes(value) if exact else whole_mebibytes(value)
    for suffix, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if whole % factor == 0:
            return f"{whole // factor}{suffix}"
    return str(whole)


def format_tflops(value: float) -> str:
    """Format a TFLOPS value as a Kubernetes quantity with milli precision.

    Rounded up to the next thousandth so a formatted request never asks for
    less than the computed one: 12.3456 → ``12346m``, 13.0 → ``13``.
    """
    if value <= 0:
        return "0"
    millis = milli_tflops(value)
    if millis % MILLI_PER_TFLOPS == 0:
        return str(millis // MILLI_PER_TFLOPS)
    return f"{millis}m"
