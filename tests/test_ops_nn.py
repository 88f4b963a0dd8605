"""nn ops: NumPy kernels against TensorFlow, shape inference (static and symbolic) and errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tensorforge.ir.errors import InferenceError
from tensorforge.ir.ops import get_op
from tensorforge.ir.types import DType, TensorType

RTOL = 1e-5
ATOL = 1e-5


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run(name, inputs, **attrs):
    """Runs op `name`'s kernel and checks its result against the op's own shape inference."""
    op = get_op(name)
    full = op.complete_attrs(attrs)
    assert op.attr_problems(full) == []
    (out,) = op.kernel(inputs, full)
    types = [TensorType(DType.from_numpy(x.dtype), x.shape) for x in inputs]
    (t,) = op.infer(types, full)
    assert t.shape == out.shape, f"infer says {t.shape}, kernel gave {out.shape}"
    assert t.dtype.np == out.dtype
    return out


def infer(name, shapes, dtype=DType.f32, **attrs):
    op = get_op(name)
    (t,) = op.infer([TensorType(dtype, s) for s in shapes], op.complete_attrs(attrs))
    return t.shape


def close(ours, ref):
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=RTOL, atol=ATOL)


def tf_padding(padding):
    if isinstance(padding, str):
        return padding
    return [[0, 0], list(padding[0]), list(padding[1]), [0, 0]]


def dilate_filter(w, dh, dw):
    """A filter with zeros between taps: conv with it equals conv with dilation (dh, dw)."""
    kh, kw = w.shape[:2]
    out = np.zeros(((kh - 1) * dh + 1, (kw - 1) * dw + 1) + w.shape[2:], w.dtype)
    out[::dh, ::dw] = w
    return out


# -- conv2d ------------------------------------------------------------------------------------

CONV_CASES = [
    # x shape, filter shape, strides, padding, dilations, groups
    ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), "SAME", (1, 1), 1),
    ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), "VALID", (1, 1), 1),
    ((1, 11, 8, 3), (3, 3, 3, 5), (2, 2), "SAME", (1, 1), 1),
    ((1, 11, 8, 3), (4, 2, 3, 5), (2, 1), "SAME", (1, 1), 1),     # even kernel: uneven pads
    ((1, 10, 9, 2), (3, 3, 2, 4), (2, 2), "VALID", (1, 1), 1),
    ((1, 7, 8, 3), (3, 3, 3, 4), (1, 1), ((1, 2), (0, 3)), (1, 1), 1),
    ((1, 7, 8, 3), (3, 2, 3, 4), (2, 3), ((2, 0), (1, 1)), (1, 1), 1),
    ((1, 12, 11, 3), (3, 3, 3, 4), (1, 1), "SAME", (2, 2), 1),
    ((1, 12, 11, 3), (3, 3, 3, 4), (1, 1), "VALID", (2, 1), 1),
    ((1, 12, 11, 3), (3, 3, 3, 4), (2, 2), "SAME", (2, 2), 1),    # stride + dilation
    ((2, 8, 7, 4), (3, 3, 2, 6), (1, 1), "SAME", (1, 1), 2),
    ((1, 9, 9, 6), (3, 3, 2, 6), (2, 2), "VALID", (1, 1), 3),
    ((1, 6, 6, 8), (1, 1, 8, 16), (1, 1), "VALID", (1, 1), 1),    # pointwise
]


def tf_conv2d(x, w, strides, padding, dilations):
    if strides != (1, 1) and dilations != (1, 1):
        # TF's CPU conv refuses stride > 1 with dilation > 1; zero-inserted filter instead.
        w, dilations = dilate_filter(w, *dilations), (1, 1)
    return tf.nn.conv2d(x, w, strides=[1, *strides, 1], padding=tf_padding(padding),
                        dilations=[1, *dilations, 1])


@pytest.mark.parametrize("xs,ws,strides,padding,dilations,groups", CONV_CASES)
def test_conv2d_matches_tf(xs, ws, strides, padding, dilations, groups):
    x, w = rand(*xs, seed=1), rand(*ws, seed=2)
    out = run("conv2d", [x, w], strides=strides, padding=padding, dilations=dilations,
              groups=groups)
    close(out, tf_conv2d(x, w, strides, padding, dilations))


def test_conv2d_bias_and_f16():
    x, w, b = rand(1, 5, 5, 3, seed=1), rand(3, 3, 3, 4, seed=2), rand(4, seed=3)
    out = run("conv2d", [x, w, b], padding="SAME")
    close(out, tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b))
    half = run("conv2d", [x.astype(np.float16), w.astype(np.float16)], padding="SAME")
    assert half.dtype == np.float16


# -- depthwise_conv2d --------------------------------------------------------------------------

DW_CASES = [
    # x shape, filter shape, strides, padding, dilations
    ((2, 9, 9, 3), (3, 3, 3, 1), (1, 1), "SAME", (1, 1)),
    ((1, 9, 10, 4), (3, 3, 4, 2), (2, 2), "SAME", (1, 1)),
    ((1, 9, 10, 4), (3, 3, 4, 2), (2, 2), "VALID", (1, 1)),
    ((1, 8, 7, 3), (5, 3, 3, 2), (1, 1), ((1, 2), (0, 1)), (1, 1)),
    ((1, 11, 11, 3), (3, 3, 3, 1), (1, 1), "SAME", (2, 2)),
    ((1, 11, 12, 3), (3, 3, 3, 2), (1, 1), "VALID", (2, 3)),
    ((1, 11, 12, 3), (3, 3, 3, 2), (2, 2), "SAME", (2, 2)),       # stride + dilation
]


@pytest.mark.parametrize("xs,ws,strides,padding,dilations", DW_CASES)
def test_depthwise_matches_tf(xs, ws, strides, padding, dilations):
    x, w = rand(*xs, seed=3), rand(*ws, seed=4)
    out = run("depthwise_conv2d", [x, w], strides=strides, padding=padding,
              dilations=dilations)
    wt, dt = w, dilations
    if strides != (1, 1) and dilations != (1, 1):
        wt, dt = dilate_filter(w, *dilations), (1, 1)
    ref = tf.nn.depthwise_conv2d(x, wt, strides=[1, *strides, 1], padding=tf_padding(padding),
                                 dilations=list(dt))
    close(out, ref)


def test_depthwise_equals_grouped_conv_with_unequal_strides():
    # TF's depthwise kernel needs equal strides; a grouped conv with groups=C is the same op.
    x, w, b = rand(1, 9, 10, 3, seed=5), rand(3, 3, 3, 2, seed=6), rand(6, seed=7)
    out = run("depthwise_conv2d", [x, w, b], strides=(1, 2), padding="SAME")
    ref = run("conv2d", [x, w.reshape(3, 3, 1, 6), b], strides=(1, 2), padding="SAME",
              groups=3)
    close(out, ref)


# -- conv2d_transpose --------------------------------------------------------------------------

TCONV_CASES = [
    # x shape, filter [H, W, C_out, C_in], strides, padding, output_shape or None
    ((2, 5, 5, 3), (3, 3, 4, 3), (1, 1), "SAME", None),
    ((2, 5, 5, 3), (3, 3, 4, 3), (1, 1), "VALID", None),
    ((1, 5, 6, 3), (3, 3, 4, 3), (2, 2), "SAME", None),
    ((1, 5, 6, 3), (3, 3, 4, 3), (2, 2), "VALID", None),
    ((1, 5, 6, 3), (4, 4, 2, 3), (2, 2), "SAME", None),            # even kernel
    ((1, 5, 6, 3), (3, 3, 4, 3), (2, 2), "SAME", (1, 9, 11, 4)),   # odd output sizes
    ((1, 5, 6, 3), (3, 3, 4, 3), (2, 2), "VALID", (-1, 12, 14, 4)),  # extra row/col, batch -1
    ((1, 4, 5, 2), (2, 3, 3, 2), (3, 2), "VALID", None),
]


@pytest.mark.parametrize("xs,ws,strides,padding,output_shape", TCONV_CASES)
def test_conv2d_transpose_matches_tf(xs, ws, strides, padding, output_shape):
    x, w = rand(*xs, seed=8), rand(*ws, seed=9)
    out = run("conv2d_transpose", [x, w], strides=strides, padding=padding,
              output_shape=output_shape)
    ref = tf.nn.conv2d_transpose(x, w, output_shape=(xs[0],) + out.shape[1:],
                                 strides=[1, *strides, 1], padding=padding)
    close(out, ref)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv2d_transpose_dilation_and_bias(padding):
    # TF's CPU kernel has no dilation; a zero-inserted filter is equivalent.
    x, w, b = rand(1, 5, 6, 3, seed=10), rand(3, 3, 4, 3, seed=11), rand(4, seed=12)
    out = run("conv2d_transpose", [x, w, b], strides=(2, 2), padding=padding,
              dilations=(2, 2))
    ref = tf.nn.conv2d_transpose(x, dilate_filter(w, 2, 2), output_shape=out.shape,
                                 strides=[1, 2, 2, 1], padding=padding)
    close(out, tf.nn.bias_add(ref, b))


# -- matmul ------------------------------------------------------------------------------------

MATMUL_CASES = [
    ((3, 4), (4, 5), False, False),
    ((4, 3), (4, 5), True, False),
    ((3, 4), (5, 4), False, True),
    ((4, 3), (5, 4), True, True),
    ((2, 3, 4), (2, 4, 5), False, False),
    ((2, 1, 3, 4), (5, 4, 6), False, False),   # batch broadcast, different ranks
    ((1, 3, 4), (7, 5, 4), False, True),
    ((6, 3, 4), (4, 2), False, False),         # rank 2 rhs broadcast over the batch
]


@pytest.mark.parametrize("sa,sb,ta,tb", MATMUL_CASES)
def test_matmul_matches_tf(sa, sb, ta, tb):
    a, b = rand(*sa, seed=13), rand(*sb, seed=14)
    out = run("matmul", [a, b], transpose_a=ta, transpose_b=tb)
    close(out, tf.linalg.matmul(a, b, transpose_a=ta, transpose_b=tb))


def test_matmul_int32():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.arange(8, dtype=np.int32).reshape(4, 2)
    out = run("matmul", [a, b])
    np.testing.assert_array_equal(out, tf.linalg.matmul(a, b).numpy())


# -- pooling -----------------------------------------------------------------------------------

POOL_CASES = [
    # x shape, ksize, strides, padding
    ((2, 8, 8, 3), (2, 2), (2, 2), "VALID"),
    ((2, 8, 8, 3), (2, 2), (2, 2), "SAME"),
    ((1, 7, 9, 2), (3, 3), (2, 2), "SAME"),
    ((1, 7, 9, 2), (3, 3), (2, 2), "VALID"),
    ((1, 7, 9, 2), (3, 2), (1, 2), "SAME"),
    ((1, 6, 5, 2), (3, 3), (1, 1), "SAME"),
    ((1, 5, 5, 2), (1, 1), (3, 3), "SAME"),       # stride larger than the window
    ((1, 7, 7, 4), (7, 7), (1, 1), "VALID"),      # global pool
]


@pytest.mark.parametrize("xs,ksize,strides,padding", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_tf(kind, xs, ksize, strides, padding):
    x = rand(*xs, seed=15)
    out = run(f"{kind}_pool2d", [x], ksize=ksize, strides=strides, padding=padding)
    tf_fn = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d
    close(out, tf_fn(x, ksize=list(ksize), strides=list(strides), padding=padding))


def test_max_pool_negative_values_and_ints():
    # All-negative input: SAME padding must not leak zeros into the max.
    x = -np.abs(rand(1, 5, 5, 1, seed=16)) - 1
    out = run("max_pool2d", [x], ksize=(3, 3), strides=(2, 2), padding="SAME")
    close(out, tf.nn.max_pool2d(x, 3, 2, "SAME"))
    xi = np.arange(-50, 0, dtype=np.int32).reshape(1, 5, 10, 1)
    outi = run("max_pool2d", [xi], ksize=(2, 3), strides=(2, 2), padding="SAME")
    np.testing.assert_array_equal(outi, tf.nn.max_pool2d(xi, (2, 3), 2, "SAME").numpy())


# -- softmax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((4, 10), -1), ((2, 3, 5), 1), ((6, 3), 0)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_matches_tf(name, shape, axis):
    x = rand(*shape, seed=17) * 5
    out = run(name, [x], axis=axis)
    close(out, getattr(tf.nn, name)(x, axis=axis))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_is_stable(name):
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0]], np.float32)
    out = run(name, [x])
    assert np.all(np.isfinite(out))
    close(out, getattr(tf.nn, name)(x))


# -- batch_norm / layer_norm -------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((2, 5, 5, 4), -1), ((2, 4, 3, 3), 1), ((6, 7), -1)])
def test_batch_norm_matches_tf(shape, axis):
    x = rand(*shape, seed=18)
    c = shape[axis]
    mean, scale, offset = rand(c, seed=19), rand(c, seed=20), rand(c, seed=21)
    var = np.abs(rand(c, seed=22)) + 0.1
    out = run("batch_norm", [x, mean, var, scale, offset], epsilon=1e-3, axis=axis)
    bshape = [1] * len(shape)
    bshape[axis] = c
    params = [p.reshape(bshape) for p in (mean, var, offset, scale)]
    close(out, tf.nn.batch_normalization(x, *params, variance_epsilon=1e-3))


def tf_layer_norm(x, axes, eps, scale=None, offset=None):
    mean, var = tf.nn.moments(tf.constant(x), axes=list(axes), keepdims=True)
    bshape = [x.shape[a] if a in [a % x.ndim for a in axes] else 1 for a in range(x.ndim)]
    s = None if scale is None else scale.reshape(bshape)
    o = None if offset is None else offset.reshape(bshape)
    return tf.nn.batch_normalization(x, mean, var, o, s, variance_epsilon=eps)


@pytest.mark.parametrize("shape,axes", [((4, 10), (-1,)), ((2, 3, 8), (-1,)),
                                        ((2, 3, 4, 5), (-3, -2, -1)), ((2, 3, 4), (1,)),
                                        ((2, 3, 4, 5), (1, 3))])
@pytest.mark.parametrize("affine", [0, 1, 2])   # no params, scale only, scale and offset
def test_layer_norm_matches_tf(shape, axes, affine):
    x = rand(*shape, seed=23) * 3 + 1
    pshape = tuple(shape[a] for a in sorted(a % len(shape) for a in axes))
    params = [rand(*pshape, seed=24), rand(*pshape, seed=25)][:affine]
    out = run("layer_norm", [x, *params], axes=axes, epsilon=1e-5)
    close(out, tf_layer_norm(x, axes, 1e-5, *params))


def test_layer_norm_matches_keras():
    import keras

    x = rand(2, 3, 6, seed=26)
    layer = keras.layers.LayerNormalization(axis=-1, epsilon=1e-5)
    layer.build(x.shape)
    gamma, beta = rand(6, seed=27), rand(6, seed=28)
    layer.set_weights([gamma, beta])
    close(run("layer_norm", [x, gamma, beta]), layer(x))


# -- resize ------------------------------------------------------------------------------------

RESIZE_FLAGS = [(False, False), (True, False), (False, True)]   # (align_corners, half_pixel)
RESIZE_SIZES = [((5, 7), (9, 13)), ((9, 13), (4, 5)), ((4, 4), (8, 8)), ((6, 5), (6, 5)),
                ((5, 6), (1, 1)), ((1, 1), (3, 2)), ((7, 8), (3, 16))]


@pytest.mark.parametrize("in_hw,size", RESIZE_SIZES)
@pytest.mark.parametrize("align_corners,half_pixel", RESIZE_FLAGS)
@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_resize_matches_tf_raw_ops(method, align_corners, half_pixel, in_hw, size):
    x = rand(2, *in_hw, 3, seed=29)
    out = run("resize", [x], size=size, method=method, align_corners=align_corners,
              half_pixel_centers=half_pixel)
    raw = tf.raw_ops.ResizeNearestNeighbor if method == "nearest" else tf.raw_ops.ResizeBilinear
    ref = raw(images=x, size=list(size), align_corners=align_corners,
              half_pixel_centers=half_pixel)
    if method == "nearest":
        np.testing.assert_array_equal(out, ref.numpy())   # a gather: must be exact
    else:
        close(out, ref)


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_resize_matches_tf2_image_resize(method):
    # TF2's tf.image.resize is the half-pixel-centers variant of both methods.
    x = rand(1, 7, 5, 2, seed=30)
    out = run("resize", [x], size=(12, 3), method=method, half_pixel_centers=True)
    close(out, tf.image.resize(x, (12, 3), method=method))


def test_resize_nearest_keeps_int_dtype():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(1, 2, 3, 4)
    out = run("resize", [x], size=(4, 6), method="nearest")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(
        out, tf.raw_ops.ResizeNearestNeighbor(images=x, size=[4, 6]).numpy())


# -- shape inference with symbolic dims --------------------------------------------------------

def test_symbolic_batch_propagates():
    assert infer("conv2d", [("batch", 28, 28, 1), (3, 3, 1, 8)], padding="SAME") == \
        ("batch", 28, 28, 8)
    assert infer("conv2d", [("batch", 28, 28, 1), (5, 5, 1, 8)], strides=(2, 2)) == \
        ("batch", 12, 12, 8)
    assert infer("depthwise_conv2d", [("n", 14, 14, 32), (3, 3, 32, 2)], padding="SAME",
                 strides=(2, 2)) == ("n", 7, 7, 64)
    assert infer("conv2d_transpose", [("batch", 7, 7, 16), (3, 3, 8, 16)], padding="SAME",
                 strides=(2, 2)) == ("batch", 14, 14, 8)
    assert infer("conv2d_transpose", [("batch", 7, 7, 16), (3, 3, 8, 16)], padding="SAME",
                 strides=(2, 2), output_shape=(-1, 13, 13, 8)) == ("batch", 13, 13, 8)
    assert infer("max_pool2d", [("batch", 28, 28, 4)], ksize=(2, 2), strides=(2, 2)) == \
        ("batch", 14, 14, 4)
    assert infer("avg_pool2d", [("batch", 7, 7, 4)], ksize=(7, 7), strides=(1, 1)) == \
        ("batch", 1, 1, 4)
    assert infer("matmul", [("batch", 10, 64), (64, 32)]) == ("batch", 10, 32)
    assert infer("matmul", [("b", 1, 3, 4), (5, "n", 4)], transpose_b=True) == \
        ("b", 5, 3, "n")
    assert infer("softmax", [("batch", 10)]) == ("batch", 10)
    assert infer("batch_norm", [("batch", 4, 4, 3)] + [(3,)] * 4) == ("batch", 4, 4, 3)
    assert infer("layer_norm", [("batch", "seq", 16), (16,), (16,)]) == ("batch", "seq", 16)
    assert infer("resize", [("batch", "h", "w", 3)], size=(32, 32)) == ("batch", 32, 32, 3)


def test_symbolic_spatial_dims():
    # SAME with stride 1 keeps the size, even when it is unknown.
    assert infer("conv2d", [("n", "h", "w", 3), (3, 3, 3, 8)], padding="SAME") == \
        ("n", "h", "w", 8)
    # Explicit padding that exactly compensates the window keeps it too.
    assert infer("conv2d", [("n", "h", "w", 3), (3, 3, 3, 8)],
                 padding=((1, 1), (2, 2)), dilations=(1, 2)) == ("n", "h", "w", 8)
    # Anything else cannot be computed.
    assert infer("conv2d", [("n", "h", "w", 3), (3, 3, 3, 8)], padding="SAME",
                 strides=(2, 1)) == ("n", "?", "w", 8)
    assert infer("conv2d", [("n", "h", 9, 3), (3, 3, 3, 8)]) == ("n", "?", 7, 8)
    assert infer("conv2d_transpose", [(1, "h", 4, 3), (3, 3, 5, 3)], strides=(2, 2),
                 padding="SAME") == (1, "?", 8, 5)
    assert infer("max_pool2d", [("n", "h", "w", 3)], ksize=(2, 2), strides=(2, 2)) == \
        ("n", "?", "?", 3)
    # Symbolic channels: no clash can be proven, output channels come from the filter.
    assert infer("conv2d", [(1, 8, 8, "c"), (3, 3, 4, 8)]) == (1, 6, 6, 8)
    assert infer("depthwise_conv2d", [(1, 8, 8, "c"), (3, 3, "c", 2)]) == (1, 6, 6, "?")


# -- errors ------------------------------------------------------------------------------------

ERROR_CASES = [
    ("conv2d", [(1, 8, 8, 3), (3, 3, 4, 8)], {}, "3 channels but filter expects 4"),
    ("conv2d", [(8, 8, 3), (3, 3, 3, 8)], {}, "input must have rank 4"),
    ("conv2d", [(1, 8, 8, 3), (3, 3, 3)], {}, "filter must have rank 4"),
    ("conv2d", [(1, 8, 8, 3), (3, 3, 3, 8)], {"padding": "same"}, "padding must be"),
    ("conv2d", [(1, 8, 8, 3), (3, 3, 3, 8)], {"padding": ((1, -1), (0, 0))}, "padding must be"),
    ("conv2d", [(1, 8, 8, 3), (3, 3, 3, 8)], {"padding": (1, 1)}, "padding must be"),
    ("conv2d", [(1, 8, 8, 3), (3, 3, 3, 8)], {"strides": (0, 1)}, "strides must be"),
    ("conv2d", [(1, 8, 8, 3), (3, 3, 3, 8)], {"strides": (1, 1, 1, 1)}, "strides must be"),
    ("conv2d", [(1, 8, 8, 4), (3, 3, 2, 8)], {"groups": 3}, "not divisible by groups"),
    ("conv2d", [(1, 8, 8, 4), (3, 3, 2, 5)], {"groups": 2}, "output channels 5"),
    ("conv2d", [(1, 2, 8, 3), (3, 3, 3, 8)], {}, "larger than the input size 2"),
    ("conv2d", [(1, 8, 8, 3), (3, 3, 3, 8), (4,)], {}, "bias has 4 elements"),
    ("depthwise_conv2d", [(1, 8, 8, 3), (3, 3, 4, 1)], {}, "3 channels but filter expects 4"),
    ("depthwise_conv2d", [(1, 8, 8, 3), (3, 3, 3, 1)], {"padding": "FULL"}, "padding must be"),
    ("conv2d_transpose", [(1, 4, 4, 3), (3, 3, 5, 4)], {}, "3 channels but filter expects 4"),
    ("conv2d_transpose", [(1, 4, 4, 3), (3, 3, 5, 3)],
     {"strides": (2, 2), "padding": "SAME", "output_shape": (1, 11, 8, 5)}, "inconsistent"),
    ("conv2d_transpose", [(1, 4, 4, 3), (3, 3, 5, 3)],
     {"output_shape": (1, 6, 6, 7)}, "7 channels but the filter produces 5"),
    ("conv2d_transpose", [(1, 4, 4, 3), (3, 3, 5, 3)],
     {"output_shape": (2, 6, 6, 5)}, "batch 2 differs"),
    ("conv2d_transpose", [(1, 4, 4, 3), (3, 3, 5, 3)],
     {"padding": ((1, 1), (1, 1))}, "padding must be"),
    ("matmul", [(4,), (4, 5)], {}, "rank >= 2"),
    ("matmul", [(3, 4), (5, 6)], {}, "contraction dims differ"),
    ("matmul", [(2, 3, 4), (3, 4, 5)], {}, "do not broadcast"),
    ("max_pool2d", [(1, 8, 8)], {"ksize": (2, 2), "strides": (2, 2)}, "rank 4"),
    ("max_pool2d", [(1, 2, 8, 3)], {"ksize": (3, 3), "strides": (1, 1)}, "larger than"),
    ("avg_pool2d", [(1, 8, 8, 3)], {"ksize": (2,), "strides": (2, 2)}, "ksize must be"),
    ("avg_pool2d", [(1, 8, 8, 3)], {"ksize": (2, 2), "strides": (2, 2), "padding": "X"},
     "padding must be"),
    ("softmax", [(4, 5)], {"axis": 2}, "out of range"),
    ("batch_norm", [(1, 4, 4, 3), (3,), (3,), (4,), (3,)], {}, "scale has 4 elements"),
    ("batch_norm", [(1, 4, 4, 3), (3,), (3, 1), (3,), (3,)], {}, "variance must have rank 1"),
    ("layer_norm", [(2, 3, 4), (3,)], {}, "scale must have shape [4]"),
    ("layer_norm", [(2, 3, 4), (3, 4)], {"axes": (1, 1)}, "repeat"),
    ("resize", [(1, 4, 4, 3)], {"size": (8, 8), "align_corners": True,
                                "half_pixel_centers": True}, "cannot both be true"),
    ("resize", [(4, 4, 3)], {"size": (8, 8)}, "rank 4"),
    ("resize", [(1, 4, 4, 3)], {"size": (8, 0)}, "size must be"),
]


@pytest.mark.parametrize("name,shapes,attrs,message", ERROR_CASES)
def test_bad_inputs_raise(name, shapes, attrs, message):
    with pytest.raises(InferenceError) as err:
        infer(name, shapes, **attrs)
    assert message in str(err.value)
    assert name in str(err.value)


def test_dtype_errors():
    op = get_op("conv2d")
    attrs = op.complete_attrs({})
    with pytest.raises(InferenceError, match="float"):
        op.infer([TensorType(DType.i32, (1, 8, 8, 3)), TensorType(DType.i32, (3, 3, 3, 8))],
                 attrs)
    with pytest.raises(InferenceError, match="dtype"):
        op.infer([TensorType(DType.f32, (1, 8, 8, 3)), TensorType(DType.f16, (3, 3, 3, 8))],
                 attrs)
    mm = get_op("matmul")
    with pytest.raises(InferenceError, match="dtypes differ"):
        mm.infer([TensorType(DType.f32, (2, 3)), TensorType(DType.i32, (3, 2))],
                 mm.complete_attrs({}))


def test_every_op_has_a_doc():
    for name in ["conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul", "max_pool2d",
                 "avg_pool2d", "softmax", "log_softmax", "batch_norm", "layer_norm", "resize"]:
        op = get_op(name)
        assert op.doc and "pure" in op.traits


# -- fused activation and matmul bias (what TFLite's fused ops compute) -------------------------

@pytest.mark.parametrize("activation, ref", [
    ("relu", tf.nn.relu), ("relu6", tf.nn.relu6), ("tanh", tf.tanh),
    ("relu_n1_to_1", lambda x: tf.clip_by_value(x, -1.0, 1.0)),
    ("none", tf.identity)])
def test_fused_activation_and_bias(activation, ref):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    op = get_op("conv2d")
    [out] = op.kernel([x, w, b], op.complete_attrs({"padding": "SAME", "activation": activation}))
    want = ref(tf.nn.conv2d(x, w, 1, "SAME") + b).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    a = rng.standard_normal((5, 3)).astype(np.float32)
    m = rng.standard_normal((3, 4)).astype(np.float32)
    mm = get_op("matmul")
    [out] = mm.kernel([a, m, b], mm.complete_attrs({"activation": activation}))
    np.testing.assert_allclose(out, ref(a @ m + b).numpy(), rtol=1e-5, atol=1e-5)
    [t] = mm.infer([TensorType(DType.f32, ("batch", 3)), TensorType(DType.f32, (3, 4)),
                    TensorType(DType.f32, (4,))], mm.complete_attrs({}))
    assert t.shape == ("batch", 4)
    with pytest.raises(InferenceError, match="bias"):
        mm.infer([TensorType(DType.f32, (5, 3)), TensorType(DType.f32, (3, 4)),
                  TensorType(DType.f32, (5,))], mm.complete_attrs({}))
