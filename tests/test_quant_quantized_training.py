"""Quantized training (qat/quantized_training.py, qat/quantized_training_keras.py): int8
operands in the forward product and in both gradient products, checked on the jaxpr and
against float gradients; Flax and Keras models trained this way on sklearn digits against the
same models trained in float, and their calibration-free int8 LiteRT artifacts."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
nn = pytest.importorskip("flax.linen")
optax = pytest.importorskip("optax")
import jax.extend  # noqa: E402
from jax import lax  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge import quantization as tq  # noqa: E402
from tensorforge.qat.quantized_training import (QuantizedDense, QuantizedTraining,  # noqa: E402
                                                hash_uniform, quantize)

DENSE = (((1,), (0,)), ((), ()))


def _cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _dots(jaxpr):
    """Every dot_general / conv equation of a (closed) jaxpr, sub-jaxprs included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            out.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out += _dots(sub)
    return out


def _loss(dg, dn):
    return lambda a, b: jnp.sum(jnp.sin(dg(a, b, dn)))


# -- the injected kernels ----------------------------------------------------------------------

@pytest.mark.parametrize("case", ["dense", "batched"])
def test_dot_general_forward_and_gradients_match_float(case):
    rng = np.random.default_rng(0)
    if case == "dense":
        a, b, dn = rng.standard_normal((32, 20)), rng.standard_normal((20, 7)), DENSE
    else:  # batch dim not first, two contracting dims in another order
        a, b = rng.standard_normal((3, 5, 4, 6)), rng.standard_normal((6, 3, 2, 4))
        dn = (((3, 2), (0, 3)), ((0,), (1,)))
    a, b = a.astype(np.float32), b.astype(np.float32)
    qt = tq.quantized_training()
    want = lax.dot_general(a, b, dn)
    got = qt.dot_general(a, b, dn)
    assert got.shape == want.shape and got.dtype == jnp.float32
    assert np.abs(got - want).max() < 0.03 * np.abs(want).max()
    gq = jax.grad(_loss(qt.dot_general, dn), (0, 1))(a, b)
    gf = jax.grad(_loss(lax.dot_general, dn), (0, 1))(a, b)
    for q, f in zip(gq, gf):
        assert q.shape == f.shape and _cos(q, f) > 0.995


