"""A Flax decoder with a key/value cache, written here, as a `convert_lm` source (JaxLM):
its prefill and decode steps in one .tflite, and greedy generation in LiteRT token-identical
to the decoder's own JAX loop."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax import lax  # noqa: E402

import tensorforge  # noqa: E402

VOCAB, DIM, HEADS, LAYERS, N = 64, 16, 2, 2, 40


class Decoder(nn.Module):
    """A pre-norm transformer decoder: tokens [1, T] at positions index.., the cache
    [layers, 2, N, heads, head_dim] (or, `per_layer`, a list of (keys, values) pairs of
    [N, heads, head_dim]) read and written at those positions."""

    per_layer: bool = False

    @nn.compact
    def __call__(self, tokens, cache, index):
        t, hd = tokens.shape[1], DIM // HEADS
        positions = index + jnp.arange(t, dtype=jnp.int32)
        x = nn.Embed(VOCAB, DIM, name="tokens")(tokens) + \
            nn.Embed(N, DIM, name="positions")(positions)[None]
        visible = jnp.arange(N)[None, :] <= positions[:, None]               # [T, N]
        caches = []
        for layer in range(LAYERS):
            h = nn.LayerNorm(name=f"ln{layer}")(x)
            q, k, v = (nn.Dense(DIM, name=f"{n}{layer}")(h).reshape(t, HEADS, hd)
                       for n in "qkv")
            keys = lax.dynamic_update_slice(cache[layer][0], k, (index, 0, 0))
            values = lax.dynamic_update_slice(cache[layer][1], v, (index, 0, 0))
            scores = jnp.einsum("thd,nhd->htn", q, keys) / np.sqrt(hd)
            scores = jnp.where(visible[None], scores, -1e9)
            mixed = jnp.einsum("htn,nhd->thd", jax.nn.softmax(scores, -1), values)
            x = x + nn.Dense(DIM, name=f"o{layer}")(mixed.reshape(1, t, DIM))
            up = nn.Dense(2 * DIM, name=f"up{layer}")(nn.LayerNorm(name=f"lnf{layer}")(x))
            x = x + nn.Dense(DIM, name=f"down{layer}")(nn.gelu(up))
            caches.append((keys, values) if self.per_layer else jnp.stack([keys, values]))
        logits = nn.Dense(VOCAB, name="head")(nn.LayerNorm(name="ln")(x))
        return logits, caches if self.per_layer else jnp.stack(caches)


def _empty(n):
    return np.zeros((LAYERS, 2, n, HEADS, DIM // HEADS), np.float32)


def _empty_per_layer(n):
    return [tuple(np.zeros((n, HEADS, DIM // HEADS), np.float32) for _ in "kv")
            for _ in range(LAYERS)]


def _own_loop(decoder, params, prompt, new, empty):
    """The decoder's own greedy loop in JAX, the same schedule as Keras's generate."""
    step = jax.jit(lambda p, tok, c, i: decoder.apply(p, tok, c, i))
    ids = np.zeros(N, np.int32)
    ids[:len(prompt)] = prompt
    _, cache = step(params, ids[None], empty(N), np.int32(0))
    for i in range(len(prompt), len(prompt) + new):
        logits, cache = step(params, ids[None, i - 1:i], cache, np.int32(i - 1))
        ids[i] = int(jnp.argmax(logits[0, -1]))
    return ids[len(prompt):len(prompt) + new]


@pytest.mark.parametrize("per_layer", [False, True], ids=["one-cache", "per-layer-cache"])
def test_flax_decoder_generates_like_its_own_loop(tmp_path, per_layer):
    decoder = Decoder(per_layer=per_layer)
    empty = _empty_per_layer if per_layer else _empty
    params = decoder.init(jax.random.PRNGKey(0), np.zeros((1, 1), np.int32), empty(N),
                          np.int32(0))
    lm = tensorforge.JaxLM(step=decoder.apply, params=params, init_cache=empty)
    artifact = tensorforge.convert_lm(lm, output=tmp_path / "flax.tflite", max_sequence_length=N)
    part = (N, HEADS, DIM // HEADS)
    # A pytree cache: each leaf is its own signature tensor, named by its path.
    assert artifact.cache_shapes == ({f"cache_{i}_{kv}": part for i in range(LAYERS)
                                      for kv in (0, 1)} if per_layer
                                     else {"cache": _empty(N).shape})
    prompt = np.array([3, 1, 4, 1, 5, 9, 2], np.int32)
    got = tensorforge.generate(artifact.path, prompt, 32)
    np.testing.assert_array_equal(got, _own_loop(decoder, params, prompt, 32, empty))
