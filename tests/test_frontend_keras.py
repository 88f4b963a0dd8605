"""Keras -> IR (frontends/keras/, frontends/tf/): every layer family and the
keras.applications models lift, verify, and match Keras through the IR interpreter.

The heavy applications are marked slow (`make test-slow`); the default run keeps a small CNN,
MobileNetV2 at 96x96 and a 2-layer transformer encoder.
"""

from __future__ import annotations

import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
L = keras.layers

from tensorforge.frontends.keras import from_keras, keras_scope_fn  # noqa: E402
from tensorforge.frontends.tf import from_saved_model, lift_concrete_function  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402
from tensorforge.ir.interpreter import run_graph  # noqa: E402
from tensorforge.ir.verify import verify_module  # noqa: E402

RTOL = 1e-4


@pytest.fixture(autouse=True)
def _seeded():
    """Keras initializers are random: seed them so every run checks the same weights."""
    keras.utils.set_random_seed(0)


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref|: relative to the output's scale, so values near zero do
    not blow it up."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def random_inputs(model_or_shapes, batch, seed=0, int_high=None):
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype in model_or_shapes:
        shape = (batch,) + tuple(shape)
        if np.dtype(dtype).kind in "iu":
            out.append(rng.integers(0, int_high or 10, shape).astype(dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def keras_outputs(model, xs):
    out = model(xs[0] if len(xs) == 1 else xs, training=False)
    if isinstance(out, dict):
        return [np.asarray(out[k]) for k in sorted(out)]
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    return [np.asarray(out)]


def check_model(model, *, batches=(2,), int_high=None, module=None, rtol=RTOL):
    """Lifts `model`, verifies the IR and compares it with Keras at each batch size."""
    module = module or from_keras(model)
    verify_module(module)
    specs = [(v.type.shape[1:], v.type.dtype.np) for v in module.main.inputs]
    for b in batches:
        xs = random_inputs(specs, b, seed=b, int_high=int_high)
        got = run_graph(module.main, xs)
        ref = keras_outputs(model, xs)
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            err = rel_err(g, r)
            if os.environ.get("TENSORFORGE_REPORT_ERR"):
                print(f"\n{model.name} batch={b} rel_err={err:.2e} scale={np.abs(r).max():.2e}")
            assert err <= rtol, (model.name, b, err)
    return module


def seq(shape, *layers, dtype="float32", name=None):
    return keras.Sequential([keras.Input(shape, dtype=dtype), *layers], name=name)


def scopes(module):
    return {n.scope for n in module.main}


def ops(module):
    return [n.op for n in module.main]


# -- default-run models ------------------------------------------------------------------------

def small_cnn():
    inp = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="act1")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.ZeroPadding2D(1, name="pad2")(x)
    x = L.DepthwiseConv2D(3, name="dw2")(x)
    x = L.SeparableConv2D(12, 3, padding="same", activation="relu6", name="sep3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.5, name="drop")(x)
    out = L.Dense(5, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name="small_cnn")
    _randomize_bn(model)
    return model


def _randomize_bn(model, seed=1):
    """Non-trivial moving statistics, so batch-norm is not an identity."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)])


def calibrate_batch_norm(model, shape, seed=123):
    """Sets every BatchNormalization's moving statistics to those of one random batch.

    With weights=None, Keras' init makes activations vanish through deep nets (MobileNetV2's
    logits are ~1e-11), where a wrong branch could hide under the tolerance; calibrated
    statistics keep activations near unit scale so every layer counts in the comparison.
    """
    bns = [layer for layer in model._flatten_layers() if isinstance(layer, L.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0          # the update then stores this batch's statistics
    x = np.random.default_rng(seed).standard_normal((4, *shape)).astype("float32")
    model(x, training=True)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
        # A floor on the variance: nearly dead channels would otherwise amplify float32
        # rounding (of TF and the IR alike) by up to 1/sqrt(epsilon) per layer.
        bn.moving_variance.assign(bn.moving_variance + 0.1)


class EncoderBlock(L.Layer):
    """Post-norm transformer encoder block: MHA + residual + LN, gelu MLP + residual + LN."""

    def __init__(self, d_model=32, heads=4, d_ff=64, **kw):
        super().__init__(**kw)
        self.attention = L.MultiHeadAttention(heads, d_model // heads, name="attention")
        self.ln1 = L.LayerNormalization(name="ln1")
        self.ff1 = L.Dense(d_ff, activation="gelu", name="ff1")
        self.ff2 = L.Dense(d_model, name="ff2")
        self.ln2 = L.LayerNormalization(name="ln2")

    def call(self, x):
        x = self.ln1(x + self.attention(x, x))
        return self.ln2(x + self.ff2(self.ff1(x)))


def transformer_encoder(seq_len=8, vocab=50, d_model=32):
    tokens = keras.Input((seq_len,), dtype="int32", name="tokens")
    x = L.Embedding(vocab, d_model, name="embed")(tokens)
    x = EncoderBlock(d_model, name="encoder_0")(x)
    x = EncoderBlock(d_model, name="encoder_1")(x)
    out = L.Dense(3, name="classifier")(L.GlobalAveragePooling1D(name="pool")(x))
    return keras.Model(tokens, out, name="encoder")


def test_small_cnn_matches_and_has_symbolic_batch():
    model = small_cnn()
    module = check_model(model, batches=(1, 3))
    x = module.main.inputs[0]
    assert x.name == "image"
    assert x.type.shape == ("batch", 16, 16, 3)
    assert module.main.outputs[0].type.shape == ("batch", 5)
    assert {"conv1", "bn1", "act1", "pool1", "pad2", "dw2", "sep3", "gap", "head"} <= scopes(module)
    md = module.metadata
    assert md["source"] == "keras"
    assert md["producer"].startswith("tensorforge ")
    assert list(md["input_names"]) == ["image"] and list(md["output_names"]) == ["head"]
    # Lifted to the most specific IR ops; batch-norm's weight arithmetic is folded.
    assert {"conv2d", "depthwise_conv2d", "max_pool2d", "pad", "reduce_mean", "matmul",
            "softmax", "relu", "relu6"} <= set(ops(module))
    assert "rsqrt" not in ops(module)
    # Every node names its source: the Keras layer it was lifted from directly
    # (frontends/keras/direct.py), or the TF op it was traced into.
    for n in module.main:
        assert n.loc.startswith(("keras:", "tf:")), n.loc


def test_mobilenetv2_96():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3),
                                           classifier_activation=None)
    calibrate_batch_norm(model, (96, 96, 3))
    module = check_model(model, batches=(1, 3))
    assert module.main.inputs[0].type.shape == ("batch", 96, 96, 3)
    assert "block_3_expand" in scopes(module)
    # Scopes are Keras layer names, not TF's uniquified name scopes (`block_3_expand_1`).
    assert not any(s.endswith("_1") and s[:-2] in scopes(module) for s in scopes(module))
    counts = {op: ops(module).count(op) for op in set(ops(module))}
    assert counts["conv2d"] == 35 and counts["depthwise_conv2d"] == 17


def test_transformer_encoder():
    model = transformer_encoder()
    module = check_model(model, batches=(1, 3), int_high=50)
    assert module.main.inputs[0].type.shape == ("batch", 8)
    s = scopes(module)
    assert {"embed", "encoder_0/attention", "encoder_0/attention/query", "encoder_0/ln1",
            "encoder_0/ff1", "encoder_1/attention/attention_output", "classifier"} <= s
    assert "gather" in ops(module) and "softmax" in ops(module) and "matmul" in ops(module)
    assert "erf" in ops(module)   # gelu stays decomposed for the fusion pass


# -- layer families ------------------------------------------------------------------------------

ACTIVATIONS = ["relu", "relu6", "gelu", "swish", "silu", "hard_swish", "hard_sigmoid", "sigmoid",
               "tanh", "softmax", "elu", "leaky_relu", "selu", "softplus", "mish", "linear"]


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation(act):
    check_model(seq((6,), L.Dense(5, activation=act, name="d")), batches=(3,))


def test_activation_layers():
    check_model(seq((4, 5), L.LeakyReLU(0.1), L.ELU(), L.ReLU(max_value=6.0), L.PReLU(),
                    L.Softmax(axis=1)), batches=(2,))


class Rotary(L.Layer):
    """The trigonometry of a rotary position embedding: x*cos(t) + rotate(x)*sin(t)."""

    def call(self, x):
        t = keras.ops.arange(x.shape[-1], dtype="float32") * 0.5
        rotated = keras.ops.concatenate([-x[..., 2:], x[..., :2]], axis=-1)
        return x * keras.ops.cos(t + x) + rotated * keras.ops.sin(t - x)


def test_sin_cos_lift_to_ir_ops():
    model = seq((3, 4), Rotary(name="rope"))
    module = from_keras(model)
    assert {"sin", "cos"} <= set(ops(module))
    check_model(model, batches=(2, 3))


class Positions(L.Layer):
    """Position ids from a padding mask, as Falcon's ALiBi computes them: cumsum(mask) - 1."""

    def call(self, x):
        mask = keras.ops.cast(keras.ops.greater(x, 0.0), "float32")
        pos = keras.ops.cumsum(mask, axis=1) - 1.0
        return x * pos + keras.ops.cumsum(x, axis=-1)


def test_cumsum_lifts_to_the_ir_op():
    model = seq((6, 3), Positions(name="positions"))
    module = from_keras(model)
    assert ops(module).count("cumsum") == 2
    check_model(model, batches=(2, 3))


def _norm_layer():
    n = L.Normalization()
    n.adapt(np.random.default_rng(0).normal(3, 2, (20, 4)).astype("float32"))
    return n


def _bn_model():
    m = seq((6, 6, 3), L.BatchNormalization(name="bn"), L.Conv2D(4, 3, name="c"),
            L.BatchNormalization(name="bn2"))
    _randomize_bn(m)
    return m


def _concat_add_mul():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    x = L.Concatenate(name="cat")([L.Add(name="add")([a, b]), L.Multiply(name="mul")([a, b])])
    y = L.Subtract()([a, b])
    return keras.Model([a, b], [L.Dense(2, name="out")(x), L.Average()([y, a])], name="merge")


LAYER_MODELS = {
    "dense": lambda: seq((6,), L.Dense(8, activation="relu"), L.Dense(3)),
    "dense_rank3": lambda: seq((5, 6), L.Dense(8), L.Dense(3, use_bias=False)),
    "embedding": lambda: seq((7,), L.Embedding(20, 4), L.Flatten(), dtype="int32"),
    "mha": lambda: _mha_model(),
    "layer_norm": lambda: seq((5, 6), L.LayerNormalization(), L.LayerNormalization(axis=[1, 2])),
    "dropout": lambda: seq((6,), L.Dropout(0.5), L.Dense(2), L.Dropout(0.1)),
    "conv1d": lambda: seq((10, 3), L.Conv1D(4, 3, padding="same"), L.Conv1D(5, 3, strides=2),
                          L.Conv1D(2, 2, padding="causal")),
    "conv2d_transpose": lambda: seq((5, 5, 3), L.Conv2DTranspose(4, 3, strides=2, padding="same"),
                                    L.Conv2DTranspose(2, 2, strides=1)),
    "upsampling": lambda: seq((4, 4, 2), L.UpSampling2D(), L.UpSampling2D(
        interpolation="bilinear")),
    "merge": _concat_add_mul,
    "reshape": lambda: seq((4, 6), L.Reshape((2, 12)), L.Permute((2, 1)), L.Flatten(),
                           L.Reshape((-1, 4))),
    "rescaling": lambda: seq((4,), L.Rescaling(1 / 127.5, offset=-1)),
    "normalization": lambda: seq((4,), _norm_layer()),
    "batch_norm": _bn_model,
    "pooling2d": lambda: seq((7, 7, 3), L.MaxPooling2D(2, padding="same"),
                             L.AveragePooling2D(2, strides=1), L.GlobalMaxPooling2D()),
    "pooling1d": lambda: seq((9, 3), L.MaxPooling1D(2), L.AveragePooling1D(2, padding="same"),
                             L.GlobalAveragePooling1D()),
    "global_avg_keepdims": lambda: seq((5, 5, 3), L.GlobalAveragePooling2D(keepdims=True)),
    "zero_padding": lambda: seq((5, 5, 2), L.ZeroPadding2D(((1, 2), (0, 1)))),
    "depthwise": lambda: seq((8, 8, 3), L.DepthwiseConv2D(3, depth_multiplier=2, strides=2,
                                                          padding="same")),
    "separable": lambda: seq((8, 8, 3), L.SeparableConv2D(4, 3, activation="relu")),
    "dilated_conv": lambda: seq((12, 12, 3), L.Conv2D(4, 3, dilation_rate=2, padding="same"),
                                L.DepthwiseConv2D(3, dilation_rate=2)),
    "grouped_conv": lambda: seq((6, 6, 4), L.Conv2D(6, 3, groups=2)),
    "cropping_resizing": lambda: seq((8, 8, 2), L.Cropping2D(1), L.Resizing(4, 5)),
    "repeat_vector": lambda: seq((4,), L.RepeatVector(3)),
    "mha_causal": lambda: _self_attention(causal=True),
    "mha_padding_mask": lambda: _self_attention(mask_zero=True),
    "attention": lambda: _self_attention(layer=L.Attention(use_scale=True)),
    "group_unit_norm": lambda: seq((4, 4, 6), L.GroupNormalization(3), L.UnitNormalization()),
    "conv1d_transpose_upsampling1d": lambda: seq((6, 3), L.Conv1DTranspose(4, 3, strides=2),
                                                 L.UpSampling1D(2)),
}


def _self_attention(causal=False, mask_zero=False, layer=None):
    """Self-attention over embedded tokens: Keras builds its masks from Fill/ones_like on the
    run-time shape, MatrixBandPart for the causal band and SelectV2."""
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = L.Embedding(20, 8, mask_zero=mask_zero, name="embed")(tokens)
    if layer is None:
        y = L.MultiHeadAttention(2, 4, name="mha")(x, x, use_causal_mask=causal)
    else:
        y = layer([x, x])
    return keras.Model(tokens, y, name="self_attention")


def _mha_model():
    q = keras.Input((6, 8), name="q")
    kv = keras.Input((4, 8), name="kv")
    out = L.MultiHeadAttention(2, 4, name="mha")(q, kv)
    return keras.Model([q, kv], out, name="cross_attention")


@pytest.mark.parametrize("name", sorted(LAYER_MODELS))
def test_layer_family(name):
    model = LAYER_MODELS[name]()
    module = check_model(model, batches=(1, 3), int_high=20)
    for v in module.main.inputs:
        assert v.type.shape[0] == "batch"


def test_most_specific_ops():
    module = from_keras(LAYER_MODELS["conv2d_transpose"]())
    assert "conv2d_transpose" in ops(module)
    assert module.main.outputs[0].type.shape == ("batch", 11, 11, 2)
    module = from_keras(LAYER_MODELS["dilated_conv"]())
    conv = next(n for n in module.main if n.op == "conv2d")
    assert conv.attrs["dilations"] == (2, 2)
    module = from_keras(LAYER_MODELS["reshape"]())
    reshapes = [n for n in module.main if n.op == "reshape"]
    # Flatten/Reshape with a None batch: Shape->StridedSlice->Pack evaluated at import.
    assert reshapes and all(n.attrs["shape"][0] == -1 for n in reshapes)
    assert not {"strided_slice", "concat"} & set(ops(module))


def test_multi_input_output_names():
    model = _concat_add_mul()
    module = check_model(model)
    assert [v.name for v in module.main.inputs] == ["a", "b"]
    assert len(module.metadata["output_names"]) == 2
    assert module.main.outputs[0].name == module.metadata["output_names"][0]


def test_dict_inputs_and_outputs():
    x, y = keras.Input((4,), name="x"), keras.Input((2,), name="y")
    h = L.Concatenate()([x, y])
    model = keras.Model({"x": x, "y": y}, {"score": L.Dense(1)(h), "logits": L.Dense(3)(h)})
    module = from_keras(model)
    verify_module(module)
    assert [v.name for v in module.main.inputs] == ["x", "y"]
    assert list(module.metadata["output_names"]) == ["logits", "score"]
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(3, 4)).astype("float32"),
             "y": rng.normal(size=(3, 2)).astype("float32")}
    ref = model(feeds, training=False)
    got = run_graph(module.main, feeds)
    for g, k in zip(got, ["logits", "score"]):
        assert rel_err(g, np.asarray(ref[k])) <= RTOL


