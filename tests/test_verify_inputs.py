"""Verification inputs: random values the model accepts (ids below their table's size even
through casts and reshapes, 0/1 padding masks), dict-input Keras models, and user-given
inputs (`verify_inputs=`, `--verify-inputs FILE.npz`) checked against the signature."""

from pathlib import Path

import numpy as np
import pytest

import tensorforge
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.tools import verify as V
from tensorforge.tools.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits_cnn.keras"


def _encoder_inputs_module() -> Module:
    """token ids -> a 50-row table, segment ids (through a cast and a reshape) -> a 2-row
    table, a padding mask multiplied in: the inputs of a BERT-style encoder."""
    g = Graph()
    tokens = g.add_input(TensorType(DType.i32, ("batch", 8)), "token_ids")
    segments = g.add_input(TensorType(DType.i32, ("batch", 8)), "segment_ids")
    mask = g.add_input(TensorType(DType.i32, ("batch", 8)), "padding_mask")
    words = g.constant(np.zeros((50, 4), np.float32), "embed/words")
    kinds = g.constant(np.zeros((2, 4), np.float32), "embed/segments")
    seg = g.add("cast", [segments], {"to": DType.i64}).output
    seg = g.add("reshape", [seg], {"shape": (-1, 8)}).output
    x = g.add("add", [g.add("gather", [words, tokens], {"axis": 0}).output,
                      g.add("gather", [kinds, seg], {"axis": 0}).output]).output
    m = g.add("expand_dims", [g.add("cast", [mask], {"to": DType.f32}).output],
              {"axis": -1}).output
    g.set_outputs([g.add("mul", [x, m]).output])
    return Module([g], {"input_names": ["token_ids", "segment_ids", "padding_mask"],
                        "output_names": ["out"]})


def test_random_inputs_are_values_the_model_accepts():
    module = _encoder_inputs_module()
    for seed in range(5):
        x = V.sample_inputs(module, batch=3, seed=seed)
        assert x["token_ids"].min() >= 0 and x["token_ids"].max() < 50
        assert set(np.unique(x["segment_ids"])) <= {0, 1}        # through cast + reshape
        mask = x["padding_mask"]
        assert set(np.unique(mask)) <= {0, 1} and (mask[:, 0] == 1).all()
        # ones then zeros, like padding
        assert (np.diff(mask, axis=1) <= 0).all()
    tensorforge.run_graph(module.main, list(x.values()))


def test_given_inputs_are_checked_against_the_signature_all_at_once():
    module = _encoder_inputs_module()
    with pytest.raises(ConversionError) as err:
        V.given_inputs(module, {"token_ids": np.zeros((2, 8), np.float32),
                                "segment_ids": np.zeros((2, 7), np.int32),
                                "padding_mask": np.zeros((3, 8), np.int32),
                                "labels": np.zeros(2)})
    text = str(err.value)
    assert "'labels' is not an input" in text
    assert "'token_ids': float32 values for a i32 input" in text
    assert "'segment_ids': dim 1 is 7, the model needs 8" in text
    assert "'padding_mask': dim 0 (batch) is 3, but 'token_ids' gives batch = 2" in text
    with pytest.raises(ConversionError, match="input 'padding_mask' is missing"):
        V.given_inputs(module, {"token_ids": np.zeros((2, 8), np.int32),
                                "segment_ids": np.zeros((2, 8), np.int32)})


def test_dict_input_keras_model_verifies_on_every_target(tmp_path):
    import keras

    ids = keras.Input((8,), dtype="int32", name="token_ids")
    mask = keras.Input((8,), dtype="int32", name="padding_mask")
    x = keras.layers.Embedding(50, 16, name="embed")(ids)
    m = keras.ops.cast(keras.ops.expand_dims(mask, -1), "float32")
    pooled = keras.ops.sum(x * m, axis=1) / keras.ops.sum(m, axis=1)
    out = keras.layers.Dense(3, name="head")(pooled)
    model = keras.Model({"token_ids": ids, "padding_mask": mask}, {"logits": out})
    result = tensorforge.convert(model, target="all", output=tmp_path / "out", verify=True)
    v = result.verification
    assert {r.runtime for r in v.rows} == {"ir", "tflite", "savedmodel", "tfjs"}
    assert v.ok, v.table()

    given = {"token_ids": np.array([[3, 1, 4, 1, 5, 9, 2, 6]], np.int32),
             "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0]], np.int32)}
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 verify_inputs=given)
    assert result.verification.ok and result.verification.batch == 1
    assert "given inputs" in result.verification.table()


