"""IR ops added for the Keras frontend, checked against TensorFlow: `elu` (TF Elu, and Keras'
elu with alpha != 1 and selu, which the importer builds from it)."""

import numpy as np
import pytest
import tensorflow as tf

from tensorforge.ir import DType, TensorType
from tensorforge.ir.ops import get_op

RNG = np.random.default_rng(0)
X = (RNG.standard_normal((3, 7)) * 4).astype(np.float32)


def _run(op, x, **attrs):
    d = get_op(op)
    a = d.complete_attrs(attrs)
    [out] = d.kernel([x], a)
    assert out.dtype == x.dtype and out.shape == x.shape
    return out


def test_elu_matches_tf():
    np.testing.assert_allclose(_run("elu", X), tf.nn.elu(X).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_elu_alpha_matches_keras(alpha):
    import keras

    ref = keras.activations.elu(X, alpha=alpha)
    np.testing.assert_allclose(_run("elu", X, alpha=alpha), np.asarray(ref), rtol=1e-6,
                               atol=1e-7)


def test_selu_from_elu_matches_tf():
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    y = _run("elu", X, alpha=alpha) * np.float32(scale)
    np.testing.assert_allclose(y, tf.nn.selu(X).numpy(), rtol=1e-6, atol=1e-6)


def test_elu_float16_and_inference():
    x16 = X.astype(np.float16)
    np.testing.assert_allclose(_run("elu", x16).astype(np.float32),
                               tf.nn.elu(x16).numpy().astype(np.float32), rtol=2e-3, atol=1e-3)
    d = get_op("elu")
    [t] = d.infer([TensorType(DType.f32, ("batch", 5))], d.complete_attrs({}))
    assert t == TensorType(DType.f32, ("batch", 5))
    with pytest.raises(Exception, match="float"):
        d.infer([TensorType(DType.i32, (3,))], d.complete_attrs({}))
