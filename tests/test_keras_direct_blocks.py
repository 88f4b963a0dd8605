"""Direct lifting of KerasHub's text backbones (frontends/keras/block_rules.py): embeddings,
position embeddings, TransformerEncoder with MultiHeadAttention and EinsumDense, and `x[...]`
in a Functional graph are lifted from their configurations, with nothing traced, to the very
TFLite bytes the whole-model trace gives; what the rules do not cover is traced as before."""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge
from tensorforge.frontends.keras import lift as keras_lift
from tensorforge.ir.graph import Graph
from tensorforge.ir.types import DType, TensorType

keras = pytest.importorskip("keras")
keras_hub = pytest.importorskip("keras_hub")


def _seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype(w.dtype) if w.dtype.kind == "f"
                       else w for w in model.get_weights()])
    return model


def _lift(model, monkeypatch, direct: bool, shapes=None):
    monkeypatch.setenv(keras_lift.DIRECT_ENV, "1" if direct else "0")
    return keras_lift.from_keras(model, input_shapes=shapes)


def _tflite(module, path) -> bytes:
    return tensorforge.convert(module, target="tflite", output=path,
                               progress=False).artifacts["tflite"]


def _no_tracing(monkeypatch):
    """Makes every TF trace (of the model, of one layer) fail: the fallbacks catch the error,
    so the test sees it in `traces`."""
    traces = []

    def refuse(*args, **kwargs):
        traces.append(args)
        raise AssertionError("traced")
    for name in ("_trace", "_trace_layer", "tf_function_trace"):
        monkeypatch.setattr(keras_lift, name, refuse)
    return traces


def _nodes(module) -> list:
    """Each node's op, scope, attributes (constants by dtype, shape and bytes), operands (by
    position) and result types: the IR as the passes see it, before any of them ran."""
    index = {}
    rows = []
    for n in module.main:
        attrs = {k: (a.dtype.str, a.shape, a.tobytes()) if isinstance(a, np.ndarray) else a
                 for k, a in n.attrs.items()}
        rows.append((n.op, n.scope, attrs, [index.get(id(v), v.name) for v in n.inputs],
                     [str(o.type) for o in n.outputs], [o.name for o in n.outputs]))
        for o in n.outputs:
            index[id(o)] = len(index)
    return rows


def _same_as_traced(model, monkeypatch, tmp_path, shapes=None, direct_only=True):
    reference = _lift(model, monkeypatch, False, shapes)
    expected = _nodes(reference)
    traced = _tflite(reference, tmp_path / "traced.tflite")
    with monkeypatch.context() as m:
        traces = _no_tracing(m) if direct_only else []
        module = _lift(model, monkeypatch, True, shapes)
        assert traces == [], "traced"
    assert _nodes(module) == expected       # the same IR, node for node
    assert _tflite(module, tmp_path / "direct.tflite") == traced
    if direct_only:
        assert all(n.loc.startswith("keras:") for n in module.main)
    return module


def _assert_matches_keras(model, shapes, feeds, tmp_path):
    """Converts `model` at `shapes` with verification on `feeds`: the artifact and the IR
    compute what Keras computes."""
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 input_shapes=shapes, verify=True, verify_inputs=feeds,
                                 progress=False)
    assert result.verification.ok, result.verification.table()


def _backbone(name, **overrides):
    from tensorforge.tools.sweeps.kerashub_configs import CONFIGS

    keras.backend.clear_session()
    return _seeded(getattr(keras_hub.models, name)(**{**CONFIGS[name], **overrides}))


# BERT: Keras embeddings, dropout (the explicit softmax); RoBERTa: TokenAndPositionEmbedding;
# ALBERT: no dropout (dot_product_attention), one block called twice.
@pytest.mark.parametrize("name", ["BertBackbone", "RobertaBackbone", "AlbertBackbone"])
@pytest.mark.parametrize("batch", [1, None])
def test_text_backbones_lift_directly_to_the_traced_bytes(name, batch, monkeypatch, tmp_path):
    model = _backbone(name)
    _same_as_traced(model, monkeypatch, tmp_path, {t.name: (batch, 16) for t in model.inputs})


