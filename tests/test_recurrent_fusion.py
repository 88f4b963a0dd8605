"""Recurrent layers as TFLite's fused sequence kernels (passes/recurrent.py, ir/ops/recurrent.py,
backends/tflite/ops/recurrent.py): a Keras LSTM / SimpleRNN (a `while` over TensorLists) and a
Flax LSTMCell under nn.RNN (a `scan`) become one UNIDIRECTIONAL_SEQUENCE_LSTM / _RNN op in the
.tflite file, each checked in LiteRT against the source framework; cells the kernels cannot
run (masks, other activations, GRU) stay loops and stay exact."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
L = keras.layers

import tensorforge  # noqa: E402
from op_helpers import randomized, tflite_ops  # noqa: E402
from tensorforge.frontends.keras import from_keras  # noqa: E402
from tensorforge.ir.interpreter import run_graph  # noqa: E402
from tensorforge.passes.recurrent import expand_recurrent, fuse_recurrent  # noqa: E402
from tensorforge.tools.convert import optimize  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


def _litert(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter.get_signature_runner()


def _convert(model, out, target="tflite", **kw):
    result = tensorforge.convert(model, target=target, output=out, verify=True, progress=False,
                                 **kw)
    assert result.verification.ok, result.verification.table()
    return result


# -- Keras ----------------------------------------------------------------------------------------

def _digits_rows():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target


# The digits as 8 rows of 8 pixels, classified by a recurrent layer trained in the test; what
# each layer becomes in TFLite: the fused kernel (Bidirectional: one per direction), or a WHILE
# loop where TFLite has no kernel (GRU) or the mask decides per step what the state keeps.
TRAINED_RNNS = {
    "lstm": (lambda: [L.LSTM(24, name="lstm")], {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1}),
    "bidirectional_lstm": (lambda: [L.Bidirectional(L.LSTM(12), name="bi")],
                           {"UNIDIRECTIONAL_SEQUENCE_LSTM": 2}),
    "gru": (lambda: [L.GRU(24, name="gru")], {"WHILE": 1}),
    # All-zero rows (the digits' blank margins) are masked steps.
    "masking_lstm": (lambda: [L.Masking(0.0, name="mask"), L.LSTM(24, name="lstm")],
                     {"WHILE": 1}),
}


@pytest.mark.parametrize("arch", sorted(TRAINED_RNNS))
def test_trained_digits_rnn_matches_keras_and_restarts_every_invoke(tmp_path, arch):
    """Trained here, each runs in LiteRT within 1e-5 of Keras, as the op TRAINED_RNNS names,
    and every invoke starts from the initial state (the fused kernel keeps its state in a
    variable tensor that LiteRT keeps between invokes)."""
    x, y = _digits_rows()
    layers, expected_ops = TRAINED_RNNS[arch]
    inputs = L.Input((8, 8), name="rows")
    h = inputs
    for layer in layers():
        h = layer(h)
    model = keras.Model(inputs, L.Dense(10, name="head")(h))
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=6, batch_size=64, verbose=0)
    test = x[1400:1464]
    expected = model.predict(test, verbose=0)
    assert (expected.argmax(1) == y[1400:1464]).mean() > 0.8

    # A fixed batch (LiteRT's sequence kernels keep their state in fixed-size tensors).
    result = _convert(model, tmp_path / "digits.tflite", input_shapes={"rows": (16, 8, 8)})
    ops = tflite_ops(result.paths["tflite"])
    for op, count in expected_ops.items():
        assert ops.count(op) == count, ops
    if "WHILE" not in expected_ops:
        assert "WHILE" not in ops, ops
    runner = _litert(result.paths["tflite"])
    for batch in (test[:16], test[16:32], test[:16]):   # the first batch again, last
        got = list(runner(rows=batch).values())[0]
        np.testing.assert_allclose(got, model(batch).numpy(), atol=1e-5)


@pytest.mark.parametrize("kwargs,batch", [
    ({"return_sequences": True}, 2),
    ({"go_backwards": True, "return_sequences": True}, 2),
    ({"use_bias": False, "unit_forget_bias": False}, 2),
    # At batch 1 TF traces the recurrent matmul as a BiasAdd of a squeezed row.
    ({}, 1),
], ids=["sequences", "go_backwards", "no_bias", "batch1"])
def test_keras_lstm_variants_fuse(tmp_path, kwargs, batch):
    inputs = L.Input((6, 3), name="seq")
    out = L.LSTM(5, name="lstm", **kwargs)(inputs)
    model = randomized(keras.Model(inputs, out))
    result = _convert(model, tmp_path / "m.tflite", input_shapes={"seq": (batch, 6, 3)})
    ops = tflite_ops(result.paths["tflite"])
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 1 and "WHILE" not in ops, ops


def test_lstm_with_initial_state_from_inputs_and_run_time_length(tmp_path):
    """The caller's initial (h, c) reach the kernel's state tensors; the sequence length is
    only known at run time (checked at two lengths)."""
    seq = L.Input((None, 3), name="seq")
    h0, c0 = L.Input((4,), name="h0"), L.Input((4,), name="c0")
    out, h, _ = L.LSTM(4, return_sequences=True, return_state=True, name="lstm")(
        seq, initial_state=[h0, c0])
    model = randomized(keras.Model([seq, h0, c0], [out, h]))
    result = _convert(model, tmp_path / "m", target="all",
                      input_shapes={"seq": (2, None, 3), "h0": (2, 4), "c0": (2, 4)})
    ops = tflite_ops(result.paths["tflite"])
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 1 and "WHILE" not in ops, ops
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel", "tfjs"}


def test_dynamic_batch_stays_a_loop_with_a_note_until_input_shapes_fix_it(tmp_path):
    """LiteRT allocates the kernel's state tensors once, at their declared size, so a fused
    LSTM needs a static batch (as TFLiteConverter's does): with a dynamic one the layer stays
    a WHILE loop (still exact, at two batch sizes) and the result says how to fix it."""
    inputs = L.Input((6, 3), name="seq")
    model = randomized(keras.Model(inputs, L.LSTM(5, name="lstm")(inputs)))
    result = _convert(model, tmp_path / "dynamic.tflite")
    assert "WHILE" in tflite_ops(result.paths["tflite"])
    assert any("lstm" in note and "input_shapes" in note for note in result.notes), result.notes
    fixed = tensorforge.convert(model, target="tflite", output=tmp_path / "fixed.tflite",
                                input_shapes={"seq": (3, 6, 3)}, verify=True, progress=False)
    assert fixed.verification.ok and not fixed.notes
    ops = tflite_ops(fixed.paths["tflite"])
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops and "WHILE" not in ops


def test_reading_the_final_cell_state_keeps_a_loop(tmp_path):
    """UNIDIRECTIONAL_SEQUENCE_LSTM has no final-c output (its state tensors cannot be read
    safely after the op: a delegate may run the reader first), so a model that returns c
    keeps the loop, exact, and says why; h alone (return_state) fuses."""
    inputs = L.Input((6, 3), name="seq")
    _, h, c = L.LSTM(5, return_state=True, name="lstm")(inputs)
    both = randomized(keras.Model(inputs, [h, c]))
    result = _convert(both, tmp_path / "c.tflite", input_shapes={"seq": (2, 6, 3)})
    assert "WHILE" in tflite_ops(result.paths["tflite"])
    assert any("cell state" in note for note in result.notes), result.notes
    h_only = keras.Model(inputs, h)
    ops = tflite_ops(_convert(h_only, tmp_path / "h.tflite",
                              input_shapes={"seq": (2, 6, 3)}).paths["tflite"])
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops and "WHILE" not in ops


def test_simple_rnn_bidirectional_and_stacked(tmp_path):
    inputs = L.Input((7, 3), name="seq")
    h = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bi")(inputs)
    h = L.SimpleRNN(5, return_sequences=True, name="rnn")(h)
    h = L.LSTM(3, name="last")(h)
    model = randomized(keras.Model(inputs, h))
    result = _convert(model, tmp_path / "m.tflite", input_shapes={"seq": (2, 7, 3)})
    ops = tflite_ops(result.paths["tflite"])
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 3, ops
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_RNN") == 1 and "WHILE" not in ops, ops


@pytest.mark.parametrize("make", [
    lambda: L.GRU(4, name="gru"),
    lambda: L.LSTM(4, recurrent_activation="hard_sigmoid", name="lstm"),
    lambda: L.LSTM(4, activation="relu", name="lstm"),
    lambda: L.SimpleRNN(4, activation="relu", name="rnn"),
], ids=["gru", "hard_sigmoid", "relu_lstm", "relu_rnn"])
def test_cells_the_kernels_cannot_run_stay_exact_loops(tmp_path, make):
    inputs = L.Input((6, 3), name="seq")
    model = randomized(keras.Model(inputs, make()(inputs)))
    ops = tflite_ops(_convert(model, tmp_path / "m.tflite").paths["tflite"])
    assert "WHILE" in ops and not any(op.startswith("UNIDIRECTIONAL") for op in ops), ops


def test_masked_lstm_stays_a_loop(tmp_path):
    inputs = L.Input((6,), dtype="int32", name="ids")
    h = L.LSTM(5, name="lstm")(L.Embedding(20, 6, mask_zero=True, name="emb")(inputs))
    model = randomized(keras.Model(inputs, h))
    ops = tflite_ops(_convert(model, tmp_path / "m.tflite").paths["tflite"])
    assert "WHILE" in ops and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops


# -- Flax -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_flax_lstm_cell_scan_fuses(tmp_path, reverse):
    """Flax's LSTMCell computes each gate with its own two Dense layers: the same op."""
    import flax.linen as nn
    import jax

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.RNN(nn.LSTMCell(6), reverse=reverse, keep_order=True)(x)

    x = np.random.default_rng(0).standard_normal((2, 10, 3)).astype(np.float32)
    variables = Model().init(jax.random.PRNGKey(0), x)
    result = tensorforge.convert(lambda v: Model().apply(variables, v), target="tflite",
                                 output=tmp_path / "m.tflite", verify=True, example_args=[x],
                                 progress=False)
    assert result.verification.ok, result.verification.table()
    ops = tflite_ops(result.paths["tflite"])
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 1 and "WHILE" not in ops, ops


# -- the pass and the op on every target ----------------------------------------------------------

def test_fused_ops_run_on_every_target_and_expand_back(tmp_path):
    """`fuse-recurrent` in a user's pipeline: the fused module keeps its semantics in the
    interpreter, SavedModel and TF.js (which run the op as a loop again) and JAX."""
    from tensorforge.backends.jax import to_jax

    inputs = L.Input((7, 5), name="seq")
    h = L.LSTM(4, return_sequences=True, name="lstm")(inputs)
    model = randomized(keras.Model(inputs, L.SimpleRNN(3, name="rnn")(h)))
    module = optimize(from_keras(model), None)
    fused = module.clone()
    assert fuse_recurrent(fused) == 2
    assert {"lstm", "rnn"} <= {n.op for n in fused.main} and \
        not any(n.regions for n in fused.main)
    x = np.random.default_rng(2).standard_normal((3, 7, 5)).astype(np.float32)
    want = model(x).numpy()
    np.testing.assert_allclose(run_graph(fused.main, [x])[0], want, atol=1e-5)
    fn, params = to_jax(fused)
    np.testing.assert_allclose(np.asarray(fn(params, x)[0]), want, atol=1e-5)
    expanded = fused.clone()
    assert expand_recurrent(expanded) == 2
    np.testing.assert_allclose(run_graph(expanded.main, [x])[0], want, atol=1e-5)

    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 passes="canonicalize,fuse-recurrent", progress=False,
                                 input_shapes={"seq": (3, 7, 5)})
    assert result.verification.ok, result.verification.table()
    assert {n.op for n in result.module.main} >= {"lstm", "rnn"}


