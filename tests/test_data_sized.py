"""Results sized by the data: `tf.where(x)` (ops.nonzero) lifts to the IR's `nonzero`
(TFLite WHERE, tf.where, TF.js's async Where), and a sort of a run-time number of elements
(ops.nanmedian's NaN-free values) to `top_k` with k = -1; Keras's float64 quantile positions
run in f32 on TFLite and TF.js. Verified on every target at two batch sizes."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.ir.graph import Graph  # noqa: E402
from tensorforge.ir.interpreter import run_graph  # noqa: E402
from tensorforge.ir.ops import get_op  # noqa: E402
from tensorforge.ir.types import DType, TensorType  # noqa: E402

from op_helpers import run, tflite_ops  # noqa: E402


class _NonZero(keras.layers.Layer):
    def call(self, x):
        rows, cols = ops.nonzero(x > 0.5)
        return ops.cast(rows * 10 + cols, "float32")


class _NanMedian(keras.layers.Layer):
    def call(self, x):
        return ops.stack([ops.nanmedian(x), ops.nanquantile(x, 0.3)])


def _convert(model, tmp_path, batches):
    rng = np.random.default_rng(0)
    inputs = []
    for b in batches:
        x = rng.random((b, 5)).astype(np.float32)
        x[rng.random(x.shape) < 0.3] = np.nan if "nan" in model.name else x[0, 0]
        inputs.append({"x": x})
    return tensorforge.convert(model, target="all", output=tmp_path / "m", verify_inputs=inputs,
                               progress=False)


def test_nonzero_on_every_target(tmp_path):
    x = keras.Input((5,), name="x")
    model = keras.Model(x, _NonZero(name="nz")(x), name="nonzero")
    result = _convert(model, tmp_path, [2, 3])
    assert result.verification.ok, result.verification.table()
    assert "WHERE" in tflite_ops(result.paths["tflite"])


def test_sort_of_a_run_time_count_on_every_target(tmp_path):
    x = keras.Input((5,), name="x")
    model = keras.Model(x, _NanMedian(name="nanmedian")(x), name="nan_median")
    result = _convert(model, tmp_path, [2, 4])
    assert result.verification.ok, result.verification.table()
    assert any("f64 computed in f32" in n for n in result.notes), result.notes
    assert "TOPK_V2" in tflite_ops(result.paths["tflite"])


def test_nonzero_and_whole_axis_top_k_kernels():
    x = np.array([[0, 3, 0], [1, 0, 2]], np.int32)
    (idx,) = get_op("nonzero").kernel([x], {})    # (its row count is a run-time size)
    np.testing.assert_array_equal(idx, np.argwhere(x))
    values, order = run("top_k", [np.array([[1.0, 3.0, 2.0, 3.0]], np.float32)], k=-1)
    np.testing.assert_array_equal(values, [[3.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(order, [[1, 3, 2, 0]])    # ties: lower index first


def test_nonzero_rows_are_a_run_time_size():
    g = Graph("main")
    x = g.add_input(TensorType(DType.bool, [4, 2]), "x")
    (idx,) = g.add("nonzero", [x]).outputs
    g.set_outputs([idx])
    assert idx.type.shape[1] == 2 and not isinstance(idx.type.shape[0], int)
    (out,) = run_graph(g, [np.array([[1, 0], [0, 0], [1, 1], [0, 1]], bool)])
    assert out.shape == (4, 2) and out.dtype == np.int64


@pytest.mark.parametrize("k", [-2])
def test_top_k_rejects_k_below_minus_one(k):
    from tensorforge.ir.errors import InferenceError
    g = Graph("main")
    x = g.add_input(TensorType(DType.f32, [2, 3]), "x")
    with pytest.raises(InferenceError, match="k must be >= 0, or -1"):
        g.add("top_k", [x], {"k": k})