def test_backward_matmuls_run_on_int8_operands():
    """The jaxpr of a training step: the forward product and both gradient products are
    int8 x int8 -> int32; no float product contracts more than the size-1 scale dims."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((16, 12)).astype(np.float32), rng.standard_normal(
        (12, 5)).astype(np.float32)
    jaxpr = jax.make_jaxpr(jax.grad(_loss(tq.quantized_training().dot_general, DENSE),
                                    (0, 1)))(x, w)
    dots = _dots(jaxpr.jaxpr)
    ints = [e for e in dots if all(v.aval.dtype == jnp.int8 for v in e.invars)]
    assert len(ints) == 3, dots
    assert all(e.outvars[0].aval.dtype == jnp.int32 for e in ints)
    for e in dots:
        if e not in ints:   # the scales' outer products
            (lc, _), _ = e.params["dimension_numbers"]
            assert all(e.invars[0].aval.shape[d] == 1 for d in lc), e
    # The gradient products take g with stochastic rounding: floor(v + noise).
    assert any(e.primitive.name == "floor" for e in jaxpr.jaxpr.eqns)


def test_stochastic_rounding_is_unbiased_and_deterministic():
    x = jnp.full((4096,), 0.3, jnp.float32) * jnp.linspace(0.9, 1.1, 4096)
    noise = hash_uniform(x, 7)
    assert 0.0 <= float(noise.min()) and float(noise.max()) < 1.0
    assert abs(float(noise.mean()) - 0.5) < 0.02
    np.testing.assert_array_equal(noise, hash_uniform(x, 7))
    assert not np.array_equal(noise, hash_uniform(x, 8))
    # 2 bits (codes -1..1): each value rounds to 0 or 1 code, 1 with probability x / scale.
    xs = jnp.concatenate([x, jnp.array([1.1])])
    q, s = quantize(xs, (0,), 2, jnp.concatenate([noise, jnp.zeros(1)]))
    assert set(np.unique(q[:-1]).tolist()) == {0, 1}
    np.testing.assert_allclose(float(jnp.mean(q[:-1] * s)), float(jnp.mean(x)), rtol=0.05)
    q_near, _ = quantize(xs, (0,), 2)
    assert set(np.unique(q_near[:-1]).tolist()) == {0}      # round to nearest loses it all


@pytest.mark.parametrize("strides, groups", [((1, 1), 1), ((2, 2), 1), ((1, 1), 3)])
def test_conv_gradients_match_float_on_int8_operands(strides, groups):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 8, 3)).astype(np.float32)
    k = rng.standard_normal((3, 3, 3 // groups, 6)).astype(np.float32)
    qt = tq.quantized_training()

    def loss(conv):
        return lambda x, k: jnp.sum(jnp.sin(conv(
            x, k, strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups)))

    gq = jax.grad(loss(qt.conv_general_dilated), (0, 1))(x, k)
    gf = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, k)
    for q, f in zip(gq, gf):
        assert q.shape == f.shape and _cos(q, f) > 0.995
    convs = [e for e in _dots(jax.make_jaxpr(jax.grad(loss(qt.conv_general_dilated),
                                                      (0, 1)))(x, k).jaxpr)
             if e.primitive.name == "conv_general_dilated"]
    assert len(convs) == 3 and all(v.aval.dtype == jnp.int8 for e in convs for v in e.invars)


def test_bad_settings():
    with pytest.raises(ValueError, match="bits"):
        QuantizedTraining(bits=16)
    with pytest.raises(ValueError, match="rounding"):
        tq.quantized_training(rounding="up")
    with pytest.raises(TypeError, match="keras.Model"):
        tq.quantized_training(object())


# -- digits: Flax ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    return x[:1400], y[:1400], x[1400:], y[1400:]


class MLP(nn.Module):
    qt: QuantizedTraining | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = QuantizedDense(64, qt=self.qt, activation=nn.relu, quantize_input=True,
                           name="fc0")(x, train)
        return QuantizedDense(10, qt=self.qt, name="fc1")(x, train)


STEPS, BATCH = 250, 64


def _train_flax(model, xtr, ytr):
    variables = model.init(jax.random.key(0), xtr[:BATCH])
    params, stats = variables["params"], variables.get("quant_stats", {})
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, stats, state, xb, yb):
        def loss(p):
            logits, upd = model.apply({"params": p, "quant_stats": stats}, xb, train=True,
                                      mutable=["quant_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), upd
        (_, upd), g = jax.value_and_grad(loss, has_aux=True)(params)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), upd.get("quant_stats", stats), state

    idx = np.random.default_rng(0).integers(0, len(xtr), (STEPS, BATCH))
    for i in range(STEPS):
        params, stats, state = step(params, stats, state, xtr[idx[i]], ytr[idx[i]])
    return {"params": params, **({"quant_stats": stats} if stats else {})}


def _accuracy(logits, y):
    return float(np.mean(np.argmax(np.asarray(logits), -1) == y))


def test_flax_quantized_training_on_digits_converts_to_int8(digits, tmp_path):
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.interpreter import Interpreter

    xtr, ytr, xte, yte = digits
    vf = _train_flax(MLP(None), xtr, ytr)
    qt = tq.quantized_training()
    vq = _train_flax(MLP(qt), xtr, ytr)
    acc_float = _accuracy(MLP(None).apply(vf, xte), yte)
    acc_qt = _accuracy(MLP(qt).apply(vq, xte), yte)
    assert acc_float > 0.85 and acc_qt >= acc_float - 0.03, (acc_float, acc_qt)
    stats = vq["quant_stats"]
    assert float(stats["fc0"]["input_range"]["max"]) == pytest.approx(1.0)
    out = stats["fc1"]["output_range"]
    assert float(out["min"]) < 0 < float(out["max"])

    # Export: the same module in export mode, converted with no calibration data.
    exported = MLP(qt.for_export())
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 64"), jnp.float32)
    result = tensorforge.convert(exported.apply, target="tflite", output=tmp_path / "m.tflite",
                                 example_args=[spec], params=vq, progress=False)
    assert result.quantization.scheme.name == "int8-qat"
    data = result.paths["tflite"].read_bytes()
    m = fb.ModelT.InitFromPackedBuf(data, 0)
    sg = m.subgraphs[0]
    fc = [op for op in sg.operators if m.operatorCodes[op.opcodeIndex].builtinCode
          == fb.BuiltinOperator.FULLY_CONNECTED]
    assert len(fc) == 2 and all(sg.tensors[op.inputs[i]].type == fb.TensorType.INT8
                                for op in fc for i in (0, 1))
    runner = Interpreter(model_content=data).get_signature_runner("serving_default")
    (name,) = runner.get_input_details()
    acc_int8 = _accuracy(next(iter(runner(**{name: xte}).values())), yte)
    assert abs(acc_int8 - acc_qt) <= 0.01, (acc_qt, acc_int8)


# -- digits: Keras -----------------------------------------------------------------------------

def _keras_cnn():
    import keras
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(32, activation="relu", name="fc1"),
        keras.layers.Dense(10, activation="softmax", name="probs")], name="cnn")


def _fit_keras(model, x, y):
    import keras
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)
    keras.utils.set_random_seed(1)
    model.fit(x, y, batch_size=64, epochs=6, verbose=0)
    return model


def test_keras_quantized_training_on_digits_converts_to_int8(digits, tmp_path):
    keras = pytest.importorskip("keras")
    if keras.config.backend() != "tensorflow":
        pytest.skip("Keras quantized training needs the TensorFlow backend")
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from tensorforge.qat.quantized_training_keras import (QuantizedTrainingConv2D,
                                                          QuantizedTrainingDense, int8_matmul,
                                                          to_qat_model)

    xtr, ytr, xte, yte = (a.reshape(-1, 8, 8, 1) if a.ndim == 2 else a for a in digits)
    source = _keras_cnn()
    qmodel = tq.quantized_training(source)
    assert [type(layer) for layer in qmodel.layers][1:] == [
        QuantizedTrainingConv2D, keras.layers.Flatten, QuantizedTrainingDense,
        QuantizedTrainingDense]
    np.testing.assert_array_equal(qmodel.get_layer("fc1").kernel.numpy(),
                                  source.get_layer("fc1").kernel.numpy())
    float_model = _fit_keras(_keras_cnn(), xtr, ytr)
    _fit_keras(qmodel, xtr, ytr)
    acc_float = _accuracy(float_model.predict(xte, verbose=0), yte)
    acc_qt = _accuracy(qmodel.predict(xte, verbose=0), yte)
    assert acc_float > 0.8 and acc_qt >= acc_float - 0.03, (acc_float, acc_qt)

    # The gradient products are int8 matmuls (int32 accumulators) in the TF graph.
    fn = tf.function(lambda x, w: tf.gradients(tf.reduce_sum(int8_matmul(x, w)), [x, w]))
    graph = fn.get_concrete_function(tf.TensorSpec([4, 6]), tf.TensorSpec([6, 3])).graph
    mm = [op for op in graph.get_operations() if op.type.startswith("BatchMatMul")
          or op.type == "MatMul"]
    assert len(mm) == 3 and all(op.inputs[0].dtype == tf.int8 and op.inputs[1].dtype == tf.int8
                                and op.outputs[0].dtype == tf.int32 for op in mm), mm

    qat = to_qat_model(qmodel)
    result = tensorforge.convert(qat, target="tflite", output=tmp_path / "k.tflite",
                                 progress=False)
    assert result.quantization.scheme.name == "int8-qat"
    assert result.quantization.float_nodes() == []
    runner = Interpreter(model_content=result.paths["tflite"].read_bytes()) \
        .get_signature_runner("serving_default")
    (name,) = runner.get_input_details()
    acc_int8 = _accuracy(next(iter(runner(**{name: xte}).values())), yte)
    assert abs(acc_int8 - acc_qt) <= 0.01, (acc_qt, acc_int8)
