"""tf.unique and keras.ops.unique: TF's Unique lifts to dense IR (frontends/tf/ops/unique.py)
whose values have a run-time length, and matches TF on every target: repeats, first-occurrence
order, NaN as a value of its own."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402


class _Unique(keras.layers.Layer):
    def call(self, x):
        values, idx = tf.unique(x[0])
        # The values have a run-time length: sum and count them, and return idx as is.
        finite = ops.where(ops.isnan(values), 100.0, values)
        summary = ops.stack([ops.sum(finite), ops.cast(ops.size(values), "float32")])
        return summary, ops.cast(idx, "float32")


def test_tf_unique_on_every_target(tmp_path):
    x = keras.Input((9,), name="x", batch_size=1)
    model = keras.Model(x, _Unique(name="unique")(x))
    data = [np.array([[3.0, 1.0, 3.0, np.nan, 2.0, 1.0, np.nan, 7.0, 3.0]], np.float32),
            np.array([[5.0] * 9], np.float32),
            np.arange(9, dtype=np.float32)[None]]
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 verify_inputs=[{"x": d} for d in data], progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}