# -- subclassed models ---------------------------------------------------------------------------

class TinySubclassed(keras.Model):
    def __init__(self):
        super().__init__(name="tiny")
        self.fc1 = L.Dense(8, activation="relu", name="fc1")
        self.fc2 = L.Dense(2, name="fc2")

    def call(self, x, training=False):
        return self.fc2(self.fc1(x))


def test_subclassed_needs_signature():
    model = TinySubclassed()
    with pytest.raises(ConversionError, match="input_signature"):
        from_keras(model)
    sig = [tf.TensorSpec([None, 5], tf.float32, name="features")]
    module = from_keras(model, sig)
    assert module.main.inputs[0].name == "features"
    assert {"fc1", "fc2"} <= scopes(module)
    check_model(model, module=module, batches=(1, 3))


# -- errors --------------------------------------------------------------------------------------

class Dawson(L.Layer):
    def call(self, x):
        return tf.math.special.dawsn(x)


class Lgamma(L.Layer):
    def call(self, x):
        return tf.math.lgamma(x) + tf.math.special.dawsn(x)


def test_unsupported_ops_all_listed():
    inp = keras.Input((4,))
    x = Dawson(name="dawson")(L.Dense(4, name="fc")(inp))
    x = Lgamma(name="lgamma")(x)
    model = keras.Model(inp, x)
    with pytest.raises(ConversionError) as info:
        from_keras(model)
    err = info.value
    assert err.summary == "unsupported TensorFlow ops"
    found = {(d.message, d.scope) for d in err.diagnostics}
    assert ("op Dawsn has no IR lowering", "dawson") in found
    assert ("op Lgamma has no IR lowering", "lgamma") in found
    assert ("op Dawsn has no IR lowering", "lgamma") in found   # every offender
    assert len(err.diagnostics) == 3
    for d in err.diagnostics:
        assert d.loc.startswith("tf:") and d.node
    assert "Dawsn" in str(err) and "Lgamma" in str(err)


