"""tf.switch_case / ops.switch (TF's Case op): a run-time index becomes a chain of IR `if`s
(index out of range runs the last branch, as in TF), a constant one lifts only its branch;
branches may read the layer's weights. Verified on every target."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402


class _FourWay(keras.layers.Layer):
    """Branch on a run-time index in [-1, 5]: four branches, two of them reading weights."""

    def build(self, shapes):
        self.w = self.add_weight(shape=(4, 4), initializer="random_normal")
        self.b = self.add_weight(shape=(4,), initializer="random_normal")

    def call(self, x, k):
        index = ops.cast(ops.reshape(k[0, 0], ()), "int32")
        return tf.switch_case(index, [lambda: ops.sin(x), lambda: ops.matmul(x, self.w),
                                      lambda: x + self.b, lambda: ops.tanh(x) * 2.0])


def test_switch_case_with_a_run_time_index_on_every_target(tmp_path):
    x, k = keras.Input((3, 4), name="x"), keras.Input((1,), name="k")
    model = keras.Model([x, k], _FourWay(name="four")(x, k))
    rng = np.random.default_rng(0)
    cases = [{"x": rng.normal(size=(2, 3, 4)).astype(np.float32),
              "k": np.full((2, 1), i, np.float32)} for i in (-1, 0, 1, 2, 3, 5)]
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 verify_inputs=cases, progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}
    ifs = [n for g in result.module.graphs.values() for n in g.walk() if n.op == "if"]
    assert len(ifs) == 3                   # index == 0, == 1, == 2; else the last branch


class _Constant(keras.layers.Layer):
    def call(self, x):
        return tf.switch_case(tf.constant(2), [lambda: ops.sin(x), lambda: ops.cos(x), lambda: x * 3.0])


def test_switch_case_with_a_constant_index_lifts_one_branch(tmp_path):
    x = keras.Input((4,), name="x")
    model = keras.Model(x, _Constant(name="const")(x))
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 verify=True, progress=False)
    assert result.verification.ok, result.verification.table()
    ops_used = {n.op for n in result.module.main}
    assert "if" not in ops_used and "sin" not in ops_used and "cos" not in ops_used
