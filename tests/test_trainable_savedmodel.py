"""`convert(..., target="savedmodel", trainable=True)`: a JAX / Flax / Keras model exported for
fine-tuning in TensorFlow (docs/design/trainable-savedmodel.md). The parameters are trainable
variables, the loaded object's `__call__` is differentiable with gradients equal to JAX's,
training lowers the loss (GradientTape and Keras `fit`), `serving_default` stays."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tensorforge
from tensorforge.backends.savedmodel import write_savedmodel
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.tools.sources import JaxModel

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")

RNG = np.random.RandomState(0)
X = RNG.randn(6, 8, 8, 1).astype(np.float32)
Y = RNG.randn(6, 3).astype(np.float32)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.gelu(nn.Dense(16)(x))
        x = nn.LayerNorm()(x)
        return nn.Dense(3)(x)


def _jax_loss(model, params, x, y):
    return jnp.mean((model.apply(params, x) - y) ** 2)


@pytest.fixture(scope="module")
def flax_cnn(tmp_path_factory):
    """A Flax CNN trained a few steps in JAX (its biases are no longer zero, except that of
    one layer, kept at zero on purpose: a pass must not delete it), converted trainable."""
    model = CNN()
    params = model.init(jax.random.PRNGKey(0), X)
    grad = jax.jit(jax.grad(lambda p: _jax_loss(model, p, X, Y)))
    for _ in range(3):
        params = jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, params, grad(params))
    params = jax.tree_util.tree_map(np.asarray, params)
    params["params"]["Dense_1"]["bias"] = np.zeros(3, np.float32)
    batch = jax.export.symbolic_shape("batch")[0]
    spec = jax.ShapeDtypeStruct((batch, 8, 8, 1), jnp.float32)
    path = tmp_path_factory.mktemp("flax") / "model"
    result = tensorforge.convert(JaxModel(model.apply, [spec], params, names=["images"]),
                                 "savedmodel", path, trainable=True)
    return model, params, result, str(path)


def _leaves(params) -> dict[str, np.ndarray]:
    return {"/".join(str(k.key) for k in path[1:]): np.asarray(a)
            for path, a in jax.tree_util.tree_flatten_with_path(params)[0]}


def _name(var) -> str:
    return var.name.split(":")[0]


def test_parameters_are_trainable_variables(flax_cnn):
    _, params, _, path = flax_cnn
    loaded = tf.saved_model.load(path)
    want = _leaves(params)
    got = {_name(v): v for v in loaded.trainable_variables}
    assert set(got) == set(want)            # the zero bias too: the pipeline kept it
    for name, var in got.items():
        assert var.trainable and var.shape.num_elements() == want[name].size
        np.testing.assert_array_equal(var.numpy().reshape(want[name].shape), want[name])
    assert len(loaded.variables) == len(got)


def test_outputs_and_serving_signature(flax_cnn):
    model, params, _, path = flax_cnn
    loaded = tf.saved_model.load(path)
    sig = loaded.signatures["serving_default"]
    for batch in (1, 6):                    # the symbolic batch stays symbolic
        want = np.asarray(model.apply(params, X[:batch]))
        np.testing.assert_allclose(loaded(tf.constant(X[:batch])).numpy(), want, atol=1e-5)
        out = sig(images=tf.constant(X[:batch]))
        np.testing.assert_allclose(next(iter(out.values())).numpy(), want, atol=1e-5)


def test_gradients_match_jax_and_training_lowers_the_loss(flax_cnn):
    model, params, _, path = flax_cnn
    loaded = tf.saved_model.load(path)
    variables = loaded.trainable_variables

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((loaded(tf.constant(X)) - Y) ** 2)
        return loss, tape.gradient(loss, variables)

    loss, grads = step()
    want = _leaves(jax.grad(lambda p: _jax_loss(model, p, X, Y))(params))
    assert float(loss) == pytest.approx(float(_jax_loss(model, params, X, Y)), rel=1e-5)
    for var, g in zip(variables, grads):
        assert g is not None, _name(var)
        ref = want[_name(var)]
        np.testing.assert_allclose(g.numpy().reshape(ref.shape), ref, atol=1e-5,
                                   err_msg=_name(var))
    losses = [float(loss)]
    for _ in range(20):
        for var, g in zip(variables, grads):
            var.assign_sub(0.05 * g)
        loss, grads = step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses


def test_keras_fit_on_the_loaded_model(flax_cnn):
    keras = pytest.importorskip("keras")
    _, _, _, path = flax_cnn
    layer = keras.layers.TFSMLayer(path, call_endpoint="__call__", trainable=True)
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    assert len(model.trainable_variables) == 8
    before = model.evaluate(X, Y, verbose=0)
    history = model.fit(X, Y, epochs=8, batch_size=6, verbose=0).history["loss"]
    assert model.evaluate(X, Y, verbose=0) < 0.7 * before, history


def test_only_the_parameters_a_glob_names_train(flax_cnn, tmp_path):
    _, _, result, _ = flax_cnn
    write_savedmodel(result.module, tmp_path / "m", trainable=["Dense_1/*"])
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    assert sorted(_name(v) for v in loaded.trainable_variables) == \
        ["Dense_1/bias", "Dense_1/kernel"]
    assert len(loaded.non_trainable_variables) == 6


def test_keras_source(tmp_path):
    """A Keras model on the TensorFlow backend: its Dense weights are parameters with Keras's
    own gradients; weights the TF frontend folds while lifting are named in a note."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(3)])
    x = tf.constant(RNG.randn(6, 8).astype(np.float32))
    result = tensorforge.convert(model, "savedmodel", tmp_path / "m", trainable=True)
    assert not any("not trainable" in n for n in result.notes)
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    assert len(loaded.trainable_variables) == len(model.trainable_variables) == 4
    with tf.GradientTape() as tape:
        want_loss = tf.reduce_mean((model(x, training=False) - Y) ** 2)
    want = {v.path.split("/", 1)[1]: g for v, g in zip(
        model.trainable_variables, tape.gradient(want_loss, model.trainable_variables))}
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((loaded(x) - Y) ** 2)
    grads = tape.gradient(loss, loaded.trainable_variables)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    for var, g in zip(loaded.trainable_variables, grads):
        np.testing.assert_allclose(g.numpy(), want[_name(var)].numpy(), atol=1e-5)

    # Named layers: Keras numbers unnamed ones by what the process built before.
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv2d"),
                             keras.layers.BatchNormalization(name="batch_normalization"),
                             keras.layers.Flatten(), keras.layers.Dense(3)])
    result = tensorforge.convert(conv, "savedmodel", tmp_path / "c", trainable=True)
    (note,) = [n for n in result.notes if "not trainable" in n]
    assert "conv2d/bias" in note and "batch_normalization/gamma" in note
    assert "conv2d/kernel" not in note