def test_keras_file_round_trip(tmp_path):
    model = small_cnn()
    path = tmp_path / "cnn.keras"
    model.save(path)
    module = from_keras(str(path))
    check_model(model, module=module)
    assert "conv1" in scopes(module)


def _lambda_model():
    inp = keras.Input((4,), name="x")
    out = L.Lambda(lambda t: t * 2.0 + 1.0, name="affine")(L.Dense(3, name="fc")(inp))
    return keras.Model(inp, out, name="with_lambda")


def test_safe_mode_refuses_lambda(tmp_path):
    model = _lambda_model()
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ConversionError) as info:
        from_keras(path)
    assert "safe_mode=False" in str(info.value)
    assert "\n" not in str(info.value)
    module = from_keras(path, safe_mode=False)
    check_model(model, module=module)


def test_corrupt_and_missing_keras_files(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(ConversionError) as info:
        from_keras(bad)
    assert "\n" not in str(info.value) and "bad.keras" in str(info.value)
    # A zip that is not a Keras archive.
    fake = tmp_path / "fake.keras"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ConversionError) as info:
        from_keras(fake)
    assert "\n" not in str(info.value)
    with pytest.raises(ConversionError, match="no such"):
        from_keras(tmp_path / "missing.keras")
    with pytest.raises(ConversionError, match="keras.Model"):
        from_keras(42)


