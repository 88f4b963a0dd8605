"""LLM generation artifacts: `convert_lm` writes a KerasHub CausalLM's two generation steps as
one `.tflite` with two signatures, and `generate` drives them.

- `prefill(token_ids [1, N]) -> (logits [1, N, vocab], cache)`: the prompt, padded with 0 to
  the artifact's length N (`max_sequence_length`), through the model once, filling every
  layer's key/value cache;
- `decode(token [1, 1], cache, index []) -> (logits [1, 1, vocab], cache)`: one token at
  position `index`, attending to the cache (it does not recompute the prefix) and writing its
  own keys and values into it.

The cache is an explicit signature input and output (the model's own layout, e.g. GPT-2's
[1, layers, 2, N, heads, head_dim]), so any runtime can carry it; both signatures read the
same weights, stored once. The steps are the model's own `call_with_cache`, traced on the
TensorFlow backend and lifted like any other TF function, so whatever the model does
(causal masking from the index, rotary embeddings at the right position) is what runs.

`generate` follows Keras's own loop (`CausalLM.generate`): prefill the padded prompt, then for
each new position i, decode the token at i - 1 at index i - 1 and pick the next token from its
logits, greedily or by top-k / temperature sampling from a seed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.errors import ConversionError, Diagnostic, TensorforgeError

PREFILL, DECODE = "prefill", "decode"


@dataclass
class LMArtifact:
    """What `convert_lm` wrote: the path, the sequence length N and the cache's shape."""

    path: Path
    max_sequence_length: int
    cache_shape: tuple[int, ...]
    vocabulary_size: int


def _problem(message: str) -> ConversionError:
    return ConversionError("cannot convert this language model", [Diagnostic(message)])


def _steps(causal_lm, n: int):
    """The prefill and decode tf.functions of `causal_lm` at sequence length n, and the cache
    shape and dtype."""
    import tensorflow as tf

    _, cache = causal_lm._build_cache(tf.zeros([1, n], tf.int32))
    shape, dtype = tuple(int(d) for d in cache.shape), cache.dtype

    @tf.function(input_signature=[tf.TensorSpec([1, n], tf.int32)])
    def prefill(token_ids):
        logits, _, new_cache = causal_lm.call_with_cache(token_ids, tf.zeros(shape, dtype), 0)
        return logits, new_cache

    @tf.function(input_signature=[tf.TensorSpec([1, 1], tf.int32), tf.TensorSpec(shape, dtype),
                                  tf.TensorSpec([], tf.int32)])
    def decode(token, cache, index):
        logits, _, new_cache = causal_lm.call_with_cache(token, cache, index)
        return logits, new_cache

    return prefill, decode, shape


def convert_lm(causal_lm: Any, *, output: str | os.PathLike, max_sequence_length: int,
               target: str = "tflite") -> LMArtifact:
    """Writes `causal_lm` (a KerasHub CausalLM on the TensorFlow backend, preprocessor not
    needed) as one `.tflite` with `prefill` and `decode` signatures (module docstring) for
    sequences of up to `max_sequence_length` tokens. Atomic: nothing is left at `output` on
    failure. ConversionError says what is wrong (another backend, a model without a cache,
    a length above the model's own limit)."""
    import keras

    from ..backends.tflite.writer import write_tflite_signatures
    from ..frontends.tf.lift import lift_concrete_function
    from .convert import optimize

    if target != "tflite":
        raise _problem(f"target {target!r}: generation artifacts are written for TFLite only "
                       f"so far")
    if keras.backend.backend() != "tensorflow":
        raise _problem(f"the Keras backend is {keras.backend.backend()!r}: convert_lm traces "
                       f"the model's steps with TensorFlow (KERAS_BACKEND=tensorflow)")
    if not (hasattr(causal_lm, "call_with_cache") and hasattr(causal_lm, "_build_cache")):
        raise _problem(f"{type(causal_lm).__name__} has no call_with_cache / _build_cache: "
                       f"not a KerasHub CausalLM with a key/value cache")
    n = int(max_sequence_length)
    limit = getattr(getattr(causal_lm, "backbone", None), "max_sequence_length", None)
    if n < 2 or (limit is not None and n > int(limit)):
        raise _problem(f"max_sequence_length {n} must be in [2, {limit}] (the model's "
                       f"position embedding has {limit} positions)")
    prefill, decode, cache_shape = _steps(causal_lm, n)
    modules = {
        PREFILL: lift_concrete_function(prefill.get_concrete_function(),
                                        input_names=["token_ids"],
                                        output_names=["logits", "cache"]),
        DECODE: lift_concrete_function(decode.get_concrete_function(),
                                       input_names=["token", "cache", "index"],
                                       output_names=["logits", "cache"]),
    }
    for module in modules.values():
        optimize(module, None)
    data = write_tflite_signatures(modules)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    vocab = int(modules[DECODE].main.outputs[0].type.shape[-1])
    return LMArtifact(path, n, cache_shape, vocab)


class GenerationError(TensorforgeError):
    """A generation request the artifact cannot serve (a prompt too long, an artifact
    without the prefill / decode signatures)."""


def _pick(logits: np.ndarray, sampler: str, rng, temperature: float, top_k: int) -> int:
    if sampler == "greedy":
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    keep = np.argsort(-scaled, kind="stable")[:top_k]
    p = np.exp(scaled[keep] - scaled[keep].max())
    return int(keep[rng.choice(len(keep), p=p / p.sum())])


def generate(artifact: str | os.PathLike, prompt_ids, max_new_tokens: int, *,
             sampler: str = "greedy", seed: int = 0, temperature: float = 1.0,
             top_k: int = 40) -> np.ndarray:
    """The `max_new_tokens` token ids generated after `prompt_ids` by a `convert_lm`
    artifact in LiteRT: greedily (argmax, as Keras's "greedy" sampler), or with
    sampler="top_k" from the `top_k` most likely tokens at `temperature`, seeded by `seed`.
    GenerationError when the prompt and the new tokens do not fit the artifact's length."""
    from ai_edge_litert.interpreter import Interpreter

    if sampler not in ("greedy", "top_k"):
        raise GenerationError(f"sampler {sampler!r}: use 'greedy' or 'top_k'")
    interpreter = Interpreter(model_path=str(artifact))
    keys = interpreter.get_signature_list()
    if PREFILL not in keys or DECODE not in keys:
        raise GenerationError(f"{artifact} has signatures {sorted(keys)}, not {PREFILL!r} and "
                              f"{DECODE!r}: write it with tensorforge.convert_lm")
    prefill = interpreter.get_signature_runner(PREFILL)
    decode = interpreter.get_signature_runner(DECODE)
    n = int(prefill.get_input_details()["token_ids"]["shape"][1])
    prompt = np.asarray(prompt_ids, np.int32).ravel()
    p = len(prompt)
    if p < 1 or p + max_new_tokens > n:
        raise GenerationError(f"a prompt of {p} tokens plus {max_new_tokens} new ones does not "
                              f"fit this artifact's max_sequence_length {n}")
    ids = np.zeros(n, np.int32)
    ids[:p] = prompt
    cache = prefill(token_ids=ids[None])["cache"]
    rng = np.random.default_rng(seed)
    for index in range(p, p + max_new_tokens):
        out = decode(token=ids[None, index - 1:index], cache=cache,
                     index=np.asarray(index - 1, np.int32))
        cache = out["cache"]
        ids[index] = _pick(out["logits"][0, -1], sampler, rng, temperature, top_k)
    return ids[p:p + max_new_tokens].copy()
