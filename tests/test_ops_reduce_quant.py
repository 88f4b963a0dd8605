"""Reductions against TensorFlow; quantization ops by their defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tensorforge.ir.errors import InferenceError
from tensorforge.ir.ops import get_op
from tensorforge.ir.types import DType, QuantParams, TensorType

from op_helpers import f32, infer, run, ttype  # noqa: F401

RNG = np.random.default_rng(0)




# -- reductions --------------------------------------------------------------------------------

TF_REDUCE = {"reduce_sum": tf.reduce_sum, "reduce_mean": tf.reduce_mean,
             "reduce_max": tf.reduce_max, "reduce_min": tf.reduce_min,
             "reduce_prod": tf.reduce_prod}


@pytest.mark.parametrize("name", sorted(TF_REDUCE))
@pytest.mark.parametrize("shape,axes", [
    ((2, 3, 4), ()), ((2, 3, 4), (1,)), ((2, 3, 4), (0, 2)), ((2, 3, 4), (-1, 0)), ((5,), (0,)),
    ((), ()),
])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduce_matches_tf(name, shape, axes, keepdims):
    x = RNG.uniform(0.5, 1.5, shape).astype(np.float32)
    (out,) = run(name, [x], axes=axes, keepdims=keepdims)
    tf_axes = list(axes) if axes else None
    want = TF_REDUCE[name](x, axis=tf_axes, keepdims=keepdims).numpy()
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(TF_REDUCE))
@pytest.mark.parametrize("dtype", [np.int32, np.int8])
def test_reduce_int_matches_tf(name, dtype):
    # Negative values check that the integer mean truncates toward zero like TF.
    x = RNG.integers(-9, 10, (3, 4, 5)).astype(dtype)
    if name == "reduce_prod":
        x = RNG.integers(-2, 3, (3, 4, 2)).astype(dtype)
    (out,) = run(name, [x], axes=(1,))
    np.testing.assert_array_equal(out, TF_REDUCE[name](x, axis=1).numpy())


@pytest.mark.parametrize("dtype", [DType.bf16, DType.f16, DType.i4, DType.u8])
def test_reduce_keeps_dtype(dtype):
    x = (np.arange(12) % 4).reshape(3, 4).astype(np.int64).astype(dtype.np)
    for name in TF_REDUCE:
        run(name, [x], axes=(0,))


def test_reduce_empty_axis_identities():
    x = np.zeros((0, 3), np.float32)
    (mx,) = run("reduce_max", [x], axes=(0,))
    np.testing.assert_array_equal(mx, tf.reduce_max(x, axis=0).numpy())
    (mn,) = run("reduce_min", [x.astype(np.int32)], axes=(0,))
    np.testing.assert_array_equal(mn, tf.reduce_min(x.astype(np.int32), axis=0).numpy())
    (s,) = run("reduce_sum", [x], axes=(0,))
    np.testing.assert_array_equal(s, np.zeros(3, np.float32))


def test_reduce_symbolic_and_errors():
    assert infer("reduce_sum", [f32("b", 3, "s")], axes=(1,))[0].shape == ("b", "s")
    assert infer("reduce_mean", [f32("b", 3, "s")], axes=(-1,),
                 keepdims=True)[0].shape == ("b", 3, 1)
    assert infer("reduce_max", [f32("b", 3)])[0].shape == ()
    with pytest.raises(InferenceError, match="axis 3 out of range for rank 3"):
        infer("reduce_sum", [f32(2, 3, 4)], axes=(3,))
    with pytest.raises(InferenceError, match="repeat"):
        infer("reduce_sum", [f32(2, 3, 4)], axes=(1, -2))
    with pytest.raises(InferenceError, match="bool"):
        infer("reduce_sum", [TensorType(DType.bool, (2,))])


@pytest.mark.parametrize("name,tf_fn", [("argmax", tf.math.argmax), ("argmin", tf.math.argmin)])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("output_type", [DType.i32, DType.i64])
def test_arg_matches_tf_with_ties(name, tf_fn, axis, output_type):
    x = RNG.integers(0, 3, (4, 5, 6)).astype(np.float32)   # many ties: first index wins
    (out,) = run(name, [x], axis=axis, output_type=output_type)
    want = tf_fn(x, axis=axis, output_type=tf.as_dtype(output_type.np)).numpy()
    assert out.dtype == want.dtype
    np.testing.assert_array_equal(out, want)


def test_arg_symbolic_and_errors():
    t = infer("argmax", [f32("b", 10)], axis=1)[0]
    assert t == TensorType(DType.i64, ("b",))
    with pytest.raises(InferenceError, match="out of range"):
        infer("argmax", [f32(2, 3)], axis=2)
    with pytest.raises(InferenceError, match="empty"):
        infer("argmin", [f32(0, 3)], axis=0)
    with pytest.raises(InferenceError, match="rank >= 1"):
        infer("argmin", [f32()], axis=0)
    op = get_op("argmax")
    assert op.attr_problems(op.complete_attrs({"axis": 0, "output_type": DType.f32}))


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_cumsum_matches_tf(axis, exclusive, reverse, dtype):
    x = (RNG.standard_normal((3, 5, 4)) * 4).astype(dtype)
    (out,) = run("cumsum", [x], axis=axis, exclusive=exclusive, reverse=reverse)
    want = tf.math.cumsum(x, axis=axis, exclusive=exclusive, reverse=reverse).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-5)


def test_cumsum_symbolic_and_errors():
    assert infer("cumsum", [f32("b", "seq")], axis=1)[0] == f32("b", "seq")
    with pytest.raises(InferenceError, match="out of range"):
        infer("cumsum", [f32(2, 3)], axis=2)
    with pytest.raises(InferenceError, match="rank >= 1"):
        infer("cumsum", [f32()])
    with pytest.raises(InferenceError, match="bool"):
        infer("cumsum", [TensorType(DType.bool, (2,))])


# -- quantization ------------------------------------------------------------------------------

def qrange(dtype: DType, narrow: bool = False):
    qp = QuantParams((1.0,), (0,), None, dtype.bits, dtype != DType.u8, narrow)
    return qp.qmin, qp.qmax


QUANT_CASES = [
    # dtype, scale, zero_point, narrow_range
    (DType.i8, (0.05,), (3,), False),
    (DType.i8, (0.02,), (0,), True),
    (DType.u8, (0.1,), (128,), False),
    (DType.i16, (0.001,), (0,), False),
    (DType.i32, (1e-4,), (-5,), False),
    (DType.i4, (0.5,), (-1,), False),
]


@pytest.mark.parametrize("dtype,scale,zp,narrow", QUANT_CASES)
def test_quantize_range_and_roundtrip(dtype, scale, zp, narrow):
    qmin, qmax = qrange(dtype, narrow)
    lo, hi = (qmin - zp[0]) * scale[0], (qmax - zp[0]) * scale[0]
    span = max(hi - lo, 1.0)
    x = RNG.uniform(lo - span, hi + span, (4, 50)).astype(np.float32)  # incl. out of range
    attrs = dict(scale=scale, zero_point=zp)
    (q,) = run("quantize", [x], dtype=dtype, narrow_range=narrow, **attrs)
    qi = q.astype(np.int64)
    assert qi.min() >= qmin and qi.max() <= qmax
    assert qi.min() == qmin and qi.max() == qmax       # saturates at both ends
    (back,) = run("dequantize", [q], **attrs)
    inside = (x >= lo) & (x <= hi)
    assert inside.sum() > 20
    # Half a step, plus float32's own resolution (dominant for i32 codes, where |x| ~ 2e5).
    err = np.abs(back.astype(np.float64) - x) - 4 * np.spacing(np.abs(x))
    assert err[inside].max() <= scale[0] / 2 * (1 + 1e-5)
    (fq,) = run("fake_quant", [x], bits=dtype.bits, signed=dtype != DType.u8,
                narrow_range=narrow, **attrs)
    np.testing.assert_array_equal(fq, back)


def test_quantize_rounds_half_away_from_zero():
    # TFLite's AffineQuantize uses std::round; NumPy's round would give 0, 2, -2.
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997], np.float32)
    (q,) = run("quantize", [x], scale=(1.0,), zero_point=(0,), dtype=DType.i8)
    np.testing.assert_array_equal(q, [1, 2, 3, -1, -3, 0])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_axis(axis):
    x = RNG.uniform(-1, 1, (3, 4)).astype(np.float32)   # inside every slice's range
    n = x.shape[axis]
    scale = tuple(float(s) for s in np.linspace(0.01, 0.04, n))
    zp = tuple(i - 1 for i in range(n))
    attrs = dict(scale=scale, zero_point=zp, axis=axis)
    (q,) = run("quantize", [x], **attrs)
    # Each slice equals a per-tensor quantization with that slice's params.
    for i in range(n):
        (qi,) = run("quantize", [np.take(x, [i], axis=axis)], scale=(scale[i],),
                    zero_point=(zp[i],))
        np.testing.assert_array_equal(np.take(q, [i], axis=axis), qi)
    (back,) = run("dequantize", [q], **attrs)
    (fq,) = run("fake_quant", [x], **attrs)
    np.testing.assert_array_equal(fq, back)
    step = np.array(scale).reshape([-1 if d == axis % 2 else 1 for d in range(2)])
    assert np.all(np.abs(back - x) <= step / 2 * (1 + 1e-5))


def test_dequantize_output_dtype_and_values():
    q = np.array([-128, 0, 5, 127], np.int8)
    (f,) = run("dequantize", [q], scale=(0.5,), zero_point=(1,), dtype=DType.f16)
    np.testing.assert_array_equal(f, np.array([-64.5, -0.5, 2.0, 63.0], np.float16))


@pytest.mark.parametrize("dtype", [DType.bf16, DType.f16, DType.f64])
def test_fake_quant_keeps_dtype(dtype):
    x = RNG.uniform(-1, 1, (2, 8)).astype(dtype.np)
    run("fake_quant", [x], scale=(0.1,), zero_point=(0,), bits=4)


def test_quant_symbolic():
    t = infer("quantize", [f32("b", 4)], scale=(0.1,) * 4, zero_point=(0,) * 4, axis=1)[0]
    assert t == TensorType(DType.i8, ("b", 4))
    # per-axis over a symbolic dim cannot be checked statically
    infer("quantize", [f32("b", 4)], scale=(0.1, 0.2), zero_point=(0, 0), axis=0)


@pytest.mark.parametrize("name,operand,attrs,msg", [
    ("quantize", f32(4), dict(scale=(0.1, 0.2), zero_point=(0,), axis=0), "2 scales but 1"),
    ("quantize", f32(3, 4), dict(scale=(0.1,) * 3, zero_point=(0,) * 3, axis=1),
     "axis 1 has 4 slices but 3 scales"),
    ("quantize", f32(4), dict(scale=(0.1, 0.2), zero_point=(0, 0)), "per-tensor"),
    ("quantize", f32(4), dict(scale=(0.0,), zero_point=(0,)), "positive"),
    ("quantize", f32(4), dict(scale=(-1.0,), zero_point=(0,)), "positive"),
    ("quantize", f32(4), dict(scale=(0.1,), zero_point=(200,)), r"outside \[-128, 127\]"),
    ("quantize", f32(4), dict(scale=(0.1,), zero_point=(-1,), dtype=DType.u8), "outside"),
    ("quantize", f32(4), dict(scale=(0.1,), zero_point=(0,), dtype=DType.f16), "dtype must be"),
    ("quantize", TensorType(DType.i8, (4,)), dict(scale=(0.1,), zero_point=(0,)), "float"),
    ("quantize", f32(4), dict(scale=(0.1,), zero_point=(0,), axis=1), "out of range"),
    ("dequantize", f32(4), dict(scale=(0.1,), zero_point=(0,)), "integer"),
    ("dequantize", TensorType(DType.i4, (4,)), dict(scale=(0.1,), zero_point=(8,)), "outside"),
    ("dequantize", TensorType(DType.i8, (4,)), dict(scale=(0.1,), zero_point=(0,),
                                                    dtype=DType.i32), "float"),
    ("fake_quant", f32(4), dict(scale=(0.1,), zero_point=(0,), bits=1), "bits"),
    ("fake_quant", f32(4), dict(scale=(0.1,), zero_point=(255,), signed=False,
                                narrow_range=True, bits=7), "outside"),
])
def test_quant_errors(name, operand, attrs, msg):
    with pytest.raises(InferenceError, match=msg):
        infer(name, [operand], **attrs)
