"""Elementwise reference kernels against real TensorFlow, plus inference rules."""

import numpy as np
import pytest
import tensorflow as tf

from tensorforge.ir import DType, InferenceError, TensorType
from tensorforge.ir.ops import get_op

RNG = np.random.default_rng(0)
X = (RNG.standard_normal((3, 5)) * 4).astype(np.float32)
POS = np.abs(X) + 0.1

UNARY = [
    ("neg", X, {}, tf.negative), ("abs", X, {}, tf.abs), ("exp", X, {}, tf.exp),
    ("log", POS, {}, tf.math.log), ("sqrt", POS, {}, tf.sqrt), ("rsqrt", POS, {}, tf.math.rsqrt),
    ("tanh", X, {}, tf.tanh), ("sin", X, {}, tf.sin), ("cos", X, {}, tf.cos),
    ("sigmoid", X, {}, tf.sigmoid), ("erf", X, {}, tf.math.erf),
    ("relu", X, {}, tf.nn.relu), ("relu6", X, {}, tf.nn.relu6),
    ("leaky_relu", X, {"alpha": 0.3}, lambda x: tf.nn.leaky_relu(x, 0.3)),
    ("gelu", X, {}, lambda x: tf.nn.gelu(x, approximate=False)),
    ("gelu", X, {"approximate": True}, lambda x: tf.nn.gelu(x, approximate=True)),
    ("hard_swish", X, {}, lambda x: x * tf.nn.relu6(x + 3) / 6),
    ("hard_sigmoid", X, {}, lambda x: tf.nn.relu6(x + 3) / 6),
    ("softplus", X, {}, tf.nn.softplus), ("sign", X, {}, tf.sign), ("floor", X, {}, tf.floor),
    ("ceil", X, {}, tf.math.ceil),
    ("round", np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.4], np.float32), {}, tf.round),
    ("clip", X, {"min": -1.0, "max": 2.0}, lambda x: tf.clip_by_value(x, -1.0, 2.0)),
]


@pytest.mark.parametrize("op, x, attrs, ref", UNARY, ids=[f"{u[0]}-{i}" for i, u in enumerate(UNARY)])
def test_unary_matches_tf(op, x, attrs, ref):
    d = get_op(op)
    a = d.complete_attrs(attrs)
    [out] = d.kernel([x], a)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_allclose(out, ref(tf.constant(x)).numpy(), rtol=1e-5, atol=1e-6)
    [t] = d.infer([TensorType(DType.f32, ("batch", 5))], a)
    assert t == TensorType(DType.f32, ("batch", 5))


BINARY = [("add", tf.add), ("sub", tf.subtract), ("mul", tf.multiply), ("div", tf.divide),
          ("maximum", tf.maximum), ("minimum", tf.minimum), ("equal", tf.equal),
          ("less", tf.less), ("greater", tf.greater), ("floor_div", tf.math.floordiv),
          ("floor_mod", tf.math.floormod)]


@pytest.mark.parametrize("op, ref", BINARY)
@pytest.mark.parametrize("shapes", [((3, 5), (3, 5)), ((3, 1), (1, 5)), ((2, 3, 5), (5,)), ((), (4,))])
def test_binary_broadcasting_matches_tf(op, ref, shapes):
    a = RNG.integers(-3, 4, shapes[0]).astype(np.float32)
    b = RNG.integers(1, 4, shapes[1]).astype(np.float32)
    d = get_op(op)
    [out] = d.kernel([a, b], {})
    expected = ref(tf.constant(a), tf.constant(b)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    [t] = d.infer([TensorType(DType.f32, shapes[0]), TensorType(DType.f32, shapes[1])], {})
    assert t.shape == expected.shape and t.dtype.np == out.dtype


def test_pow_logical_where_cast():
    a, b = np.array([2.0, 3.0], np.float32), np.array([3.0, 0.5], np.float32)
    np.testing.assert_allclose(get_op("pow").kernel([a, b], {})[0], tf.pow(a, b).numpy(), rtol=1e-6)
    p, q = np.array([True, False, True]), np.array([True, True, False])
    assert get_op("logical_and").kernel([p, q], {})[0].tolist() == [True, False, False]
    assert get_op("logical_or").kernel([p, q], {})[0].tolist() == [True, True, True]
    [w] = get_op("where").kernel([p, np.float32(1.0) * np.ones(3, np.float32),
                                  np.zeros(3, np.float32)], {})
    assert w.tolist() == [1.0, 0.0, 1.0]
    x = np.array([-1.7, 2.9, 0.2], np.float32)
    [c] = get_op("cast").kernel([x], {"to": DType.i32})
    np.testing.assert_array_equal(c, tf.cast(x, tf.int32).numpy())
    [bb] = get_op("cast").kernel([x], {"to": DType.bool})
    assert bb.tolist() == [True, True, True]


def test_integer_div_truncates_like_tf():
    a = np.array([7, -7, 7, -7], np.int32)
    b = np.array([2, 2, -2, -2], np.int32)
    np.testing.assert_array_equal(get_op("div").kernel([a, b], {})[0],
                                  tf.truncatediv(a, b).numpy())


@pytest.mark.parametrize("op, types, message", [
    ("add", [TensorType(DType.f32, (3,)), TensorType(DType.i32, (3,))], "dtypes differ"),
    ("add", [TensorType(DType.f32, (3,)), TensorType(DType.f32, (4,))], "cannot broadcast"),
    ("exp", [TensorType(DType.i32, (3,))], "needs a float operand"),
    ("where", [TensorType(DType.f32, (3,))] * 3, "condition must be bool"),
    ("logical_and", [TensorType(DType.f32, (3,))] * 2, "needs bool operands"),
])
def test_bad_operands_are_reported(op, types, message):
    with pytest.raises(InferenceError, match=message):
        get_op(op).infer(types, get_op(op).complete_attrs({}))


def test_symbolic_broadcasting():
    [t] = get_op("add").infer([TensorType(DType.f32, ("batch", 1, 4)),
                               TensorType(DType.f32, (7, 1))], {})
    assert t.shape == ("batch", 7, 4)
    with pytest.raises(InferenceError, match="clip min"):
        get_op("clip").infer([TensorType(DType.f32, (2,))], {"min": 3.0, "max": 1.0})