KERAS_ON_JAX = r"""
import os, sys
import numpy as np, jax, jax.numpy as jnp, keras
import tensorflow as tf
import tensorforge
keras.utils.set_random_seed(1)
model = keras.Sequential([
    keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same"),
    keras.layers.BatchNormalization(), keras.layers.ReLU(),
    keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same"),
    keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
bn = model.layers[1]
bn.moving_mean.assign(np.linspace(-0.2, 0.2, 4).astype("f"))
bn.moving_variance.assign(np.linspace(0.5, 1.5, 4).astype("f"))
rng = np.random.RandomState(0)
x, y = rng.randn(6, 8, 8, 1).astype("f"), rng.randn(6, 3).astype("f")
result = tensorforge.convert(model, "savedmodel", sys.argv[1], trainable=True)
loaded = tf.saved_model.load(sys.argv[1])
names = sorted(v.name.split(":")[0] for v in loaded.trainable_variables)
stats = sorted(v.name.split(":")[0] for v in loaded.non_trainable_variables)
want_names = sorted(v.path for v in model.trainable_variables if "batch_norm" not in v.path)
assert names == want_names, (names, want_names)
# The JAX frontend folds batch-norm's inference arithmetic on constants while lifting: its
# weights are constants, and the conversion says so.
(note,) = [n for n in result.notes if "not trainable" in n]
assert "batch_normalization/gamma" in note and "conv2d/bias" not in note, note
ntv = [v.value for v in model.non_trainable_variables]
def loss_fn(tv):
    out, _ = model.stateless_call(tv, ntv, x, training=False)
    return jnp.mean((out - y) ** 2)
want = jax.grad(loss_fn)([v.value for v in model.trainable_variables])
want = {v.path: np.asarray(g) for v, g in zip(model.trainable_variables, want)}
with tf.GradientTape() as tape:
    loss = tf.reduce_mean((loaded(tf.constant(x)) - y) ** 2)
grads = tape.gradient(loss, loaded.trainable_variables)
assert abs(float(loss) - float(loss_fn([v.value for v in model.trainable_variables]))) < 1e-5
worst = 0.0
for v, g in zip(loaded.trainable_variables, grads):
    ref = want[v.name.split(":")[0]]
    worst = max(worst, float(np.max(np.abs(g.numpy().reshape(ref.shape) - ref))))
assert worst < 1e-5, worst
print("OK", len(names), worst)
"""