# -- frontends.tf: concrete functions, freezing, SavedModel --------------------------------------

def test_freeze_path_matches_fast_path():
    model = small_cnn()
    fn = tf.function(lambda x: model(x, training=False))
    cf = fn.get_concrete_function(tf.TensorSpec([None, 16, 16, 3], tf.float32))
    kwargs = dict(input_names=["image"], output_names=["probs"], scope_fn=keras_scope_fn(model))
    fast = lift_concrete_function(cf, **kwargs)
    frozen = lift_concrete_function(cf, freeze=True, **kwargs)
    assert ops(fast) == ops(frozen)
    assert [n.scope for n in fast.main] == [n.scope for n in frozen.main]
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(run_graph(fast.main, [x])[0], run_graph(frozen.main, [x])[0])


def test_raw_tf_function_scopes_and_folding():
    w = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, name="w")

    @tf.function
    def f(x):
        with tf.name_scope("block"):
            y = tf.matmul(x, w) + tf.reduce_sum(tf.ones([4]))   # ones+sum fold at import
            return tf.nn.relu(tf.reshape(y, [tf.shape(x)[0], 2, 2]))

    cf = f.get_concrete_function(tf.TensorSpec([None, 3], tf.float32))
    module = lift_concrete_function(cf, input_names=["x"], output_names=["y"])
    verify_module(module)
    assert ops(module) == ["constant", "matmul", "constant", "add", "reshape", "relu"]
    # Default scopes: the TF name scope minus the op name (a variable read sits one deeper).
    assert {n.scope for n in module.main if n.op != "constant"} == {"block"}
    assert module.main.outputs[0].type.shape == ("batch", 2, 2)
    x = np.random.default_rng(0).standard_normal((3, 3)).astype("float32")
    np.testing.assert_allclose(run_graph(module.main, [x])[0], f(x).numpy(), rtol=1e-6)