def _text_backbones() -> list[str]:
    from tensorforge.tools.sweeps.kerashub_configs import CONFIGS

    return [name for name in CONFIGS if name.endswith("Backbone") and not callable(CONFIGS[name])
            and "vocabulary_size" in CONFIGS[name]]


@pytest.mark.slow
@pytest.mark.parametrize("name", _text_backbones())
def test_every_kerashub_text_backbone_lifts_to_the_traced_ir(name, monkeypatch, tmp_path):
    """The conformance sweep's text backbones at a fixed [2, 8]: where the rules apply the
    IR is the trace's node for node, and where they do not the model is traced as before
    (run by hand on keras-hub 0.32: the rules covered ALBERT, BERT, DistilBERT, ELECTRA,
    RoBERTa, XLM-RoBERTa, GPT-2 and OPT, the other 30-odd fell back)."""
    model = _backbone(name)
    _require_text_inputs(model)
    shapes = {t.name: (2, 8) for t in model.inputs}
    expected = _nodes(_lift(model, monkeypatch, False, shapes))
    assert _nodes(_lift(model, monkeypatch, True, shapes)) == expected


def _require_text_inputs(model):
    if any(len(t.shape) != 2 or t.shape[1] is not None for t in model.inputs):
        pytest.skip("not a [batch, sequence] text model")


@pytest.mark.parametrize("name", ["DistilBertBackbone", "ElectraBackbone", "GPT2Backbone",
                                  "OPTBackbone"])
def test_more_text_backbones(name, monkeypatch, tmp_path):
    model = _backbone(name)
    _same_as_traced(model, monkeypatch, tmp_path, {t.name: (2, 8) for t in model.inputs})


def test_a_run_time_sequence_length_is_traced(monkeypatch):
    """Run-time dims past the batch are outside the rules: the whole model is traced."""
    model = _backbone("DistilBertBackbone")
    module = _lift(model, monkeypatch, True)
    assert all(n.loc.startswith("tf:") for n in module.main)


def _encoder_model(mask_dtype, **encoder):
    tokens = keras.Input((8,), dtype="int32", name="ids")
    mask = keras.Input((8,), dtype=mask_dtype, name="mask") if mask_dtype else None
    x = keras.layers.Embedding(30, 16, name="embed")(tokens)
    x = keras_hub.layers.PositionEmbedding(8, name="positions")(x) + x
    for i in range(2):
        x = keras_hub.layers.TransformerEncoder(24, 4, name=f"encoder_{i}", **encoder)(
            x, padding_mask=mask)
    outputs = {"last": x[:, -1], "head": x[..., :4], "wide": x[:, None, 0, 2:10:3]}
    inputs = [tokens] if mask is None else [tokens, mask]
    return _seeded(keras.Model(inputs, outputs))


@pytest.mark.parametrize("mask_dtype,encoder", [
    ("int32", dict(normalize_first=True, activation="relu", dropout=0.1)),
    ("bool", dict(activation="gelu", dropout=0.0)),
    ("bool", dict(dropout=0.1)),
    (None, dict(dropout=0.2, layer_norm_epsilon=1e-3)),
    (None, dict(dropout=0.0, normalize_first=True)),
], ids=["int-mask-norm-first", "bool-mask-no-dropout", "bool-mask", "no-mask",
        "no-mask-no-dropout"])
def test_encoders_in_a_functional_model(mask_dtype, encoder, monkeypatch, tmp_path):
    model = _encoder_model(mask_dtype, **encoder)
    shapes = {t.name: (2, 8) for t in model.inputs}
    module = _same_as_traced(model, monkeypatch, tmp_path, shapes)
    # and it computes what Keras computes (verify runs the Keras model beside the artifact)
    feeds = {"ids": np.random.default_rng(1).integers(-30, 30, (2, 8)).astype(np.int32)}
    if mask_dtype:
        feeds["mask"] = (np.arange(8) < np.array([[5], [8]])).astype(mask_dtype)
    _assert_matches_keras(model, shapes, feeds, tmp_path)
    assert {n.loc.split(":")[1] for n in module.main} >= {"TransformerEncoder",
                                                          "MultiHeadAttention", "EinsumDense"}


