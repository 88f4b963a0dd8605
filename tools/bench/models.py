"""Models the benchmarks (and end-to-end tests) compile. All weights are random
(`weights=None`): nothing is downloaded."""

from __future__ import annotations


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
