"""keras.ops math that the TF backend builds from ops the IR has no name for (Atan, Asinh,
Log1p, Expm1, IsNan, IsInf, IsFinite, Erfinv, Cumprod, DivNoNan, Atan2 with a scalar): lifted
through the decompositions shared with the JAX frontend (frontends/decompose.py) and
verified on every target."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402


class _Math(keras.layers.Layer):
    def call(self, x, y):
        small = 0.9 * ops.tanh(x)                     # in (-0.9, 0.9)
        parts = [ops.arctan(x), ops.arcsin(small), ops.arccos(small), ops.arcsinh(x),
                 ops.arccosh(2.0 + ops.abs(x)), ops.arctanh(small), ops.sinh(x), ops.cosh(x),
                 ops.tan(small), ops.log1p(ops.abs(x)), ops.expm1(x), ops.erfinv(small),
                 ops.cumprod(1.0 + 0.1 * x, axis=-1), ops.divide_no_nan(x, ops.round(y)),
                 ops.arctan2(x, 2.0), ops.logsumexp(x, axis=-1, keepdims=True)
                 * ops.ones_like(x)]
        return ops.stack(parts, axis=-1)


class _Nan(keras.layers.Layer):
    def call(self, x):
        return ops.stack([ops.nansum(x, axis=-1), ops.nanmax(x, axis=-1),
                          ops.cast(ops.sum(ops.isinf(x), axis=-1), "float32"),
                          ops.cast(ops.sum(ops.isfinite(x), axis=-1), "float32")], axis=-1)


def test_math_ops_on_every_target(tmp_path):
    x, y = keras.Input((3, 4), name="x"), keras.Input((3, 4), name="y")
    model = keras.Model([x, y], _Math(name="math")(x, y))
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}


def test_nan_and_inf_aware_ops_on_every_target(tmp_path):
    x = keras.Input((6,), name="x")
    model = keras.Model(x, _Nan(name="nan")(x))
    data = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    data[0, 1], data[1, 2], data[2, 3] = np.nan, np.inf, -np.inf
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 verify_inputs={"x": data}, progress=False)
    assert result.verification.ok, result.verification.table()


class _Spectral(keras.layers.Layer):
    def call(self, x):
        re, im = ops.rfft(x, fft_length=12)              # x cropped from 16 to 12 samples
        back = ops.irfft((re, im), fft_length=10)        # 7 bins cropped to 6 for n = 10
        sre, sim = ops.stft(x, 8, 4, 8)
        return ops.concatenate([re, im, back, ops.reshape(sre * sre + sim * sim, (-1, 25))],
                               axis=-1)


def test_rfft_irfft_stft_on_every_target(tmp_path):
    x = keras.Input((16,), name="x")
    model = keras.Model(x, _Spectral(name="spectral")(x))
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    assert result.verification.ok, result.verification.table()


class _Moves(keras.layers.Layer):
    def call(self, x):
        rolled = ops.roll(x, shift=-3, axis=2)
        blocks = ops.depth_to_space(ops.space_to_depth(x, 2), 2)   # the identity, via depth
        return rolled + blocks + ops.linspace(0.0, 1.0, 4)


def test_roll_space_depth_linspace_on_every_target(tmp_path):
    x = keras.Input((4, 4, 4), name="x")
    model = keras.Model(x, _Moves(name="moves")(x))
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    assert result.verification.ok, result.verification.table()


class _Diagonals(keras.layers.Layer):
    def call(self, x):
        parts = [ops.diagonal(x, offset=k, axis1=1, axis2=2) for k in (0, 1, -1, 3)]
        traces = [ops.trace(x, offset=k, axis1=1, axis2=2)[:, None] for k in (0, 2, -1)]
        eyes = ops.sum(x * (ops.eye(3, 4) + 2 * ops.eye(3, 4, k=-1)), axis=(1, 2))[:, None]
        return ops.concatenate(parts + traces + [eyes], axis=-1)


def test_diagonals_traces_and_eyes_on_every_target(tmp_path):
    x = keras.Input((3, 4), name="x")
    model = keras.Model(x, _Diagonals(name="diag")(x))
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    assert result.verification.ok, result.verification.table()


class _Segments(keras.layers.Layer):
    def call(self, x, ids):
        # Segment 3 gets no rows: the reductions' identities (0, 1, lowest, highest), as TF.
        parts = [fn(x, ids, num_segments=4) for fn in
                 (ops.segment_sum, ops.segment_max, ops.segment_min, ops.segment_prod)]
        parts = [ops.where(ops.abs(p) > 1e30, ops.sign(p), p) for p in parts]
        update = ops.scatter_update(x, np.array([[0, 1], [2, 3]]),
                                    np.array([9.0, -9.0], "float32"))
        return ops.concatenate(parts + [update, ops.scatter(np.array([[1, 2]]),
                                                            x[:1, 0], (6, 4))], axis=0)


def test_segment_reductions_and_scatters_on_every_target(tmp_path):
    x = keras.Input((4,), batch_size=6, name="x")
    ids = keras.Input((), batch_size=6, dtype="int32", name="ids")
    model = keras.Model([x, ids], _Segments(name="seg")(x, ids))
    feeds = {"x": np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32),
             "ids": np.array([0, 0, 1, 2, 2, 2], np.int32)}
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 input_shapes={"x": (6, 4), "ids": (6,)}, verify_inputs=feeds,
                                 progress=False)
    assert result.verification.ok, result.verification.table()


class _Losses(keras.layers.Layer):
    def call(self, logits, labels, ids, values):
        probs = ops.softmax(labels)
        parts = [ops.categorical_crossentropy(probs, logits, from_logits=True)[:, None],
                 ops.sparse_categorical_crossentropy(ids, logits, from_logits=True)[:, None],
                 ops.cast(ops.in_top_k(ids, ops.round(logits), 2), "float32")[:, None],
                 ops.cast(ops.digitize(values, [-1.0, 0.0, 0.5, 1.0]), "float32"),
                 ops.cast(ops.searchsorted(np.array([-1.0, 0.0, 0.0, 1.0], "float32"),
                                           ops.round(values[0]), side="right"),
                          "float32")[None, :] * ops.ones_like(values),
                 ops.cross(logits[:, :3], labels[:, :3])]
        return ops.concatenate(parts, axis=-1)


def test_losses_buckets_bounds_top_k_and_cross_on_every_target(tmp_path):
    logits, labels = keras.Input((5,), name="logits"), keras.Input((5,), name="labels")
    ids, values = keras.Input((), dtype="int32", name="ids"), keras.Input((4,), name="values")
    model = keras.Model([logits, labels, ids, values],
                        _Losses(name="losses")(logits, labels, ids, values))
    rng = np.random.default_rng(0)
    feeds = {"logits": rng.normal(size=(3, 5)).astype(np.float32),
             "labels": rng.normal(size=(3, 5)).astype(np.float32),
             "ids": np.array([0, 3, 4], np.int32),
             "values": rng.normal(size=(3, 4)).astype(np.float32)}
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 input_shapes={"logits": (3, 5), "labels": (3, 5), "ids": (3,),
                                               "values": (3, 4)},
                                 verify_inputs=feeds, progress=False)
    assert result.verification.ok, result.verification.table()