EINSUMS = [("abc,cd->abd", (5, 3), (3, 4)), ("abcd,cde->abe", (5, 2, 3), (2, 3, 4)),
           ("bij,bjk->bik", (3, 4), (4, 5)), ("aecd,abcd->acbe", (4, 2, 3), (5, 2, 3)),
           ("acbe,aecd->abcd", (2, 5, 4), (4, 2, 3)), ("abc,adc->abd", (3, 4), (5, 4)),
           ("abc->acb", (3, 4), None), ("abc->ac", (3, 4), None), ("ab,ab->a", (4,), (4,)),
           ("abc,c->ab", (3, 4), (4,)), ("abc,bd->acd", (3, 4), (3, 2))]


@pytest.mark.parametrize("eq, a_shape, b_shape", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_einsum_lowering(eq, a_shape, b_shape):
    # The first operand has the run-time batch; the second is a weight when it has no batch
    # label (its spec does not start with the output's first label).
    rng = np.random.default_rng(0)
    b_spec = eq.split("->")[0].split(",")[-1]
    b_batched = b_shape is not None and b_spec[0] == eq[0]
    w = None if b_shape is None or b_batched else rng.normal(size=b_shape).astype("float32")

    def f(x, y=None):
        ops_ = [x] if b_shape is None else [x, y if b_batched else tf.constant(w)]
        return tf.einsum(eq, *ops_)

    specs = [tf.TensorSpec([None, *a_shape], tf.float32)]
    if b_batched:
        specs.append(tf.TensorSpec([None, *b_shape], tf.float32))
    cf = tf.function(f).get_concrete_function(*specs)
    names = [f"in{i}" for i in range(len(specs))]
    module = lift_concrete_function(cf, input_names=names, output_names=["out"])
    verify_module(module)
    assert "einsum" not in " ".join(ops(module))
    for batch in (1, 3):
        xs = [rng.normal(size=(batch, *s.shape[1:])).astype("float32") for s in specs]
        ref = cf(*[tf.constant(x) for x in xs]).numpy()
        assert rel_err(run_graph(module.main, xs)[0], ref) < 1e-5


def test_tensordot_becomes_one_matmul():
    w = tf.constant(np.random.default_rng(0).normal(size=(6, 3)).astype("float32"))

    @tf.function
    def f(x):
        flat = tf.matmul(tf.reshape(x, [-1, 6]), w)           # Keras' Tensordot, by hand
        return tf.reshape(flat, [tf.shape(x)[0], 5, 3]), flat  # the 2-D form is used too

    cf = f.get_concrete_function(tf.TensorSpec([None, 5, 6], tf.float32))
    module = lift_concrete_function(cf, input_names=["x"], output_names=["y", "flat"])
    verify_module(module)
    mm = [n for n in module.main if n.op == "matmul"]
    assert len(mm) == 1 and mm[0].inputs[0] is module.main.inputs[0]
    assert module.main.outputs[0].type.shape == ("batch", 5, 3)
    x = np.random.default_rng(1).normal(size=(2, 5, 6)).astype("float32")
    for g, r in zip(run_graph(module.main, [x]), f(x)):
        assert rel_err(g, r.numpy()) < 1e-6


def test_saved_model(tmp_path):
    class Net(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features"),
                                      tf.TensorSpec([None, 3], tf.float32, name="bias")])
        def serve(self, features, bias):
            return {"out": tf.nn.relu6(tf.matmul(features, self.w) + bias),
                    "sum": tf.reduce_sum(features, axis=1)}

    net = Net()
    path = tmp_path / "sm"
    tf.saved_model.save(net, str(path), signatures={"serving_default": net.serve})
    module = from_saved_model(path)
    verify_module(module)
    assert [v.name for v in module.main.inputs] == ["bias", "features"]
    assert list(module.metadata["output_names"]) == ["out", "sum"]
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(2, 4)).astype("float32")
    bias = rng.normal(size=(2, 3)).astype("float32")
    got = run_graph(module.main, {"features": feats, "bias": bias})
    ref = net.serve(features=feats, bias=bias)
    np.testing.assert_allclose(got[0], ref["out"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], ref["sum"].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConversionError, match="no signature 'nope'"):
        from_saved_model(path, signature="nope")


