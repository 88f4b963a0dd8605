"""Control flow from TF graphs (frontends/tf/control.py, ops/tensorlist.py): Keras recurrent
layers (a functional While over TensorLists) and tf.while_loop / tf.cond on data lift to the
IR's `while` and `if`, and every artifact (IR interpreter, LiteRT, SavedModel, TF.js in Node)
agrees with the source."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
L = keras.layers

import tensorforge  # noqa: E402
from op_helpers import randomized  # noqa: E402
from tensorforge.frontends.keras import from_keras  # noqa: E402
from tensorforge.frontends.tf import lift_concrete_function  # noqa: E402
from tensorforge.ir.interpreter import run_graph  # noqa: E402
from tensorforge.ir.verify import verify_module  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


def _check(model_or_path, out):
    result = tensorforge.convert(model_or_path, target="all", output=out, verify=True)
    v = result.verification
    assert {r.runtime for r in v.rows} == {"ir", "tflite", "savedmodel", "tfjs"}
    assert v.ok, v.table()
    return result


def _rnn(layer, time=5, features=3, name="rnn"):
    inputs = L.Input((time, features), name="seq")
    return randomized(keras.Model(inputs, layer(inputs), name=name))


def _regions(module):
    return [n for g in module.all_graphs() for n in g if n.regions]


# -- Keras recurrent layers --------------------------------------------------------------------

def test_lstm_last_output_lifts_to_one_while_with_constant_weights(tmp_path):
    model = _rnn(L.LSTM(8, name="lstm"))
    module = from_keras(model)
    verify_module(module)
    (loop,) = _regions(module)
    assert loop.op == "while" and loop.scope == "lstm"
    _, body = loop.regions
    body_ops = {n.op for n in body}
    assert {"gather", "dynamic_update_slice", "matmul"} <= body_ops
    # The weights read inside the loop are constants of the body, named after the layer.
    names = {n.outputs[0].name for n in body if n.op == "constant"}
    assert {"lstm/kernel", "lstm/recurrent_kernel", "lstm/bias"} <= names
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(run_graph(module.main, [x])[0], model(x).numpy(), atol=1e-5)
    _check(model, tmp_path / "lstm")


def test_gru_sequences_dynamic_time(tmp_path):
    model = _rnn(L.GRU(6, return_sequences=True, name="gru"), time=None)
    result = _check(model, tmp_path / "gru")
    assert result.module.main.inputs[0].type.shape[1] == "?"
    assert len({r.sizes for r in result.verification.rows}) == 2      # two sequence lengths


@pytest.mark.parametrize("sequences", [True, False])
def test_simple_rnn(tmp_path, sequences):
    _check(_rnn(L.SimpleRNN(7, return_sequences=sequences, name="simple")), tmp_path / "s")


def test_bidirectional_lstm(tmp_path):
    inputs = L.Input((6, 3), name="seq")
    h = L.Bidirectional(L.LSTM(5, return_sequences=True), name="bi")(inputs)
    model = randomized(keras.Model(inputs, L.Dense(2, name="head")(h), name="bi_model"))
    module = from_keras(model)
    assert [n.scope for n in _regions(module)] == ["bi/forward_lstm", "bi/backward_lstm"]
    _check(model, tmp_path / "bi")


@pytest.mark.parametrize("time", [7, None], ids=["fixed_time", "dynamic_time"])
def test_stacked_lstm_dynamic_batch(tmp_path, time):
    inputs = L.Input((time, 4), name="seq")
    h = L.LSTM(6, return_sequences=True, name="lstm1")(inputs)
    h = L.LSTM(5, name="lstm2")(h)
    model = randomized(keras.Model(inputs, L.Dense(3, name="head")(h), name="stacked"))
    result = _check(model, tmp_path / "stacked")
    assert result.module.main.inputs[0].type.shape[0] == "batch"
    assert len(_regions(result.module)) == 2


def test_masked_lstm_after_embedding(tmp_path):
    """Embedding(mask_zero=True) masks padded steps: the loop reads a mask TensorList and
    selects between new and previous states."""
    inputs = L.Input((None,), dtype="int32", name="ids")
    h = L.LSTM(5, name="lstm")(L.Embedding(20, 6, mask_zero=True, name="emb")(inputs))
    _check(randomized(keras.Model(inputs, h, name="masked")), tmp_path / "masked")


def test_trained_lstm(tmp_path):
    inputs = L.Input((5, 2), name="seq")
    model = keras.Model(inputs, L.Dense(1, name="head")(L.LSTM(4, name="lstm")(inputs)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 5, 2)).astype(np.float32)
    model.compile("adam", "mse")
    model.fit(x, x.sum(axis=(1, 2))[:, None], epochs=2, batch_size=16, verbose=0)
    _check(model, tmp_path / "trained")


# -- tf.while_loop / tf.cond in a tf.function ----------------------------------------------------

class _Control(tf.Module):
    def __init__(self):
        self.scale = tf.Variable(1.5, name="scale")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def grow(self, x):
        """Doubles-ish x until it is large: the trip count depends on the data; the loop reads
        a variable."""
        def body(i, y):
            return i + 1, y * self.scale + 0.25

        steps, y = tf.while_loop(lambda i, y: tf.reduce_sum(tf.abs(y)) < 50.0, body,
                                 [tf.constant(0), x], maximum_iterations=20)
        return {"y": y, "steps": steps}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def widen(self, x):
        """A loop-carried value that grows (a shape invariant with a None dim)."""
        def body(i, y):
            return i + 1, tf.concat([y, y[:, -1:] * 0.5], axis=1)

        i, y = tf.while_loop(lambda i, y: tf.reduce_max(y) > 0.1, body, [tf.constant(0), x],
                             shape_invariants=[tf.TensorShape([]), tf.TensorShape([None, None])],
                             maximum_iterations=6)
        return tf.reduce_sum(y, axis=1, keepdims=True) + tf.cast(i, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def branch(self, x):
        return tf.cond(tf.reduce_mean(x) > 0.0, lambda: tf.nn.relu(x) * self.scale,
                       lambda: tf.concat([x[:, 1:], x[:, :1]], axis=1) - 1.0)


def _saved(tmp_path, name):
    module = _Control()
    path = tmp_path / name
    tf.saved_model.save(module, str(path), signatures={"serving_default": getattr(module, name)})
    return str(path)


@pytest.mark.parametrize("name", ["grow", "widen"])
def test_while_loop_data_dependent_exit(tmp_path, name):
    result = _check(_saved(tmp_path, name), tmp_path / "out")
    (loop,) = _regions(result.module)
    assert loop.op == "while"
    if name == "widen":
        assert loop.outputs[-1].type.shape[1] == "?"


def test_while_loop_trip_count_follows_data():
    """The interpreter runs the loop as many times as TF does, at every size."""
    m = _Control()
    cf = m.grow.get_concrete_function()
    lifted = lift_concrete_function(cf, input_names=["x"], output_names=["steps", "y"])
    for x in (np.full((1, 3), 0.1, np.float32), np.full((2, 3), 30.0, np.float32)):
        steps, y = run_graph(lifted.main, [x])
        want = m.grow(tf.constant(x))
        assert int(steps) == int(want["steps"])
        np.testing.assert_allclose(y, want["y"].numpy(), rtol=1e-6)


def test_growing_tensor_array_is_reported():
    """A TensorArray with dynamic_size has no fixed length: one diagnostic at the write,
    located in the loop body, and one at the loop."""
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def f(x):
        ta = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        _, ta = tf.while_loop(lambda i, ta: i < 3, lambda i, ta: (i + 1, ta.write(i, x)),
                              [0, ta])
        return ta.stack()

    with pytest.raises(tensorforge.ConversionError) as err:
        lift_concrete_function(f.get_concrete_function(), input_names=["x"],
                               output_names=["y"])
    messages = [d.message for d in err.value.diagnostics]
    assert any("dynamic_size=True" in m for m in messages)
    assert any("loop body could not be lifted" in m for m in messages)


def test_cond_on_data(tmp_path):
    result = _check(_saved(tmp_path, "branch"), tmp_path / "out")
    (branch,) = _regions(result.module)
    assert branch.op == "if"
