"""Models the benchmarks (and end-to-end tests) compile. All weights are random
(`weights=None`): nothing is downloaded."""

from __future__ import annotations

import numpy as np


def transformer_encoder(num_layers: int = 4, d_model: int = 256, heads: int = 4,
                        seq_len: int = 64, vocab: int = 1000, ff: int | None = None):
    """A BERT-style encoder: Embedding, then per layer MultiHeadAttention + residual +
    LayerNormalization and a gelu feed-forward block + residual + LayerNormalization."""
    import keras

    ff = ff or 4 * d_model
    tokens = keras.Input((seq_len,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(vocab, d_model, name="embed")(tokens)
    for i in range(num_layers):
        att = keras.layers.MultiHeadAttention(heads, d_model // heads, name=f"encoder_{i}_mha")(h, h)
        h = keras.layers.LayerNormalization(name=f"encoder_{i}_ln1")(h + att)
        f = keras.layers.Dense(ff, activation="gelu", name=f"encoder_{i}_ff1")(h)
        f = keras.layers.Dense(d_model, name=f"encoder_{i}_ff2")(f)
        h = keras.layers.LayerNormalization(name=f"encoder_{i}_ln2")(h + f)
    out = keras.layers.Dense(d_model, name="head")(h)
    return keras.Model(tokens, out, name=f"encoder{num_layers}")


def tiny_kerashub_bert():
    """The KerasHub model sweep's tiny BertBackbone (random weights, run-time batch and
    sequence length)."""
    import keras_hub

    from ..sweeps.kerashub_configs import CONFIGS

    return keras_hub.models.BertBackbone(**CONFIGS["BertBackbone"])


def application(name: str, input_shape=(224, 224, 3)):
    """A keras.applications model with random weights."""
    import keras

    return getattr(keras.applications, name)(weights=None, input_shape=input_shape)


BENCH_MODELS = {
    "MobileNetV2": lambda: application("MobileNetV2"),
    "ResNet50": lambda: application("ResNet50"),
    "EfficientNetB0": lambda: application("EfficientNetB0"),
    "encoder4 (d=256, 4 heads)": lambda: transformer_encoder(4, 256, 4),
}


def keras_recurrent(kind: str, seq_len: int = 32, features: int = 16, units: int = 64):
    """A Keras sequence classifier over [1, seq_len, features]: "lstm" (two stacked LSTMs),
    "bilstm" (a Bidirectional LSTM) or "rnn" (two stacked SimpleRNNs), with a dense head."""
    import keras

    L = keras.layers
    inputs = L.Input((seq_len, features), name="seq")
    if kind == "bilstm":
        h = L.Bidirectional(L.LSTM(units // 2), name="bi")(inputs)
    else:
        cell = L.LSTM if kind == "lstm" else L.SimpleRNN
        h = cell(units, return_sequences=True, name=f"{kind}1")(inputs)
        h = cell(units, name=f"{kind}2")(h)
    model = keras.Model(inputs, L.Dense(10, name="head")(h))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


RECURRENT_BENCH_MODELS = {
    "Keras 2x LSTM (32 steps, d=64)": lambda: keras_recurrent("lstm"),
    "Keras Bidirectional LSTM (32 steps)": lambda: keras_recurrent("bilstm"),
    "Keras 2x SimpleRNN (32 steps, d=64)": lambda: keras_recurrent("rnn"),
}


def flax_cnn(image: int = 32, channels: int = 3, classes: int = 10):
    """(apply_fn, variables, example input) for a Flax linen CNN: conv + batch norm (inference)
    + relu blocks, pooling, dense head."""
    import flax.linen as nn
    import jax
    import numpy as np

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i, width in enumerate((32, 64, 128)):
                x = nn.Conv(width, (3, 3), padding="SAME", name=f"conv{i}")(x)
                x = nn.BatchNorm(use_running_average=True, name=f"bn{i}")(x)
                x = nn.relu(x)
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = x.mean(axis=(1, 2))
            return nn.Dense(classes, name="head")(x)

    x = np.random.default_rng(0).standard_normal((1, image, image, channels)).astype(np.float32)
    model = CNN()
    variables = model.init(jax.random.PRNGKey(0), x)
    return model.apply, variables, x


def flax_encoder(layers: int = 2, d: int = 128, heads: int = 4, seq_len: int = 64):
    """(apply_fn, variables, example input) for a Flax transformer encoder (pre-norm blocks of
    self-attention and a gelu MLP)."""
    import flax.linen as nn
    import jax
    import numpy as np

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.LayerNorm(name="ln1")(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=heads, name="attention")(h, h)
            h = nn.LayerNorm(name="ln2")(x)
            h = nn.Dense(4 * d, name="fc1")(h)
            return x + nn.Dense(d, name="fc2")(nn.gelu(h))

    class Encoder(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i in range(layers):
                x = Block(name=f"block{i}")(x)
            return nn.LayerNorm(name="final_ln")(x)

    x = np.random.default_rng(1).standard_normal((1, seq_len, d)).astype(np.float32)
    model = Encoder()
    variables = model.init(jax.random.PRNGKey(1), x)
    return model.apply, variables, x


def scan_rnn(seq_len: int = 32, d: int = 64):
    """(apply_fn, variables, example input) for a Flax LSTM (nn.RNN: a lax.scan over time)
    with a dense head: a loop the converters must keep as one."""
    import flax.linen as nn
    import jax
    import numpy as np

    class RNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10, name="head")(nn.RNN(nn.LSTMCell(d), name="lstm")(x)[:, -1])

    x = np.random.default_rng(0).standard_normal((1, seq_len, 16)).astype(np.float32)
    model = RNN()
    return model.apply, model.init(jax.random.PRNGKey(0), x), x


def rope_decoder(layers: int = 2, d: int = 64, heads: int = 4, seq_len: int = 32):
    """(apply_fn, variables, example input) for a Flax decoder with rotary position
    embeddings (sin/cos tables) and a causal mask."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    def rope(x):
        half = x.shape[-1] // 2
        freqs = 1.0 / (10000 ** (jnp.arange(half, dtype=jnp.float32) / half))
        angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * freqs
        sin, cos = jnp.sin(angles)[:, None], jnp.cos(angles)[:, None]
        x1, x2 = x[..., :half], x[..., half:]
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            b, s, _ = x.shape
            h = nn.RMSNorm()(x)
            q, k, v = (nn.Dense(d, use_bias=False)(h).reshape(b, s, heads, d // heads)
                       for _ in range(3))
            q, k = rope(q), rope(k)
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // heads)
            scores = jnp.where(jnp.tril(jnp.ones((s, s), bool)), scores, -1e9)
            att = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores), v).reshape(b, s, d)
            x = x + nn.Dense(d, use_bias=False)(att)
            return x + nn.Dense(d)(jax.nn.silu(nn.Dense(4 * d)(nn.RMSNorm()(x))))

    class Decoder(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(layers):
                x = Block()(x)
            return x

    x = np.random.default_rng(0).standard_normal((1, seq_len, d)).astype(np.float32)
    model = Decoder()
    return model.apply, model.init(jax.random.PRNGKey(0), x), x


JAX_BENCH_MODELS = {
    "Flax CNN (32x32, 3 conv blocks)": flax_cnn,
    "Flax encoder (2 layers, d=128)": flax_encoder,
    "Flax LSTM (scan, 32 steps, d=64)": scan_rnn,
    "Flax RoPE decoder (2 layers, d=64)": rope_decoder,
}


def condition_batchnorm(model, batch):
    """Sets every BatchNormalization layer's moving statistics to the batch statistics of one
    training-mode forward pass on `batch`; returns how many layers it set.

    Why: keras.applications with weights=None start with moving_mean=0, moving_variance=1, so
    inference-mode activations shrink layer after layer (~1e-7 by block 7 of MobileNetV2) and
    int8 degenerates for any tool. With momentum 0 the update `moving = m * moving + (1 - m)
    * batch_stat` writes the batch statistic itself, and since training mode normalizes with
    those same statistics, each layer sees well-conditioned inputs."""
    import keras

    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(batch, training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(layers)


def digits_split():
    """(x_train, y_train, x_test, y_test): scikit-learn's bundled 8x8 digits in [0, 1],
    shuffled with a fixed seed, 1400 for training and 397 held out."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def digits_cnn():
    """The small digits CNN the quantization tests and bench train: conv, depthwise, max
    pool, two dense layers (softmax output)."""
    import keras

    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(32, activation="relu", name="fc1")(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    return keras.Model(inputs, outputs, name="digits_cnn")
