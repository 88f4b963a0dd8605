"""Complex tensors in Keras models (TF backend): complex constants, arithmetic, conj, angle and
the element-moving ops lift to pairs of real tensors (frontends/tf/ops/complex.py) and verify
on every target; an op with no complex form is refused with a clear error."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402


class _ComplexMath(keras.layers.Layer):
    def call(self, x):
        z = ops.view_as_complex(x)                       # [b, 4, 3] complex
        w = z * (0.5 - 1.5j) + ops.conj(z)               # constant product, conj
        q = w / (z + (2 + 1j))                           # complex division
        e = ops.exp(z * 0.1j)                            # unit-modulus rotation
        moved = ops.reshape(ops.transpose(q, (0, 2, 1)), (-1, 12))
        stacked = ops.concatenate([moved, ops.reshape(e, (-1, 12))], axis=-1)
        total = ops.sum(stacked, axis=-1, keepdims=True)
        parts = [ops.real(stacked), ops.imag(stacked), ops.angle(stacked),
                 ops.absolute(stacked), ops.real(total) * ops.ones_like(ops.real(stacked))]
        return ops.concatenate(parts, axis=-1)


def test_complex_arithmetic_on_every_target(tmp_path):
    x = keras.Input((4, 3, 2), name="x")
    model = keras.Model(x, _ComplexMath(name="cmath")(x))
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 4, 3, 2)).astype(np.float32)
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 verify_inputs={"x": data}, progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}
    # No complex dtype reaches the IR: every value is a real tensor.
    assert all(not v.type.dtype.name.startswith("c") for n in result.module.main
               for v in n.outputs)


class _ComplexSqrt(keras.layers.Layer):
    def call(self, x):
        return ops.real(ops.sqrt(ops.view_as_complex(x)))


def test_op_without_a_complex_form_is_refused(tmp_path):
    x = keras.Input((4, 2), name="x")
    model = keras.Model(x, _ComplexSqrt(name="csqrt")(x))
    with pytest.raises(ConversionError) as err:
        tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                            progress=False)
    text = str(err.value)
    assert "Sqrt" in text and "complex" in text and "csqrt" in text
    assert not (tmp_path / "m.tflite").exists()