def test_saved_model_errors(tmp_path):
    with pytest.raises(ConversionError, match="no such"):
        from_saved_model(tmp_path / "missing")
    with pytest.raises(ConversionError, match="not a SavedModel"):
        from_saved_model(tmp_path)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ConversionError) as info:
        from_saved_model(corrupt)
    assert "\n" not in str(info.value)


# -- keras.applications --------------------------------------------------------------------------

APPS = {
    "MobileNetV3Small": ((96, 96, 3), False),
    "ResNet50": ((64, 64, 3), True),
    "EfficientNetB0": ((64, 64, 3), True),
    "DenseNet121": ((64, 64, 3), True),
    "Xception": ((71, 71, 3), True),
    "ConvNeXtTiny": ((64, 64, 3), True),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if slow else [])
                                  for n, (_, slow) in APPS.items()])
def test_application(name):
    shape, _ = APPS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=shape,
                                              classifier_activation=None)
    calibrate_batch_norm(model, shape)
    module = check_model(model, batches=(2,))
    assert module.main.inputs[0].type.shape == ("batch", *shape)
    assert module.main.outputs[0].type.shape == ("batch", 1000)


def test_lifted_weights_do_not_change_when_the_model_trains_afterwards():
    """The lift reads variables without copying them (a view of TF's read tensor): TF must
    copy a variable before assigning to it while the lifted constant shares its buffer."""
    x = keras.Input((4,))
    model = keras.Model(x, L.Dense(3, name="d")(x))
    module = from_keras(model)
    kernel = next(v.const for n in module.main for v in n.inputs
                  if v.const is not None and v.const.shape == (4, 3))
    before = np.array(kernel)
    assert not kernel.flags.writeable
    model.layers[1].kernel.assign(np.full((4, 3), 7.0, np.float32))
    model.layers[1].kernel.assign_add(np.ones((4, 3), np.float32))
    np.testing.assert_array_equal(kernel, before)
    np.testing.assert_array_equal(model.layers[1].kernel.numpy(), np.full((4, 3), 8.0))
