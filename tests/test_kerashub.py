"""KerasHub models, the fast representatives of the sweep (`python -m
tensorforge.tools.sweeps.kerashub` runs every backbone): a decoder with rotary embeddings and
grouped-query attention (Llama), an encoder with segment ids and two outputs (BERT) and a
vision transformer (ViT), each converted once with dynamic batch and sequence to every target
and verified against Keras at two sizes from the same artifacts; a KerasHub model saved with
`model.save` through the CLI; and `--input-shape` for a static artifact. A Mixtral
mixture-of-experts decoder covers the router (top-k, one-hot)."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tensorforge
from tensorforge.tools.cli import main as cli_main

keras_hub = pytest.importorskip("keras_hub")

TEXT = dict(vocabulary_size=50, num_layers=2, hidden_dim=16, intermediate_dim=32)


def _llama():
    return keras_hub.models.LlamaBackbone(num_query_heads=4, num_key_value_heads=2, **TEXT)


@pytest.mark.parametrize("build", [
    _llama,
    lambda: keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=32, **TEXT),
    lambda: keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2,
                                         num_heads=2, hidden_dim=16, mlp_dim=32),
    # Mixture of experts: a top-k router one-hot encodes its experts.
    lambda: keras_hub.models.MixtralBackbone(num_query_heads=2, num_key_value_heads=1,
                                             num_experts=4, top_k=2, **TEXT),
], ids=["llama", "bert", "vit", "mixtral-moe"])
def test_backbone_converts_dynamic_to_every_target(build, tmp_path):
    model = build()
    result = tensorforge.convert(model, target="all", output=tmp_path / "out", verify=True)
    v = result.verification
    assert v.ok, v.table()
    assert {r.runtime for r in v.rows} == {"ir", "tflite", "savedmodel", "tfjs"}
    assert len({r.sizes for r in v.rows}) == 2, v.table()     # two sizes, one artifact each
    names = {spec.name for spec in model.inputs}
    assert {inp.name for inp in result.module.main.inputs} == names
    for inp in result.module.main.inputs:
        assert inp.type.shape[0] == "batch"
    # The .tflite keeps -1 in its signature for every run-time dim.
    details = Interpreter(model_path=str(result.paths["tflite"])).get_input_details()
    for d in details:
        assert d["shape_signature"][0] == -1


def test_dict_outputs_keep_their_keys_in_every_signature(tmp_path):
    model = keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=32, **TEXT)
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "b.tflite")
    runner = Interpreter(model_path=str(result.paths["tflite"])).get_signature_runner()
    rng = np.random.default_rng(0)
    feeds = {"token_ids": rng.integers(0, 50, (4, 9)).astype(np.int32),
             "segment_ids": rng.integers(0, 2, (4, 9)).astype(np.int32),
             "padding_mask": np.ones((4, 9), np.int32)}
    got = runner(**feeds)
    want = model(feeds)
    assert set(got) == set(want) == {"sequence_output", "pooled_output"}
    for k in got:
        np.testing.assert_allclose(got[k], np.asarray(want[k]), rtol=1e-5, atol=1e-5)


def test_saved_kerashub_model_through_the_cli(tmp_path, capsys):
    path = tmp_path / "llama.keras"
    _llama().save(path)
    assert cli_main(["compile", str(path), "--target", "all", "--verify",
                     "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "random inputs at 2 sizes" in out and " NO" not in out
    # --input-shape freezes the dims for a static artifact.
    assert cli_main(["compile", str(path), "-o", str(tmp_path / "s.tflite"), "--verify",
                     "--input-shape", "token_ids:1,8", "--input-shape",
                     "padding_mask:1,8"]) == 0
    details = Interpreter(model_path=str(tmp_path / "s.tflite")).get_input_details()
    assert sorted(d["shape_signature"].tolist() for d in details) == [[1, 8], [1, 8]]


def test_dfine_maps_over_its_batch_with_a_while_loop(tmp_path):
    """D-FINE maps over its batch with a While loop of TensorLists: the loops lift to IR
    `while` regions and the artifact runs them in LiteRT, verified against Keras."""
    from tensorforge.tools.sweeps.kerashub import build

    model = build("DFineBackbone")
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "dfine.tflite",
                                 verify=True)
    assert result.verification.ok, result.verification.table()
    loops = [n for n in result.module.main.walk() if n.op == "while"]
    assert loops and any("initial_query_reference_generator" in n.scope for n in loops)
