"""Bit-level keras.ops (ir/ops/bitwise.py) and the sign-bit idiom behind Keras's float
argmax/argmin and signbit, which canonicalize turns into float comparisons so that every
target runs it (TFLite has no bitwise AND)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402


class _Args(keras.layers.Layer):
    def call(self, x):
        return ops.stack([ops.argmax(x, axis=-1), ops.argmin(x, axis=-1),
                          ops.cast(ops.sum(ops.signbit(x), axis=-1), "int32")], axis=-1)


def test_float_argmax_argmin_signbit_need_no_bit_ops(tmp_path):
    x = keras.Input((3, 5), name="x")
    model = keras.Model(x, _Args(name="args")(x))
    data = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    data[0, 0, :2] = [-0.0, 0.0]
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 verify_inputs={"x": data}, progress=False)
    assert result.verification.ok, result.verification.table()
    ops_left = {n.op for n in result.module.main.walk()}
    assert not ops_left & {"bitcast", "bitwise_and"}, ops_left


class _Bits(keras.layers.Layer):
    def call(self, x, y):
        return ops.stack([ops.bitwise_xor(x, y), ops.bitwise_invert(x),
                          ops.right_shift(x, ops.mod(y, 5))], axis=-1)


def test_bitwise_ops_in_litert_and_tf(tmp_path):
    """XOR, NOT (as XOR with -1) and arithmetic right shift run in LiteRT and TF; TF.js has no
    bitwise ops (the tfjs-converter op list), which the TF.js writer reports."""
    x = keras.Input((4,), dtype="int32", name="x")
    y = keras.Input((4,), dtype="int32", name="y")
    model = keras.Model([x, y], _Bits(name="bits")(x, y))
    rng = np.random.default_rng(0)
    feeds = {"x": rng.integers(-1000, 1000, (2, 4)).astype(np.int32),
             "y": rng.integers(0, 64, (2, 4)).astype(np.int32)}
    result = tensorforge.convert(model, target=["tflite", "savedmodel"], output=tmp_path / "m",
                                 verify_inputs=feeds, progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel"}
