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

The same two steps are written for TensorFlow (`target="savedmodel"`: one SavedModel
directory with `prefill` and `decode` signatures over one set of variables) and TF.js
(`target="tfjs"`: a graph model per step, `prefill/model.json` and `decode/model.json`, each
with its own copy of the weights for now; examples/tfjs_generate.js runs the loop in Node).
Signature names are the same everywhere: inputs `token_ids` / `token`, `cache`, `index`,
outputs `logits`, `cache`.

`generate` follows Keras's own loop (`CausalLM.generate`): prefill the padded prompt, then for
each new position i, decode the token at i - 1 at index i - 1 and pick the next token from its
logits, greedily or by top-k / temperature sampling from a seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.errors import ConversionError, Diagnostic, TensorforgeError
from .lm_jax import JaxLM, jax_steps

PREFILL, DECODE = "prefill", "decode"
TARGETS = ("tflite", "savedmodel", "tfjs")
# Where each target's artifact goes inside `output` when several targets are written at once.
_MULTI_NAMES = {"tflite": "model.tflite", "savedmodel": "savedmodel", "tfjs": "tfjs"}


@dataclass
class LMArtifact:
    """What `convert_lm` wrote: the path (a `.tflite` file, a SavedModel directory, or a
    directory holding a TF.js graph model per step), the sequence length N, the cache's
    shape, the vocabulary size and the target."""

    path: Path
    max_sequence_length: int
    cache_shape: tuple[int, ...]
    vocabulary_size: int
    target: str = "tflite"


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
               target: str | list[str] = "tflite",
               quantization: Any = None) -> LMArtifact | dict[str, LMArtifact]:
    """Writes `causal_lm` (a KerasHub CausalLM on the TensorFlow backend, preprocessor not
    needed; or a JAX / Flax decoder as a `tensorforge.JaxLM`) with `prefill` and `decode`
    steps (module docstring) for sequences of up to `max_sequence_length` tokens, for
    `target`: "tflite" (one `.tflite` at `output`, two signatures), "savedmodel" (one SavedModel directory at `output`, two signatures sharing
    the variables) or "tfjs" (directory `output` with `prefill/` and `decode/` graph models).
    A list of targets or "all" writes each into directory `output` (`model.tflite`,
    `savedmodel/`, `tfjs/`) and returns {target: LMArtifact}; one target returns its
    LMArtifact. `quantization`: a weight-only or dynamic scheme (`"int4-weight"`,
    `"dynamic-int8"`, or a config map of one, e.g. blockwise int4), applied to both steps'
    matmuls and embedding tables alike; activations stay float (TFLite runs the integer
    kernels, TF and TF.js the dequantize form). Atomic: nothing is left at `output` on
    failure. ConversionError says what is wrong (an unknown target, another backend, a model
    without a cache, a length above the model's own limit, a scheme that needs calibration
    data)."""
    from ..frontends.tf.lift import lift_concrete_function
    from .convert import optimize

    targets = _targets(target)
    n = int(max_sequence_length)
    jax_lm = _as_jax_lm(causal_lm)
    if jax_lm is None:
        _check_keras_lm(causal_lm, n)
    elif n < 2:
        raise _problem(f"max_sequence_length {n} must be at least 2")
    path = Path(output)
    single = isinstance(target, str) and target != "all"
    destinations = {targets[0]: path} if single else {
        t: path / _MULTI_NAMES[t] for t in targets}
    for t, dest in destinations.items():
        _check_destination(t, dest)
    if jax_lm is not None:
        modules, cache_shape = jax_steps(jax_lm, n)
    else:
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
    vocab = int(modules[DECODE].main.outputs[0].type.shape[-1])
    # Every artifact is written into one staging directory beside `output` first and moved
    # into place only when all are written: a failing target leaves nothing behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.stage-"))
    try:
        staged = {}
        # Quantized once; each target then takes its own form of the result.
        results = None if quantization is None else {
            key: _quantized(module, quantization) for key, module in modules.items()}
        for t in targets:
            written = modules if results is None else {
                key: _for_target(result, t) for key, result in results.items()}
            staged[t] = staging / _MULTI_NAMES[t]
            _WRITERS[t](written, staged[t])
        for t, dest in destinations.items():
            _place(staged[t], dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    artifacts = {t: LMArtifact(dest, n, cache_shape, vocab, t)
                 for t, dest in destinations.items()}
    return artifacts[targets[0]] if single else artifacts


def _as_jax_lm(lm):
    """`lm` when it is a JAX / Flax decoder (tools/lm_jax.JaxLM), else None. (lm_jax imports
    JAX only when it lifts, so Keras users never pay for it.)"""
    return lm if isinstance(lm, JaxLM) else None


def _check_keras_lm(causal_lm, n: int) -> None:
    """Raises ConversionError unless `causal_lm` is a KerasHub CausalLM on the TensorFlow
    backend whose position limit admits n tokens."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise _problem(f"the Keras backend is {keras.backend.backend()!r}: convert_lm traces "
                       f"the model's steps with TensorFlow (KERAS_BACKEND=tensorflow)")
    if not (hasattr(causal_lm, "call_with_cache") and hasattr(causal_lm, "_build_cache")):
        raise _problem(f"{type(causal_lm).__name__} has no call_with_cache / _build_cache: "
                       f"not a KerasHub CausalLM with a key/value cache (nor a "
                       f"tensorforge JaxLM)")
    limit = getattr(getattr(causal_lm, "backbone", None), "max_sequence_length", None)
    if n < 2 or (limit is not None and n > int(limit)):
        raise _problem(f"max_sequence_length {n} must be in [2, {limit}] (the model's "
                       f"position embedding has {limit} positions)")


def _targets(target) -> list[str]:
    """The targets `target` names ("tflite", "savedmodel", "tfjs", a list of them, "all")."""
    names = list(TARGETS) if target == "all" else (
        [target] if isinstance(target, str) else list(target))
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        raise _problem(f"target {target!r}: a generation artifact is one of {list(TARGETS)}, "
                       f"a list of them, or 'all'")
    return list(dict.fromkeys(names))


def _check_destination(target: str, dest: Path) -> None:
    """Refuses to replace anything at `dest` but an earlier artifact of the same kind."""
    if not os.path.lexists(dest):
        return
    if target == "tflite":
        ok = dest.is_file()
    elif dest.is_dir() and not dest.is_symlink():
        entries = set(os.listdir(dest))
        ok = not entries or ("saved_model.pb" in entries if target == "savedmodel"
                             else entries <= {PREFILL, DECODE})
    else:
        ok = False
    if not ok:
        raise _problem(f"output {dest} exists and is not an earlier {target} generation "
                       f"artifact; refusing to replace it")


def _place(staged: Path, dest: Path) -> None:
    """Moves a staged artifact to `dest`, an earlier one swapped out only once it is in."""
    from ..backends.common import swap_directory

    dest.parent.mkdir(parents=True, exist_ok=True)
    if staged.is_dir():
        swap_directory(staged, dest)
    else:
        os.replace(staged, dest)


def _write_tflite(modules, dest: Path) -> None:
    from ..backends.tflite.writer import write_tflite_signatures

    dest.write_bytes(write_tflite_signatures(modules))


def _write_savedmodel(modules, dest: Path) -> None:
    from ..backends.savedmodel import write_savedmodel_signatures

    write_savedmodel_signatures(modules, dest)


def _write_tfjs(modules, dest: Path) -> None:
    from ..backends.tfjs import write_tfjs

    # TF.js graph models have one signature each: a model per step, weights in each.
    dest.mkdir()
    for key, module in modules.items():
        write_tfjs(module, dest / key)


_WRITERS = {"tflite": _write_tflite, "savedmodel": _write_savedmodel, "tfjs": _write_tfjs}


def _quantized(module, quantization):
    """The QuantizeResult of `module` under a scheme that needs no calibration."""
    from . import quantize as Q

    scheme = Q.as_config_map(quantization).scheme
    if scheme.mode == "static":
        raise _problem(f"scheme {scheme.name} quantizes activations, which needs calibration "
                       f"data; for a language model use a weight-only or dynamic scheme "
                       f"(int4-weight, dynamic-int8)")
    return Q.quantize_module(module, quantization, progress=False)


def _for_target(result, target: str):
    """A quantized step in `target`'s form (TFLite: integer kernels; TF, TF.js: the
    quantize/dequantize form)."""
    from . import quantize as Q

    return Q.for_target(result, target)


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


def _open(artifact: Path):
    """(N, prefill(ids) -> cache, decode(token, cache, index) -> (logits, cache)) for a
    `.tflite` file (LiteRT) or a SavedModel directory (TensorFlow)."""
    if artifact.is_dir() and (artifact / "saved_model.pb").exists():
        return _open_savedmodel(artifact)
    if artifact.is_dir() and (artifact / PREFILL / "model.json").exists():
        raise GenerationError(f"{artifact} is a TF.js generation artifact: run it with "
                              f"@tensorflow/tfjs (examples/tfjs_generate.js)")
    if not artifact.is_file():
        raise GenerationError(f"{artifact} is neither a .tflite file nor a SavedModel "
                              f"directory written by tensorforge.convert_lm")
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact))
    _check_keys(artifact, interpreter.get_signature_list())
    prefill = interpreter.get_signature_runner(PREFILL)
    decode = interpreter.get_signature_runner(DECODE)
    n = int(prefill.get_input_details()["token_ids"]["shape"][1])

    def step(token, cache, index):
        out = decode(token=token, cache=cache, index=index)
        return out["logits"], out["cache"]

    return n, lambda ids: prefill(token_ids=ids)["cache"], step


def _open_savedmodel(artifact: Path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(artifact))
    signatures = loaded.signatures
    _check_keys(artifact, signatures)
    prefill, decode = signatures[PREFILL], signatures[DECODE]
    n = int(prefill.structured_input_signature[1]["token_ids"].shape[1])

    def step(token, cache, index):
        # The cache stays a tf.Tensor between steps: no copy through NumPy.
        out = decode(token=tf.constant(token), cache=cache, index=tf.constant(index))
        return out["logits"].numpy(), out["cache"]

    def first(ids):
        # `loaded` owns the variables the signatures read: keep it alive with them.
        return prefill(token_ids=tf.constant(ids))["cache"]

    first.loaded = loaded
    return n, first, step


def _check_keys(artifact, keys) -> None:
    if PREFILL not in keys or DECODE not in keys:
        raise GenerationError(f"{artifact} has signatures {sorted(keys)}, not {PREFILL!r} and "
                              f"{DECODE!r}: write it with tensorforge.convert_lm")


def generate(artifact: str | os.PathLike, prompt_ids, max_new_tokens: int, *,
             sampler: str = "greedy", seed: int = 0, temperature: float = 1.0,
             top_k: int = 40) -> np.ndarray:
    """The `max_new_tokens` token ids generated after `prompt_ids` by a `convert_lm`
    artifact: a `.tflite` (run in LiteRT) or a SavedModel directory (run in TensorFlow);
    greedily (argmax, as Keras's "greedy" sampler), or with sampler="top_k" from the `top_k`
    most likely tokens at `temperature`, seeded by `seed`. GenerationError when the prompt
    and the new tokens do not fit the artifact's length, or the artifact is not one."""
    if sampler not in ("greedy", "top_k"):
        raise GenerationError(f"sampler {sampler!r}: use 'greedy' or 'top_k'")
    n, prefill, decode = _open(Path(artifact))
    prompt = np.asarray(prompt_ids, np.int32).ravel()
    p = len(prompt)
    if p < 1 or p + max_new_tokens > n:
        raise GenerationError(f"a prompt of {p} tokens plus {max_new_tokens} new ones does not "
                              f"fit this artifact's max_sequence_length {n}")
    ids = np.zeros(n, np.int32)
    ids[:p] = prompt
    cache = prefill(ids[None])
    rng = np.random.default_rng(seed)
    for index in range(p, p + max_new_tokens):
        logits, cache = decode(ids[None, index - 1:index], cache,
                               np.asarray(index - 1, np.int32))
        ids[index] = _pick(np.asarray(logits)[0, -1], sampler, rng, temperature, top_k)
    return ids[p:p + max_new_tokens].copy()