# -- the matcher on random cells --------------------------------------------------------------

MUTATIONS = ("none", "tanh_gate", "peephole", "swap_state", "relu_cell", "extra_state")


def _scan_cell_module(data, draw):
    """A scan running an LSTM cell written one of many equivalent ways (one fused kernel split
    four ways or a matmul per gate, operand orders, bias or not), or with a mutation that
    makes it something else; returns (module, mutated)."""
    from tensorforge.ir.graph import Graph, Module
    from tensorforge.ir.types import DType, TensorType

    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    batch, time, feat, units = (draw(st.integers(1, 3)), draw(st.integers(1, 5)),
                                draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    fused, bias = draw(st.booleans()), draw(st.booleans())
    flip = lambda pair: pair[::-1] if draw(st.booleans()) else pair  # noqa: E731
    mutation = draw(st.sampled_from(MUTATIONS))
    f32 = lambda *shape: TensorType(DType.f32, shape)  # noqa: E731

    body = Graph("body")
    h, c = body.add_input(f32(batch, units)), body.add_input(f32(batch, units))
    extra = body.add_input(f32(batch, units)) if mutation == "extra_state" else None
    x = body.add_input(f32(batch, feat))

    def op(name, *inputs, **attrs):
        return body.add(name, list(inputs), attrs).outputs

    def const(*shape):
        return body.constant(rng.normal(0, 0.5, shape).astype(np.float32))

    def affine(n):
        terms = flip([op("matmul", x, const(feat, n))[0], op("matmul", h, const(units, n))[0]])
        z = op("add", *terms)[0]
        return op("add", *flip([z, const(n)]))[0] if bias else z

    gates = op("split", affine(4 * units), axis=1, sizes=[units] * 4) if fused else \
        [affine(units) for _ in range(4)]
    i, f, g, o = gates
    act = "relu" if mutation == "relu_cell" else "tanh"
    sig_i = op("tanh" if mutation == "tanh_gate" else "sigmoid", i)[0]
    forget_src = op("add", f, c)[0] if mutation == "peephole" else f
    keep = op("mul", *flip([op("sigmoid", forget_src)[0], h if mutation == "swap_state" else c]))[0]
    new_c = op("add", *flip([keep, op("mul", *flip([sig_i, op(act, g)[0]]))[0]]))[0]
    new_h = op("mul", *flip([op("sigmoid", o)[0], op(act, new_c)[0]]))[0]
    body.set_outputs([new_h, new_c, *([extra] if extra is not None else []), new_h])

    main = Graph("main")
    seq = main.add_input(f32(time, batch, feat), "seq")
    zero = main.constant(np.zeros((batch, units), np.float32))
    carry = [zero, zero] + ([zero] if extra is not None else [])
    outs = main.add("scan", [*carry, seq], {"num_carry": len(carry)}, regions=[body]).outputs
    main.set_outputs([outs[0], outs[-1]])
    return Module([main]), mutation != "none"


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_fuse_recurrent_keeps_semantics_of_random_cells(data):
    """Every equivalent spelling of the LSTM cell fuses, every mutation is left alone, and
    the result always computes what the loop computed."""
    module, mutated = _scan_cell_module(data, data.draw)
    seq_type = module.main.inputs[0].type
    x = np.random.default_rng(0).normal(size=seq_type.shape).astype(np.float32)
    before = run_graph(module.main, [x])
    assert fuse_recurrent(module) == (0 if mutated else 1)
    after = run_graph(module.main, [x])
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-5)
