"""The vectorised reference kernels (im2col convolutions, one-product transposed convolutions,
2-D matmuls, ufunc erf) against straightforward per-tap / per-element float64 loops, on random
shapes, strides, dilations, paddings and groups: equal to ~1e-12 relative (both accumulate in
float64), integer matmuls exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tensorforge.ir.ops import get_op
from tensorforge.ir.ops.nn import _pads, _spatial, _transpose_out_dim
from tensorforge.ir.ops.registry import run_kernel


def _run(op, ins, **attrs):
    opdef = get_op(op)
    full = {k: a.default for k, a in opdef.attrs.items()}
    full.update(attrs)
    return run_kernel(opdef, ins, full)[0]


def _conv_loop(x, f, strides, dilations, pad, groups):
    """conv2d by the definition: a float64 sum over taps and input channels of each group."""
    n, h, w, c = x.shape
    kh, kw, ci, co = f.shape
    oh, ow = _spatial(h, w, kh, kw, strides, dilations, pad, "conv2d")
    ph, pw = (pad, pad) if isinstance(pad, str) else pad
    pt, _ = _pads(h, oh, kh, strides[0], dilations[0], ph)
    pl, _ = _pads(w, ow, kw, strides[1], dilations[1], pw)
    out = np.zeros((n, oh, ow, co))
    m = co // groups
    x64, f64 = x.astype(np.float64), f.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            for y in range(oh):
                r = y * strides[0] + i * dilations[0] - pt
                if not 0 <= r < h:
                    continue
                for xx in range(ow):
                    s = xx * strides[1] + j * dilations[1] - pl
                    if not 0 <= s < w:
                        continue
                    for g in range(groups):
                        out[:, y, xx, g * m:(g + 1) * m] += \
                            x64[:, r, s, g * ci:(g + 1) * ci] @ f64[i, j, :, g * m:(g + 1) * m]
    return out


def _rel(got, want):
    scale = max(float(np.max(np.abs(want))), 1e-30) if want.size else 1.0
    return float(np.max(np.abs(got.astype(np.float64) - want))) / scale if want.size else 0.0


CONV_CASES = [
    # (n, h, w, c, kh, kw, co, strides, dilations, padding, groups)
    (2, 9, 7, 3, 3, 3, 4, (1, 1), (1, 1), "SAME", 1),
    (1, 10, 11, 4, 3, 2, 5, (2, 3), (1, 1), "VALID", 1),
    (2, 12, 12, 6, 3, 3, 6, (1, 1), (2, 2), "SAME", 1),
    (1, 8, 8, 8, 1, 1, 16, (2, 2), (1, 1), "VALID", 1),
    (3, 7, 9, 4, 2, 3, 8, (1, 2), (1, 1), ((1, 2), (0, 3)), 1),
    (2, 9, 9, 6, 3, 3, 6, (1, 1), (1, 1), "SAME", 6),     # depthwise as groups
    (1, 9, 9, 4, 3, 3, 8, (2, 2), (1, 1), "SAME", 4),     # depthwise, multiplier 2
    (2, 8, 8, 6, 3, 3, 9, (1, 1), (2, 1), "SAME", 3),     # grouped
    (1, 7, 7, 8, 2, 2, 4, (1, 1), (1, 1), "VALID", 2),
    (0, 5, 5, 2, 3, 3, 2, (1, 1), (1, 1), "SAME", 1),     # empty batch
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_the_definition(case):
    n, h, w, c, kh, kw, co, strides, dilations, pad, groups = case
    rng = np.random.default_rng(sum(map(hash, map(str, case))) % 2**32)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    f = rng.standard_normal((kh, kw, c // groups, co)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    got = _run("conv2d", [x, f, b], strides=strides, dilations=dilations, padding=pad,
               groups=groups, activation="relu")
    want = np.maximum(_conv_loop(x, f, strides, dilations, pad, groups) + b, 0)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _rel(got, want) < 1e-6      # float32 rounding of the result only


def test_conv2d_large_input_is_chunked(monkeypatch):
    """Inputs past the im2col chunk are gathered in bands of rows, with the same result."""
    from tensorforge.ir.ops import nn

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 13, 11, 5)).astype(np.float32)
    f = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    want = _run("conv2d", [x, f], padding="SAME")
    for chunk in (1, 200, 2000):
        monkeypatch.setattr(nn, "_IM2COL_CHUNK", chunk)
        np.testing.assert_array_equal(_run("conv2d", [x, f], padding="SAME"), want)


@pytest.mark.parametrize("case", [
    (2, 5, 4, 3, 3, 3, 2, (2, 2), (1, 1), "SAME"),
    (1, 4, 6, 2, 2, 3, 3, (1, 2), (1, 1), "VALID"),
    (2, 3, 3, 4, 3, 3, 5, (2, 2), (2, 1), "VALID"),
])
def test_conv2d_transpose_matches_per_tap_scatter(case):
    n, h, w, ci, kh, kw, co, strides, dilations, pad = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, h, w, ci)).astype(np.float32)
    f = rng.standard_normal((kh, kw, co, ci)).astype(np.float32)
    got = _run("conv2d_transpose", [x, f], strides=strides, dilations=dilations, padding=pad)
    oh = _transpose_out_dim(h, kh, strides[0], dilations[0], pad, None, "t", "h")
    ow = _transpose_out_dim(w, kw, strides[1], dilations[1], pad, None, "t", "w")
    pt, _ = _pads(oh, h, kh, strides[0], dilations[0], pad)
    pl, _ = _pads(ow, w, kw, strides[1], dilations[1], pad)
    want = np.zeros((n, oh, ow, co))
    for y in range(h):
        for xx in range(w):
            for i in range(kh):
                for j in range(kw):
                    r = y * strides[0] + i * dilations[0] - pt
                    s = xx * strides[1] + j * dilations[1] - pl
                    if 0 <= r < oh and 0 <= s < ow:
                        want[:, r, s] += x[:, y, xx].astype(np.float64) @ \
                            f[i, j].astype(np.float64).T
    assert got.shape == want.shape and _rel(got, want) < 1e-6


@pytest.mark.parametrize("shapes, ta, tb", [
    (((2, 3, 4, 5), (5, 6)), False, False),
    (((2, 3, 5, 4), (6, 5)), True, True),
    (((4, 5), (5, 3)), False, False),
    (((2, 4, 5), (2, 5, 3)), False, False),
    (((1, 4, 5), (3, 5, 2)), False, False),
    (((0, 4, 5), (5, 2)), False, False),
    (((2, 4, 0), (0, 2)), False, False),
])
def test_matmul_matches_numpy(shapes, ta, tb):
    rng = np.random.default_rng(3)
    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = rng.standard_normal(shapes[1]).astype(np.float32)
    got = _run("matmul", [a, b], transpose_a=ta, transpose_b=tb)
    a64 = np.swapaxes(a, -1, -2).astype(np.float64) if ta else a.astype(np.float64)
    b64 = np.swapaxes(b, -1, -2).astype(np.float64) if tb else b.astype(np.float64)
    want = np.matmul(a64, b64)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _rel(got, want) < 1e-6
    ai = rng.integers(-100, 100, shapes[0]).astype(np.int32)
    bi = rng.integers(-100, 100, shapes[1]).astype(np.int32)
    wi = np.matmul(np.swapaxes(ai, -1, -2) if ta else ai, np.swapaxes(bi, -1, -2) if tb else bi)
    np.testing.assert_array_equal(_run("matmul", [ai, bi], transpose_a=ta, transpose_b=tb), wi)


def test_erf_is_float64_accurate():
    x = np.concatenate([np.linspace(-7, 7, 2001), [0.0, 1e-300, np.inf, -np.inf, np.nan]])
    got = _run("erf", [x])
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
    x32 = x.astype(np.float32)
    assert _run("erf", [x32]).dtype == np.float32


@pytest.mark.parametrize("strides, dilations, pad", [((1, 1, 1), (1, 1, 1), "SAME"),
                                                     ((2, 1, 2), (1, 2, 1), "VALID")])
def test_conv3d_matches_the_definition(strides, dilations, pad):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 6, 5, 3)).astype(np.float32)
    f = rng.standard_normal((2, 3, 2, 3, 4)).astype(np.float32)
    got = _run("conv3d", [x, f], strides=strides, dilations=dilations, padding=pad)
    from tensorforge.ir.ops.nn import _out_dim

    out = [_out_dim(s, k, st, d, pad, "conv3d", "") for s, k, st, d in
           zip(x.shape[1:4], f.shape[:3], strides, dilations)]
    pads = [_pads(s, o, k, st, d, pad)[0] for s, o, k, st, d in
            zip(x.shape[1:4], out, f.shape[:3], strides, dilations)]
    want = np.zeros((2, *out, 4))
    for o in np.ndindex(*out):
        for t in np.ndindex(*f.shape[:3]):
            src = [oi * st + ti * d - p for oi, ti, st, d, p in
                   zip(o, t, strides, dilations, pads)]
            if all(0 <= s < n for s, n in zip(src, x.shape[1:4])):
                want[(slice(None), *o)] += x[(slice(None), *src)].astype(np.float64) @ \
                    f[t].astype(np.float64)
    assert got.shape == want.shape and _rel(got, want) < 1e-6


# -- float32 accumulation (verification's IR run) ------------------------------------------------

def _gemm_dtypes(monkeypatch) -> list:
    """Records the dtype of the left operand of every BLAS product the kernels make."""
    from tensorforge.ir.ops import nn

    seen, real = [], nn._gemm
    monkeypatch.setattr(nn, "_gemm", lambda a, b: seen.append(a.dtype) or real(a, b))
    return seen


@pytest.mark.parametrize("case", CONV_CASES)
def test_float32_accumulation_stays_within_float32_rounding(case, monkeypatch):
    """Under `float_accumulation(np.float32)` every product is float32 (plain and grouped
    convs) and the results stay within float32 accumulation error of the float64
    reference; outside the block the kernels are float64 again, bit for bit."""
    from tensorforge.ir.ops import nn

    n, h, w, c, kh, kw, co, strides, dilations, pad, groups = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    f = rng.standard_normal((kh, kw, c // groups, co)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    attrs = dict(strides=strides, dilations=dilations, padding=pad, groups=groups,
                 activation="relu6")
    want = _run("conv2d", [x, f, b], **attrs)
    seen = _gemm_dtypes(monkeypatch)
    with nn.float_accumulation(np.float32):
        got = _run("conv2d", [x, f, b], **attrs)
    assert set(seen) <= {np.dtype(np.float32)}
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _rel(got, want) < 1e-5
    assert _run("conv2d", [x, f, b], **attrs).tobytes() == want.tobytes()


def test_float32_accumulation_of_transposed_convs_and_matmuls(monkeypatch):
    from tensorforge.ir.ops import nn

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    f = rng.standard_normal((3, 3, 4, 3)).astype(np.float32)
    a16 = rng.standard_normal((2, 3, 6)).astype(np.float16)
    b16 = rng.standard_normal((6, 4)).astype(np.float16)
    bias16 = rng.standard_normal(4).astype(np.float16)
    cases = [("conv2d_transpose", [x, f], dict(strides=(2, 2), padding="SAME")),
             ("matmul", [a16, b16, bias16], dict(activation="tanh"))]
    for op, ins, attrs in cases:
        want = _run(op, ins, **attrs)
        seen = _gemm_dtypes(monkeypatch)
        with nn.float_accumulation(np.float32):
            got = _run(op, ins, **attrs)
        assert seen and set(seen) == {np.dtype(np.float32)}, op
        assert got.dtype == want.dtype and _rel(got, want) < 1e-3, op
    # float64 operands are not narrowed
    a64, b64 = a16.astype(np.float64), b16.astype(np.float64)
    seen = _gemm_dtypes(monkeypatch)
    with nn.float_accumulation(np.float32):
        got = _run("matmul", [a64, b64])
    assert set(seen) == {np.dtype(np.float64)}
    assert got.tobytes() == _run("matmul", [a64, b64]).tobytes()


def _sums_in_float32(op, **attrs) -> bool:
    """1e8 + 3 + 3 over three taps: 1e8 in float32 arithmetic (its spacing there is 8),
    1e8 + 6, rounded to 1e8 + 8, in float64."""
    from tensorforge.ir.ops import nn

    x = np.array([1e8, 3.0, 3.0], np.float32).reshape(1, 1, 3, 1)
    f = np.ones((1, 3, 1, 1), np.float32)
    assert _run(op, [x, f], padding="VALID", **attrs).ravel().tolist() == [100000008.0]
    with nn.float_accumulation(np.float32):
        return _run(op, [x, f], padding="VALID", **attrs).ravel().tolist() == [1e8]


def test_float32_accumulation_is_float32_arithmetic():
    from tensorforge.ir.ops import nn

    # (BLAS products may sum in any order or with fused multiply-adds: the plain conv and
    # matmul are checked by their float32 operands above.)
    assert _sums_in_float32("depthwise_conv2d")
    with pytest.raises(ValueError):
        with nn.float_accumulation(np.float16):
            pass


def test_grouped_depthwise_path_sums_in_float32():
    """conv2d with one input channel per group (the grouped path's depthwise branch)."""
    from tensorforge.ir.ops import nn

    x = np.tile(np.array([1e8, 3.0, 3.0], np.float32).reshape(1, 1, 3, 1), (1, 1, 1, 2))
    f = np.ones((1, 3, 1, 2), np.float32)
    wide = _run("conv2d", [x, f], padding="VALID", groups=2)
    with nn.float_accumulation(np.float32):
        narrow = _run("conv2d", [x, f], padding="VALID", groups=2)
    assert wide.ravel().tolist() == [100000008.0] * 2 and narrow.ravel().tolist() == [1e8] * 2