@pytest.mark.parametrize("masked,decoder", [
    ("int32", dict(dropout=0.1)),
    ("int32", dict(dropout=0.0)),
    ("bool", dict(dropout=0.1, normalize_first=True)),
    (None, dict(dropout=0.0, normalize_first=True)),
    (None, dict(dropout=0.1, activation="relu")),
], ids=["padding-and-causal", "padding-and-causal-no-dropout", "bool-padding",
        "causal-no-dropout", "causal-dropout"])
def test_decoders_in_a_functional_model(masked, decoder, monkeypatch, tmp_path):
    """TransformerDecoder blocks (GPT-2's) without cross-attention: the causal mask alone
    (a bool constant) or with a padding mask (their int32 minimum), and one called with
    use_causal_mask=False."""
    x_in = keras.Input((8, 16), name="x")
    mask = keras.Input((8,), dtype=masked, name="mask") if masked else None
    x = keras_hub.layers.TransformerDecoder(24, 2, name="decoder_0", **decoder)(
        x_in, decoder_padding_mask=mask)
    x = keras_hub.layers.TransformerDecoder(24, 2, name="decoder_1", **decoder)(
        x, decoder_padding_mask=mask, use_causal_mask=False)
    model = _seeded(keras.Model([x_in, mask] if masked else x_in, x))
    shapes = {t.name: (2, 8, 16) if t.name == "x" else (2, 8) for t in model.inputs}
    _same_as_traced(model, monkeypatch, tmp_path, shapes)
    feeds = {"x": np.random.default_rng(3).normal(size=(2, 8, 16)).astype(np.float32)}
    if masked:
        feeds["mask"] = (np.arange(8) < np.array([[6], [8]])).astype(masked)
    _assert_matches_keras(model, shapes, feeds, tmp_path)


@pytest.mark.parametrize("name,batch,limit,direct", [
    ("GPT2Backbone", 1, 100, True),       # the causal mask (64) and positions (128) fold
    ("GPT2Backbone", 2, 100, False),      # at batch 2 neither does (128, 256)
    ("AlbertBackbone", 1, 100, False),    # dot_product_attention's ones (2 x 8 x 8 = 128)
    ("AlbertBackbone", 1, 200, True),
    ("BertBackbone", 2, 200, False),      # positions (2 x 8 x 16 = 256): traced alone
])
def test_constants_fold_where_the_lifter_folds_them(name, batch, limit, direct, monkeypatch,
                                                    tmp_path):
    """The TF lifter leaves a constant result past FOLD_LIMIT that outgrows its operands as
    an op; the rules refuse there, so the IR stays the trace's (with a lowered limit)."""
    from tensorforge.frontends.tf import context as tf_context

    monkeypatch.setattr(tf_context, "FOLD_LIMIT", limit)
    model = _backbone(name)
    module = _same_as_traced(model, monkeypatch, tmp_path,
                             {t.name: (batch, 8) for t in model.inputs}, direct_only=direct)
    assert any(n.loc.startswith("tf:") for n in module.main) != direct


def test_a_decoder_at_a_run_time_batch_is_traced(monkeypatch, tmp_path):
    """The causal mask of a run-time batch is built at run time: outside the rules."""
    model = _backbone("GPT2Backbone")
    module = _same_as_traced(model, monkeypatch, tmp_path,
                             {t.name: (None, 8) for t in model.inputs}, direct_only=False)
    assert any(n.loc.startswith("tf:") for n in module.main)


class _Mix(keras.layers.Layer):
    """No rule covers it: traced on its own (an einsum, which the lifter expands)."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], shape[-1]), name="w")

    def call(self, x):
        a, b = keras.ops.matmul(x, self.w), keras.ops.tanh(x)
        return keras.ops.einsum("bsd,btd->btd", a, b)


def test_embeddings_without_an_encoder(monkeypatch, tmp_path):
    """The embedding rules alone: the position constant goes where the trace puts it (before
    its first user, after the Dense layers), at a fixed and a run-time batch; a layer traced
    on its own keeps the lifter's order in the reorder."""
    tokens = keras.Input((6,), dtype="int32", name="ids")
    x = keras.layers.Embedding(20, 8, name="embed")(tokens)
    y = keras.layers.Dense(8, activation="relu", name="dense")(x)
    z = keras.layers.ReversibleEmbedding(20, 8, name="reversible")(tokens)
    out = y + keras_hub.layers.PositionEmbedding(6, name="positions")(x) + _Mix(name="mix")(z)
    model = _seeded(keras.Model(tokens, out))
    for batch in (3, None):
        shapes = {"ids": (batch, 6)}
        module = _same_as_traced(model, monkeypatch, tmp_path, shapes, direct_only=False)
        locs = {n.loc.split(":")[0] for n in module.main}
        assert locs == {"keras", "tf"}          # rules, and the layer traced alone