def test_keras_source_on_the_jax_backend(tmp_path):
    """On the JAX backend the Keras weights are parameters named by their paths (conv biases
    too), with JAX's gradients; batch-norm's, folded while lifting, are named in a note."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", KERAS_ON_JAX, str(tmp_path / "m")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "OK 6" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def _depthwise_module() -> Module:
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 9, 9, 2)), "x")
    f = g.constant(np.random.RandomState(5).randn(3, 3, 2, 1).astype(np.float32), "dw/filter")
    y = g.add("depthwise_conv2d", [x, f], {"padding": "SAME", "dilations": (2, 2)},
              scope="dw").output
    g.set_outputs([g.add("reduce_mean", [y], {"axes": (1, 2)}).output])
    return Module([g])


def test_dilated_filter_stays_a_variable(tmp_path):
    """Inference folds a dilated filter into a constant; the trainable form dilates the
    variable with TF ops, with the same result."""
    write_savedmodel(_depthwise_module(), tmp_path / "a")
    write_savedmodel(_depthwise_module(), tmp_path / "b", trainable=True)
    plain, trainable = (tf.saved_model.load(str(tmp_path / n)) for n in "ab")
    x = tf.constant(RNG.randn(2, 9, 9, 2).astype(np.float32))
    want = plain.signatures["serving_default"](x=x)
    got = trainable.signatures["serving_default"](x=x)
    np.testing.assert_allclose(got["output_0"].numpy(), want["output_0"].numpy(), atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(trainable(x))
    (grad,) = tape.gradient(loss, trainable.trainable_variables)
    assert grad is not None and grad.shape == (3, 3, 2, 1)
    assert not any(v.trainable for v in plain.weights)      # the default form: as before


def test_refusals(tmp_path):
    module = _depthwise_module()
    with pytest.raises(ConversionError, match="cannot write tflite"):
        tensorforge.convert(module, ["savedmodel", "tflite"], tmp_path / "a", trainable=True)
    with pytest.raises(ConversionError, match="needs a float model"):
        tensorforge.convert(module, "savedmodel", tmp_path / "b", trainable=True,
                            quantization="int8")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (4,)), "x")
    q = g.add("quantize", [x], {"scale": (0.1,), "zero_point": (0,)}).output
    w = g.constant(np.ones(4, np.float32), "w")
    y = g.add("mul", [g.add("dequantize", [q], {"scale": (0.1,), "zero_point": (0,)}).output,
                      w]).output
    g.set_outputs([y])
    with pytest.raises(ConversionError, match="quantized module cannot be lowered trainable"):
        write_savedmodel(Module([g]), tmp_path / "c", trainable=True)
