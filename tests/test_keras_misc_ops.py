"""TF ops that Keras layers and ops build and the IR composes from ops every target runs:
the modified Bessel functions (BesselI0/I0e/I1/I1e, Cephes series in frontends/decompose.py,
also JAX's bessel_i0e / bessel_i1e), ExtractImagePatches (a one-hot conv2d), Bincount /
DenseBincount (compare against the bins, then reduce) and LookupTableFindV2 on a table filled
before conversion (IntegerLookup). Each model is converted to every target and verified in
LiteRT, TF and TF.js."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from jax.scipy import special  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.frontends import decompose  # noqa: E402
from tensorforge.ir import DType, Graph, TensorType  # noqa: E402
from tensorforge.ir.interpreter import run_graph, run_module  # noqa: E402

ALL = {"ir", "tflite", "savedmodel", "tfjs"}


def _verified(model, tmp_path, feeds=None, **kw):
    kw.update({"verify_inputs": feeds} if feeds is not None else {"verify": True})
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", progress=False,
                                 **kw)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == ALL
    return result


# -- Bessel functions ---------------------------------------------------------------------------

class _Bessel(keras.layers.Layer):
    def call(self, x):
        return (ops.i0(x), tf.math.bessel_i1(x), tf.math.special.bessel_i0e(x),
                tf.math.special.bessel_i1e(x), x * ops.kaiser(8, 5.0))


def test_bessel_functions_over_the_real_line(tmp_path):
    """Both series (|x| <= 8 and beyond), negative x (I1 is odd) and 0."""
    x = keras.Input((8,), name="x")
    model = keras.Model(x, _Bessel(name="bessel")(x))
    data = np.array([[0.0, -0.5, 1.0, -7.99, 8.0, 8.01, -12.5, 30.0],
                     [3.0, -3.0, 0.25, 15.0, -20.0, 2.0, -1.0, 6.5]], np.float32)
    _verified(model, tmp_path, {"x": data})


def test_bessel_decomposition_accuracy():
    """float32 accuracy of the shared decompositions against SciPy's double precision over
    [-60, 60], and I0, I1 finite up to |x| = 91, where exp(|x|) alone would already overflow
    (from 88.7)."""
    import scipy.special as sp

    x = np.concatenate([np.linspace(-60, 60, 4001), [89.0, -90.5, 91.0]]).astype(np.float32)
    g = Graph()
    xv = g.add_input(TensorType(DType.f32, x.shape), "x")
    b = decompose.Builder(lambda op, ins, attrs=None: g.add(op, ins, attrs).output,
                          lambda value, like: g.constant(np.asarray(value, np.float32)),
                          lambda array: g.constant(np.asarray(array)), lambda v: v.type.shape)
    names = ("i0e", "i1e", "i0", "i1")
    g.set_outputs([decompose.UNARY[f"bessel_{n}"](b, xv) for n in names])
    for name, got in zip(names, run_graph(g, [x]), strict=True):
        want = getattr(sp, name)(x.astype(np.float64))
        assert np.all(np.isfinite(got)), name
        rel = np.abs(got - want) / np.abs(want).clip(1e-30)
        assert rel.max() < 2e-6, (name, float(rel.max()), float(x[rel.argmax()]))


def test_jax_bessel_primitives(tmp_path):
    x = np.linspace(-20, 20, 24, dtype=np.float32).reshape(2, 12)

    def fn(x):
        return special.i0e(x), special.i1e(x), jnp.i0(x) * 1e-6, special.i1(x) * 1e-6

    result = tensorforge.convert(fn, target="all", output=tmp_path / "j", verify=True,
                                 example_args=[x], progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == ALL
    lax_ops = {e.primitive.name for e in jax.make_jaxpr(fn)(x).jaxpr.eqns}
    assert {"bessel_i0e", "bessel_i1e"} <= lax_ops


# -- ExtractImagePatches -----------------------------------------------------------------------

class _Patches(keras.layers.Layer):
    def call(self, x, nchw):
        a = tf.image.extract_patches(x, sizes=[1, 3, 2, 1], strides=[1, 2, 1, 1],
                                     rates=[1, 1, 2, 1], padding="SAME")
        b = tf.image.extract_patches(x, sizes=[1, 2, 2, 1], strides=[1, 2, 3, 1],
                                     rates=[1, 1, 1, 1], padding="VALID")
        return a, b, ops.unfold(nchw, kernel_size=(2, 3), dilation=(2, 1), padding=1, stride=2)


def test_extract_patches_and_unfold(tmp_path):
    """Window order [kh, kw, C], strides, rates and both paddings, and keras.ops.unfold
    (channels first, built on tf.image.extract_patches)."""
    # A fixed batch: keras.ops.unfold on TF cannot trace a None batch dim.
    x = keras.Input((7, 8, 3), batch_size=2, name="x")
    nchw = keras.Input((2, 5, 6), batch_size=2, name="nchw")
    _verified(keras.Model([x, nchw], list(_Patches(name="patches")(x, nchw))), tmp_path,
              input_shapes={"x": (2, 7, 8, 3), "nchw": (2, 2, 5, 6)})


# -- Bincount / DenseBincount ------------------------------------------------------------------

class _Counts(keras.layers.Layer):
    def call(self, x, w):
        return (ops.bincount(x, minlength=6),
                ops.bincount(x, weights=w, minlength=6),
                tf.math.bincount(x, minlength=6, maxlength=6, binary_output=True, axis=-1),
                tf.math.bincount(tf.reshape(x, [-1]), minlength=7, maxlength=7))


def test_bincount_and_category_encoding(tmp_path):
    """Counts, weighted sums and binary output, per row (DenseBincount) and flat (1-D); a
    size known only at run time (keras.ops.bincount's max(minlength, max(x) + 1)) and a
    constant one (CategoryEncoding in multi_hot, count and one_hot mode)."""
    x = keras.Input((5,), dtype="int32", name="x")
    w = keras.Input((5,), name="w")
    ids = keras.Input((1,), dtype="int32", name="ids")
    outs = list(_Counts(name="counts")(x, w))
    for mode in ("multi_hot", "count"):
        outs.append(keras.layers.CategoryEncoding(num_tokens=6, output_mode=mode)(x))
    outs.append(keras.layers.CategoryEncoding(num_tokens=6, output_mode="one_hot")(ids))
    rng = np.random.default_rng(0)
    feeds = {"x": rng.integers(0, 6, (3, 5)).astype(np.int32),
             "w": rng.normal(size=(3, 5)).astype(np.float32),
             "ids": rng.integers(0, 6, (3, 1)).astype(np.int32)}
    _verified(keras.Model([x, w, ids], outs), tmp_path, feeds)


# -- IntegerLookup -----------------------------------------------------------------------------

def test_integer_lookup(tmp_path):
    """The vocabulary table becomes constants: known ids map to 1.., others to the OOV 0, and
    multi_hot counts the looked-up ids."""
    x = keras.Input((6,), dtype="int64", name="x")
    vocab = [12, 36, 1138, 42, -5]
    ids = keras.layers.IntegerLookup(vocabulary=vocab)(x)
    hot = keras.layers.IntegerLookup(vocabulary=vocab, output_mode="multi_hot")(x)
    feeds = {"x": np.array([[12, 36, 1138, 42, 7, -5], [0, 42, 42, 99, 12, -1]], np.int64)}
    result = _verified(keras.Model(x, [ids, hot]), tmp_path, feeds)
    got = run_module(result.module, [feeds["x"]])[0]
    np.testing.assert_array_equal(got, [[1, 2, 3, 4, 0, 5], [0, 4, 4, 0, 1, 0]])
