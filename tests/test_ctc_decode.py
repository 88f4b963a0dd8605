"""Greedy CTC decoding (keras.ops.ctc_decode, the inference step of Keras's OCR models): TF's
CTCGreedyDecoder + SparseToDense lift to dense IR (frontends/tf/ops/ctc.py) and match Keras on
every target, with repeats, blanks and per-sample lengths; merge_repeated both ways."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402


class _Decode(keras.layers.Layer):
    def __init__(self, merge, **kw):
        super().__init__(**kw)
        self.merge = merge

    def call(self, x, lengths):
        decoded, log_prob = ops.ctc_decode(x, lengths, merge_repeated=self.merge)
        return decoded[0], log_prob


def _inputs(batch, seed):
    rng = np.random.default_rng(seed)
    # Few classes and sharp logits: many repeats and blanks (class 0) to merge and drop.
    best = rng.integers(0, 3, size=(batch, 12))
    logits = 4.0 * np.eye(4, dtype=np.float32)[best] + 0.1 * rng.normal(size=(batch, 12, 4))
    lengths = rng.integers(3, 13, size=(batch,)).astype(np.int32)
    return {"x": logits.astype(np.float32), "lengths": lengths}


@pytest.mark.parametrize("merge", [True, False])
def test_greedy_ctc_decode_on_every_target(tmp_path, merge):
    x, lengths = keras.Input((12, 4), name="x"), keras.Input((), dtype="int32", name="lengths")
    model = keras.Model([x, lengths], _Decode(merge, name="decode")(x, lengths))
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 verify_inputs=[_inputs(2, 0), _inputs(5, 1)], progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}


class _Sparse(keras.layers.Layer):
    def call(self, x, lengths):
        import tensorflow as tf

        (decoded,), _ = tf.nn.ctc_greedy_decoder(ops.transpose(x, (1, 0, 2)), lengths)
        return ops.cast(decoded.values, "float32")      # the sparse values on their own


def test_sparse_result_used_on_its_own_is_refused(tmp_path):
    x, lengths = keras.Input((12, 4), name="x"), keras.Input((), dtype="int32", name="lengths")
    model = keras.Model([x, lengths], _Sparse(name="sparse")(x, lengths))
    with pytest.raises(ConversionError, match="CTCGreedyDecoder result is used other than"):
        tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                            progress=False)