class _Encoder(keras_hub.layers.TransformerEncoder):
    """A subclass: its `call` may differ, so no rule covers it."""


def _attention_mask_model():
    x_in = keras.Input((6, 8), name="x")
    pairs = keras.Input((6, 6), dtype="int32", name="pairs")
    x = keras_hub.layers.TransformerEncoder(16, 2, name="masked")(x_in, attention_mask=pairs)
    return keras.Model([x_in, pairs], x), {"x": (1, 6, 8), "pairs": (1, 6, 6)}


def _keras_mask_model():
    ids = keras.Input((6,), dtype="int32", name="ids")
    x = keras.layers.Embedding(20, 8, mask_zero=True, name="embed")(ids)
    return keras.Model(ids, keras_hub.layers.TransformerEncoder(16, 2, name="masked")(x)), \
        {"ids": (1, 6)}


def _subclass_model():
    x_in = keras.Input((6, 8), name="x")
    return keras.Model(x_in, _Encoder(16, 2, name="subclassed")(x_in)), {"x": (1, 6, 8)}


@pytest.mark.parametrize("build", [_attention_mask_model, _keras_mask_model, _subclass_model],
                         ids=["attention-mask", "keras-mask", "subclass"])
def test_uses_outside_the_rules_are_traced(build, monkeypatch, tmp_path):
    """An attention mask, a Keras mask (padding ids), a subclass of a covered layer: traced
    with the model, to the same bytes as before, and computing what Keras computes."""
    model, shapes = build()
    _seeded(model)
    module = _same_as_traced(model, monkeypatch, tmp_path, shapes, direct_only=False)
    assert all(n.loc.startswith("tf:") for n in module.main)
    rng = np.random.default_rng(2)
    feeds = ({"x": rng.normal(size=shapes["x"]).astype(np.float32)} if "x" in shapes
             else {"ids": np.array([[3, 7, 1, 0, 0, 0]], np.int32)})
    if "pairs" in shapes:
        feeds["pairs"] = (rng.random(shapes["pairs"]) > 0.3).astype(np.int32)
    _assert_matches_keras(model, shapes, feeds, tmp_path)


def test_depth_first_order_and_reorder():
    """`depth_first_order` puts producers first, operands in order, each constant just
    before its first user; `Graph.reorder` refuses an order that is not topological."""
    from tensorforge.frontends.keras.direct import depth_first_order

    g = Graph()
    a = g.add_input(TensorType(DType.f32, (2,)), "a")
    b = g.add_input(TensorType(DType.f32, (2,)), "b")
    nb = g.add("neg", [b]).outputs[0]
    c = g.constant(np.float32(2.0))
    na = g.add("neg", [a]).outputs[0]
    s = g.add("add", [na, nb]).outputs[0]
    m = g.add("mul", [s, c]).outputs[0]
    g.set_outputs([m])
    depth_first_order(g)
    assert [n.op for n in g] == ["neg", "neg", "add", "constant", "mul"]
    first, second = list(g)[:2]
    assert first.inputs[0] is a and second.inputs[0] is b
    with pytest.raises(ValueError):
        g.reorder(list(g)[::-1])
    with pytest.raises(ValueError):
        g.reorder(list(g)[1:])
    # Nodes of one TF op go together after that op's inputs, in their own order; an input a
    # folded node lost is visited before its operands.
    na_node, nb_node = na.producer, nb.producer
    depth_first_order(g, units={s.producer: ([s.producer], [nb, na])})
    assert list(g)[:2] == [nb_node, na_node]
    depth_first_order(g, after={na_node: [nb_node]})
    assert list(g)[:2] == [nb_node, na_node]
    depth_first_order(g)
    assert list(g)[:2] == [na_node, nb_node]