def test_cli_verify_inputs(tmp_path, capsys):
    digits = np.load(ROOT / "examples" / "digits_test.npz")["x"][:3]
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, image=digits)
    np.savez(bad, pixels=digits)
    assert cli_main(["compile", str(DIGITS), "-o", str(tmp_path / "d.tflite"),
                     "--verify-inputs", str(good)]) == 0
    out = capsys.readouterr().out
    assert "(batch 3, given inputs)" in out and "tflite" in out
    assert cli_main(["compile", str(DIGITS), "-o", str(tmp_path / "e.tflite"),
                     "--verify-inputs", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "does not fit the model's inputs" in err and "'pixels' is not an input" in err
    assert "input 'image' is missing" in err
    assert not (tmp_path / "e.tflite").exists()


# -- fixing input shapes -------------------------------------------------------------------------

def _two_input_model():
    import keras

    ids = keras.Input((None,), dtype="int32", name="token_ids")      # dynamic sequence
    feats = keras.Input((4,), name="features")
    x = keras.ops.mean(keras.layers.Embedding(30, 4, name="embed")(ids), axis=1)
    return keras.Model([ids, feats], keras.layers.Dense(2, name="head")(x + feats))


def test_input_shapes_make_a_static_artifact(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = _two_input_model()
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "s.tflite",
                                 input_shapes={"token_ids": (1, 16), "features": (1, None)},
                                 verify=True)
    assert result.verification.ok, result.verification.table()
    shapes = {d["name"]: d["shape_signature"].tolist()
              for d in Interpreter(model_path=str(result.paths["tflite"])).get_input_details()}
    assert sorted(shapes.values()) == [[1, 4], [1, 16]]
    types = {v.name: v.type.shape for v in result.module.main.inputs}
    assert types == {"token_ids": (1, 16), "features": (1, 4)}


def test_input_shapes_problems_are_listed_together(tmp_path, capsys):
    model = _two_input_model()
    with pytest.raises(ConversionError) as err:
        tensorforge.from_keras(model, input_shapes={"tokens": (1, 8), "features": (1, 8),
                                                    "token_ids": (1, 0, 3)})
    text = str(err.value)
    assert "'tokens', which is not an input (inputs: token_ids, features)" in text
    assert "input 'features': dim 1 is 4 in the model, not 8" in text
    assert "input 'token_ids': 3 dims given, the model's input has 2" in text
    # CLI: a malformed entry is one clear error; a non-Keras source says what applies.
    assert cli_main(["compile", str(DIGITS), "-o", str(tmp_path / "d.tflite"),
                     "--input-shape", "image=1,8,8,1"]) == 1
    assert "expected NAME:D0,D1,..." in capsys.readouterr().err
    assert cli_main(["compile", str(DIGITS), "-o", str(tmp_path / "d.tflite"),
                     "--input-shape", "image:3,8,8,1"]) == 0
    with pytest.raises(ConversionError, match="applies to Keras models"):
        tensorforge.convert(ROOT / "examples" / "small_cnn.tfir", output=tmp_path / "x.tflite",
                            input_shapes={"image": (1, 8, 8, 1)})


def test_run_time_dims_an_op_needs_fixed_are_named_with_the_fix(tmp_path):
    """Splitting a run-time dim into equal pieces needs its size: the error names the op, the
    input and how to fix it, and the fix converts."""
    import keras

    tokens = keras.Input((None, 8), name="tokens")
    half = keras.layers.Lambda(lambda t: keras.ops.split(t, 2, axis=1)[0], name="halve")(tokens)
    model = keras.Model(tokens, half)
    with pytest.raises(ConversionError) as err:
        tensorforge.from_keras(model)
    text = str(err.value)
    assert "scope 'halve'" in text and "Split of the run-time dim" in text   # the op
    assert "inputs leave to run time: tokens [batch, ?" in text     # the input and its dims
    assert "input_shapes={'tokens': (1, N, 8)}" in text and "--input-shape tokens:1,N,8" in text
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "p.tflite",
                                 input_shapes={"tokens": (1, 16, 8)}, verify=True)
    assert result.verification.ok


def test_dense_on_a_run_time_sequence_stays_dynamic(tmp_path):
    """Dense on [batch, ?, d] (Tensordot's reshapes with two run-time dims) keeps both dims
    dynamic: one artifact per target, verified at two (batch, sequence) sizes."""
    import keras

    tokens = keras.Input((None, 8), name="tokens")
    model = keras.Model(tokens, keras.layers.Dense(4, name="proj")(tokens))
    result = tensorforge.convert(model, target="all", output=tmp_path / "p", verify=True)
    v = result.verification
    assert v.ok, v.table()
    assert {r.sizes for r in v.rows} == {"batch=2, dim=2", "batch=1, dim=5"}
    assert {r.runtime for r in v.rows} == {"keras", "ir", "tflite", "savedmodel", "tfjs"} - {"keras"}


def test_several_given_input_sets_check_one_artifact_at_each_size(tmp_path):
    """A list of input sets: every runtime runs each (a model whose valid inputs the random
    generator cannot guess, checked at two sequence lengths)."""
    model = _two_input_model()
    rng = np.random.default_rng(0)
    sets = [{"token_ids": rng.integers(0, 30, (b, s)).astype(np.int32),
             "features": rng.standard_normal((b, 4)).astype(np.float32)}
            for b, s in ((1, 3), (4, 9))]
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify_inputs=sets)
    v = result.verification
    assert v.ok, v.table()
    assert "given inputs at 2 sizes" in v.table()
    assert {r.sizes for r in v.rows} == {"batch=1, dim=3", "batch=4, dim=9"}
    bad = dict(sets[1], token_ids=sets[1]["token_ids"].astype(np.float32))
    with pytest.raises(ConversionError, match="float32 values for a i32 input"):
        tensorforge.convert(model, target="tflite", output=tmp_path / "x.tflite",
                            verify_inputs=[sets[0], bad])


def test_a_runtime_that_cannot_run_the_artifact_fails_the_check(tmp_path, monkeypatch):
    """A runtime crashing on an artifact is a failed verification (NO rows and the reason
    under the table), not an exception that loses the other runtimes' results."""
    import dataclasses

    from tensorforge.tools import convert as C

    def crash(path, inputs, names):
        raise RuntimeError("Node crashed")

    monkeypatch.setitem(C.TARGETS, "tfjs", dataclasses.replace(C.TARGETS["tfjs"], run=crash))
    result = tensorforge.convert(lambda x: x * 2, target="all", output=tmp_path / "m",
                                 verify=True, example_args=[np.ones((2, 3), np.float32)])
    v = result.verification
    assert not v.ok
    assert {r.runtime for r in v.rows if not r.ok} == {"tfjs"}
    assert "tfjs did not run: RuntimeError: Node crashed" in v.table()
