"""Decompositions the frontends share: functions with no IR op of their own, written with the
ops every target runs (TFLite, SavedModel, TF.js, JAX), so that a JAX primitive and the TF op
of the same function lift to the same IR.

Each takes a builder `b` with `b.op(name, inputs, attrs=None) -> value`,
`b.scalar(value, like) -> value` (a constant in `like`'s dtype), `b.const(array) -> value` (an
array constant) and `b.shape(value) -> list` (its dims: ints, or symbols for run-time sizes),
over the frontend's own entries. The approximations keep float32 accuracy over the whole domain
where the plain formula would not (asinh on |x| with the sign put back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Builder:
    """A frontend's way to add nodes: `op(name, inputs, attrs=None)`, `scalar(value, like)`,
    `const(array)` and `shape(value)` (a list of dims; a run-time size is not an int)."""

    op: Callable[..., Any]
    scalar: Callable[[Any, Any], Any]
    const: Callable[[np.ndarray], Any]
    shape: Callable[[Any], list]


def atan(b, x):
    """atan(x) = atan2(x, 1)."""
    return b.op("atan2", [x, b.scalar(1, x)])


def _sqrt_one_minus_square(b, x):
    return b.op("sqrt", [b.op("sub", [b.scalar(1, x), b.op("mul", [x, x])])])


def asin(b, x):
    """asin(x) = atan2(x, sqrt(1 - x^2))."""
    return b.op("atan2", [x, _sqrt_one_minus_square(b, x)])


def acos(b, x):
    """acos(x) = atan2(sqrt(1 - x^2), x)."""
    return b.op("atan2", [_sqrt_one_minus_square(b, x), x])


def tan(b, x):
    return b.op("div", [b.op("sin", [x]), b.op("cos", [x])])


def _exp_pair(b, x):
    return b.op("exp", [x]), b.op("exp", [b.op("neg", [x])])


def sinh(b, x):
    e, inv = _exp_pair(b, x)
    return b.op("mul", [b.op("sub", [e, inv]), b.scalar(0.5, x)])


def cosh(b, x):
    e, inv = _exp_pair(b, x)
    return b.op("mul", [b.op("add", [e, inv]), b.scalar(0.5, x)])


def asinh(b, x):
    """sign(x) * log(|x| + sqrt(x^2 + 1)): on |x|, so large negative x stays accurate."""
    ax = b.op("abs", [x])
    root = b.op("sqrt", [b.op("add", [b.op("mul", [ax, ax]), b.scalar(1, x)])])
    return b.op("mul", [b.op("sign", [x]), b.op("log", [b.op("add", [ax, root])])])


def acosh(b, x):
    root = b.op("sqrt", [b.op("sub", [b.op("mul", [x, x]), b.scalar(1, x)])])
    return b.op("log", [b.op("add", [x, root])])


def atanh(b, x):
    one = b.scalar(1, x)
    ratio = b.op("div", [b.op("add", [one, x]), b.op("sub", [one, x])])
    return b.op("mul", [b.op("log", [ratio]), b.scalar(0.5, x)])


def log1p(b, x):
    return b.op("log", [b.op("add", [x, b.scalar(1, x)])])


def expm1(b, x):
    return b.op("sub", [b.op("exp", [x]), b.scalar(1, x)])


def isnan(b, x):
    """NaN is the only value not equal to itself."""
    return b.op("not_equal", [x, x])


def isinf(b, x):
    return b.op("equal", [b.op("abs", [x]), b.scalar(np.inf, x)])


def isfinite(b, x):
    return b.op("is_finite", [x])


UNARY = {"atan": atan, "asin": asin, "acos": acos, "tan": tan, "sinh": sinh, "cosh": cosh,
         "asinh": asinh, "acosh": acosh, "atanh": atanh, "log1p": log1p, "expm1": expm1,
         "isnan": isnan, "isinf": isinf, "isfinite": isfinite}


# -- modified Bessel functions of orders 0 and 1 (TF's BesselI0/I0e/I1/I1e, JAX's bessel_i0e
# and bessel_i1e). Cephes's single-precision Chebyshev expansions (i0ef.c, i1ef.c), the ones
# Eigen's kernels evaluate for float32 (peak relative error about 4e-7 and 1.5e-6 on [0, 30]):
# one series in |x|/2 - 2 on [0, 8], one in 32/|x| - 2 times 1/sqrt|x| beyond.

_I0E_SMALL = (-1.30002500998624804212e-8, 6.04699502254191894932e-8, -2.67079385394061173391e-7,
              1.11738753912010371815e-6, -4.41673835845875056359e-6, 1.64484480707288970893e-5,
              -5.75419501008210370398e-5, 1.88502885095841655729e-4, -5.76375574538582365885e-4,
              1.63947561694133579842e-3, -4.32430999505057594430e-3, 1.05464603945949983183e-2,
              -2.37374148058994688156e-2, 4.93052842396707084878e-2, -9.49010970480476444210e-2,
              1.71620901522208775349e-1, -3.04682672343198398683e-1, 6.76795274409476084995e-1)
_I0E_LARGE = (3.39623202570838634515e-9, 2.26666899049817806459e-8, 2.04891858946906374183e-7,
              2.89137052083475648297e-6, 6.88975834691682398426e-5, 3.36911647825569408990e-3,
              8.04490411014108831608e-1)
_I1E_SMALL = (9.38153738649577178388e-9, -4.44505912879632808065e-8, 2.00329475355213526229e-7,
              -8.56872026469545474066e-7, 3.47025130813767847674e-6, -1.32731636560394358279e-5,
              4.78156510755005422638e-5, -1.61760815825896745588e-4, 5.12285956168575772895e-4,
              -1.51357245063125314899e-3, 4.15642294431288815669e-3, -1.05640848946261981558e-2,
              2.47264490306265168283e-2, -5.29459812080949914269e-2, 1.02643658689847095384e-1,
              -1.76416518357834055153e-1, 2.52587186443633654823e-1)
_I1E_LARGE = (-3.83538038596423702205e-9, -2.63146884688951950684e-8, -2.51223623787020892529e-7,
              -3.88256480887769039346e-6, -1.10588938762623716291e-4, -9.76109749136146840777e-3,
              7.78576235018280120474e-1)


def _chebyshev(b, t, coefs):
    """Cephes's chbevl: sum'_i c_i T_i(t / 2) by Clenshaw's recurrence, highest order first
    (b0 = t * b1 - b2 + c; the result is (b0 - b2) / 2)."""
    b0, b1, b2 = b.scalar(coefs[0], t), None, None
    for c in coefs[1:]:
        b2, b1 = b1, b0
        b0 = b.op("mul", [t, b1])
        if b2 is not None:
            b0 = b.op("sub", [b0, b2])
        b0 = b.op("add", [b0, b.scalar(c, t)])
    return b.op("mul", [b.op("sub", [b0, b2]), b.scalar(0.5, t)])


def _bessel_e(b, x, small, large, odd: bool):
    """exp(-|x|) I_n(|x|) from the two Cephes series (n = 1 when `odd`: the small series is
    then multiplied by |x|)."""
    ax = b.op("abs", [x])
    near = _chebyshev(b, b.op("sub", [b.op("mul", [ax, b.scalar(0.5, x)]), b.scalar(2, x)]),
                      small)
    if odd:
        near = b.op("mul", [near, ax])
    # The far series at max(|x|, 8): below 8 it is not selected, and 32/0 would make inf/NaN.
    far_x = b.op("maximum", [ax, b.scalar(8, x)])
    far = b.op("mul", [_chebyshev(b, b.op("sub", [b.op("div", [b.scalar(32, x), far_x]),
                                                  b.scalar(2, x)]), large),
                       b.op("rsqrt", [far_x])])
    return b.op("where", [b.op("less_equal", [ax, b.scalar(8, x)]), near, far])


def bessel_i0e(b, x):
    """exp(-|x|) I0(x) (tf.math.special.bessel_i0e, lax.bessel_i0e)."""
    return _bessel_e(b, x, _I0E_SMALL, _I0E_LARGE, False)


def bessel_i1e(b, x):
    """exp(-|x|) I1(x), odd in x (tf.math.special.bessel_i1e, lax.bessel_i1e)."""
    y = _bessel_e(b, x, _I1E_SMALL, _I1E_LARGE, True)
    return b.op("where", [b.op("less", [x, b.scalar(0, x)]), b.op("neg", [y]), y])


def _unscaled(b, x, scaled):
    """I_n(x) = exp(|x|) * (exp(-|x|) I_n(x)), as exp(|x|/2) twice: exp(|x|) alone overflows
    float32 from |x| = 88.7 on, where I_n itself is finite up to about 91.9."""
    half = b.op("exp", [b.op("mul", [b.op("abs", [x]), b.scalar(0.5, x)])])
    return b.op("mul", [b.op("mul", [scaled, half]), half])


def bessel_i0(b, x):
    """I0(x) (tf.math.bessel_i0)."""
    return _unscaled(b, x, bessel_i0e(b, x))


def bessel_i1(b, x):
    """I1(x) (tf.math.bessel_i1)."""
    return _unscaled(b, x, bessel_i1e(b, x))


UNARY.update({"bessel_i0": bessel_i0, "bessel_i0e": bessel_i0e, "bessel_i1": bessel_i1,
              "bessel_i1e": bessel_i1e})
