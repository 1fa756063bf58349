"""Go's ``math.Log``, ``math.Pow`` (integer exponents) and ``math.Exp2``, bit for bit.

The VPA recommender is Go, and its histogram numbers come out of Go's own
float routines, not the C library's: ``math.Pow(1.05, n)`` in Go multiplies
mantissas by repeated squaring and differs from C's ``pow`` in the last bit
for almost every ``n`` (196 of the first 199).  Bucket boundaries, and so the
percentiles VPA reports, sit on those last bits, so we port the three
routines VPA uses on linux/amd64 (the platform its images ship for):

* ``Log``: amd64 uses ``log_amd64.s``, which performs exactly the operations
  of the pure-Go ``log`` (FreeBSD ``e_log.c``) in the same order.
* ``Pow``: pure Go.  Only integer exponents are needed (bucket indices and the
  confidence exponents 1 and -2); a fractional exponent would need Go's
  ``Exp``, which is assembly on amd64, so we refuse it rather than guess.
* ``Exp2``: pure Go on amd64.

Go on amd64 does not fuse multiply-add (GOAMD64=v1) and neither does numba
without fastmath, so plain Python float arithmetic reproduces every rounding.
These functions use only ``math`` calls numba understands and are registered
with ``numba.extending.register_jitable``: Python code calls them as they are,
and the batch kernels in :mod:`tfsched.autoscale.bank` compile the very same source.
"""

from __future__ import annotations

import math

from numba.extending import register_jitable

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_L1 = 6.666666666666735130e-01
_L2 = 3.999999999940941908e-01
_L3 = 2.857142874366239149e-01
_L4 = 2.222219843214978396e-01
_L5 = 1.818357216161805012e-01
_L6 = 1.531383769920937332e-01
_L7 = 1.479819860511658591e-01
_SQRT2_HALF = 7.07106781186547524401e-01

_P1 = 1.66666666666666657415e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08
_EXP2_OVERFLOW = 1.0239999999999999e03
_EXP2_UNDERFLOW = -1.0740e03


@register_jitable
def ldexp(m: float, e: int) -> float:
    """``m × 2**e`` like Go's ``math.Ldexp``: overflow gives ±Inf instead of raising."""
    if m == 0.0 or math.isnan(m) or math.isinf(m):
        return m
    frac, exp = math.frexp(m)
    total = exp + e
    if total > 1024:
        return math.copysign(math.inf, m)
    if total < -1100:
        return math.copysign(0.0, m)
    return math.ldexp(frac, total)


@register_jitable
def go_log(x: float) -> float:
    """Natural logarithm exactly as Go's ``math.Log`` computes it on amd64."""
    if math.isnan(x) or (math.isinf(x) and x > 0):
        return x
    if x < 0.0:
        return math.nan
    if x == 0.0:
        return -math.inf
    f1, ki = math.frexp(x)
    if f1 < _SQRT2_HALF:
        f1 *= 2.0
        ki -= 1
    f = f1 - 1.0
    k = float(ki)
    s = f / (2.0 + f)
    s2 = s * s
    s4 = s2 * s2
    t1 = s2 * (_L1 + s4 * (_L3 + s4 * (_L5 + s4 * _L7)))
    t2 = s4 * (_L2 + s4 * (_L4 + s4 * _L6))
    r = t1 + t2
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


@register_jitable
def go_pow(x: float, y: float) -> float:
    """``x**y`` exactly as Go's ``math.Pow`` for an integer-valued ``y``."""
    if y == 0.0 or x == 1.0:
        return 1.0
    if y == 1.0:
        return x
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if math.floor(y) != y or math.isinf(y):
        raise ValueError("go_pow supports integer exponents only")
    odd = abs(y) % 2.0 == 1.0
    if x == 0.0:
        if y < 0.0:
            return math.copysign(math.inf, x) if odd else math.inf
        return x if odd else 0.0
    if math.isinf(x):
        if x < 0.0:
            # Go: Pow(-Inf, y) = Pow(-0, -y), spelled out to avoid recursion.
            if y > 0.0:
                return -math.inf if odd else math.inf
            return -0.0 if odd else 0.0
        return 0.0 if y < 0.0 else math.inf
    a1 = 1.0
    ae = 0
    x1, xe = math.frexp(x)
    i = int(abs(y))
    while i != 0:
        if xe < -(1 << 12) or xe > (1 << 12):
            # Go stops squaring here; the final Ldexp under/overflows anyway.
            ae += xe
            break
        if i & 1 == 1:
            a1 *= x1
            ae += xe
        x1 *= x1
        xe <<= 1
        if x1 < 0.5:
            x1 += x1
            xe -= 1
        i >>= 1
    if y < 0.0:
        a1 = 1.0 / a1
        ae = -ae
    return ldexp(a1, ae)


@register_jitable
def go_exp2(x: float) -> float:
    """``2**x`` exactly as Go's ``math.Exp2`` computes it (pure Go on amd64)."""
    if math.isnan(x) or (math.isinf(x) and x > 0):
        return x
    if math.isinf(x):
        return 0.0
    if x > _EXP2_OVERFLOW:
        return math.inf
    if x < _EXP2_UNDERFLOW:
        return 0.0
    k = 0
    if x > 0.0:
        k = int(x + 0.5)
    elif x < 0.0:
        k = int(x - 0.5)
    t = x - float(k)
    hi = t * _LN2_HI
    lo = -t * _LN2_LO
    r = hi - lo
    tt = r * r
    c = r - tt * (_P1 + tt * (_P2 + tt * (_P3 + tt * (_P4 + tt * _P5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    return ldexp(y, k)


@register_jitable
def go_round(x: float) -> int:
    """VPA's ``round``: ``int(math.Floor(x + 0.5))``."""
    return math.floor(x + 0.5)
