"""Derivatives inside a Keras model (TF backend): ops.jvp and a GradientTape over a broadcast
product lift, BroadcastGradientArgs folded from the shapes at import time, and verify on
every target."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402


class _Jvp(keras.layers.Layer):
    def call(self, x, y):
        primal, tangent = ops.jvp(lambda v: ops.sin(v) * v, (x,), (y,))
        return ops.concatenate([primal, tangent], axis=-1)


class _BroadcastGrad(keras.layers.Layer):
    """d/dx and d/dw of sum(tanh(x * w + b)) with w [4] and b [3, 1] broadcast against x."""

    def build(self, shape):
        self.w = self.add_weight(shape=(4,), initializer="random_normal")
        self.b = self.add_weight(shape=(3, 1), initializer="random_normal")

    def call(self, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ops.sum(ops.tanh(x * self.w + self.b))
        dx, dw = tape.gradient(y, [x, self.w])
        return dx + ops.reshape(dw, (1, 1, 4))


def _check(model, tmp_path):
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}


def test_jvp_on_every_target(tmp_path):
    x, y = keras.Input((3, 4), name="x"), keras.Input((3, 4), name="y")
    _check(keras.Model([x, y], _Jvp(name="jvp")(x, y)), tmp_path)


def test_gradient_of_a_broadcast_product_on_every_target(tmp_path):
    x = keras.Input((3, 4), name="x")
    _check(keras.Model(x, _BroadcastGrad(name="grad")(x)), tmp_path)


class _TwoSizes(keras.layers.Layer):
    def call(self, x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = ops.sum(x * y)
        return tape.gradient(z, x)


def test_sizes_that_may_differ_at_run_time_are_refused(tmp_path):
    x, y = keras.Input((None,), name="x"), keras.Input((None,), name="y")
    model = keras.Model([x, y], _TwoSizes(name="two")(x, y))
    with pytest.raises(ConversionError, match="may or may not be equal"):
        tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                            progress=False)
