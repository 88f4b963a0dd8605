"""LLM generation artifacts: `convert_lm` writes a KerasHub CausalLM's two generation steps as
one `.tflite` with two signatures, and `generate` drives them.

- `prefill(token_ids [1, N]) -> (logits [1, N, vocab], caches)`: the prompt, padded with 0
  to the artifact's length N (`max_sequence_length`), through the model once, filling every
  layer's key/value cache;
- `decode(token [1, 1], index [], caches) -> (logits [1, 1, vocab], caches)`: one token at
  position `index`, attending to the cache (it does not recompute the prefix) and writing its
  own keys and values into it.

The caches are explicit signature inputs and outputs, one per layer for keys and one for
values (`cache_k_0`, `cache_v_0`, ...: `cache_names`), each in the model's own per-layer
layout (e.g. GPT-2's [1, N, heads, head_dim]), so any runtime can carry them; both
signatures read the same weights, stored once. The steps are the model's own `call_with_cache`, traced on the
TensorFlow backend and lifted like any other TF function, so whatever the model does
(causal masking from the index, rotary embeddings at the right position) is what runs.

The same two steps are written for TensorFlow (`target="savedmodel"`: one SavedModel
directory with `prefill` and `decode` signatures over one set of variables) and TF.js
(`target="tfjs"`: a graph model per step, `prefill/model.json` and `decode/model.json`, each
with its own copy of the weights for now; examples/tfjs_generate.js runs the loop in Node).
Signature names are the same everywhere: inputs `token_ids` / `token`, `index` and the
caches, outputs `logits` and the caches. `open_lm` runs the steps one at a time (an
`LMCache` is tied to the artifact that made it).

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
    directory holding a TF.js graph model per step), the sequence length N, the shape of each
    cache tensor by its signature name, the vocabulary size and the target."""

    path: Path
    max_sequence_length: int
    cache_shapes: dict[str, tuple[int, ...]]
    vocabulary_size: int
    target: str = "tflite"


def _problem(message: str) -> ConversionError:
    return ConversionError("cannot convert this language model", [Diagnostic(message)])


def cache_names(shape: tuple[int, ...]) -> list[str] | None:
    """Signature names of the per-layer key and value caches (`cache_k_0`, `cache_v_0`,
    `cache_k_1`, ...) when `shape` is KerasHub's [batch, layers, 2, N, ...] cache layout;
    None for any other layout (it stays one `cache` tensor)."""
    if len(shape) < 4 or shape[2] != 2:
        return None
    return [f"cache_{kv}_{layer}" for layer in range(shape[1]) for kv in "kv"]


def _steps(causal_lm, n: int):
    """The prefill and decode tf.functions of `causal_lm` at sequence length n, their cache
    signature names, and {name: shape} of the cache tensors.

    Each layer's keys and values are their own signature input and output: the steps stack
    them into the model's cache layout and split its new cache back out, and canonicalization
    removes that pack/unpack pair, so a decode step copies no cache but the slices it
    updates (one cache tensor would be sliced apart and stacked together again each step)."""
    import tensorflow as tf

    cache = _empty_cache(causal_lm, n)
    leaves = tf.nest.flatten(cache)
    dtypes = [leaf.dtype for leaf in leaves]
    shapes = [tuple(int(d) for d in leaf.shape) for leaf in leaves]
    names = cache_names(shapes[0]) if len(leaves) == 1 else None
    if names is not None:
        layers, shape = shapes[0][1], shapes[0]
        parts = [shape[:1] + shape[3:]] * len(names)
        dtypes = dtypes * len(names)

        def pack(tensors):
            return tf.stack([tf.stack(tensors[2 * i:2 * i + 2], axis=1)
                             for i in range(layers)], axis=1)

        def unpack(whole):
            return [whole[:, i, kv] for i in range(layers) for kv in (0, 1)]
    else:
        # Another layout (a recurrent state beside the keys and values, ...): each tensor of
        # the cache structure is its own signature tensor.
        names = ["cache"] if len(leaves) == 1 else [f"cache_{i}" for i in range(len(leaves))]
        parts = shapes

        def pack(tensors):
            return tf.nest.pack_sequence_as(cache, list(tensors))

        def unpack(whole):
            return tf.nest.flatten(whole)

    def zeros():
        return pack([tf.zeros(p, d) for p, d in zip(parts, dtypes)])

    if needs_prompt_length(causal_lm):
        # A model whose prefill needs the prompt's extent (a recurrent state, e.g. linear
        # attention, must not absorb the padding): prefill takes `prompt_length` too.
        @tf.function(input_signature=[tf.TensorSpec([1, n], tf.int32),
                                      tf.TensorSpec([], tf.int32)])
        def prefill(token_ids, prompt_length):
            mask = tf.range(n)[None, :] < prompt_length
            logits, _, new_cache = causal_lm.call_with_cache(
                token_ids, zeros(), tf.constant(0, tf.int32), padding_mask=mask)
            return (logits, *unpack(new_cache))
    else:
        @tf.function(input_signature=[tf.TensorSpec([1, n], tf.int32)])
        def prefill(token_ids):
            # Index 0 as a tensor: some models' layers refuse a Python int beside tensors.
            logits, _, new_cache = causal_lm.call_with_cache(token_ids, zeros(),
                                                             tf.constant(0, tf.int32))
            return (logits, *unpack(new_cache))

    specs = [tf.TensorSpec([1, 1], tf.int32), tf.TensorSpec([], tf.int32)]
    specs += [tf.TensorSpec(p, d) for p, d in zip(parts, dtypes)]

    @tf.function(input_signature=specs)
    def decode(token, index, *tensors):
        logits, _, new_cache = causal_lm.call_with_cache(token, pack(list(tensors)), index)
        return (logits, *unpack(new_cache))

    return prefill, decode, names, {name: tuple(p) for name, p in zip(names, parts)}


def needs_prompt_length(causal_lm) -> bool:
    """True when the model's own prefill (`_build_cache`) takes the prompt's padding mask:
    its cache holds a state that padding would change (Keras's generate passes the mask)."""
    import inspect

    param = inspect.signature(causal_lm._build_cache).parameters.get("padding_mask")
    return param is not None and param.default is inspect.Parameter.empty


def _empty_cache(causal_lm, n: int):
    """The model's empty cache (a tensor or a structure of them) for one sequence of n
    tokens, from its own `_build_cache`: text-only models take the token ids alone; models
    that also take images or a padding mask get none and an all-true mask."""
    import inspect

    import tensorflow as tf

    params = list(inspect.signature(causal_lm._build_cache).parameters.values())[1:]
    args = [tf.ones([1, n], tf.bool) if p.name == "padding_mask" else None for p in params
            if p.default is inspect.Parameter.empty]
    return causal_lm._build_cache(tf.zeros([1, n], tf.int32), *args)[1]


def convert_lm(causal_lm: Any, *, output: str | os.PathLike, max_sequence_length: int,
               target: str | list[str] = "tflite",
               quantization: Any = None) -> LMArtifact | dict[str, LMArtifact]:
    """Writes `causal_lm` (a KerasHub CausalLM on the TensorFlow backend, preprocessor not
    needed; or a JAX / Flax decoder as a `tensorforge.JaxLM`) with `prefill` and `decode`
    steps (module docstring) for sequences of up to `max_sequence_length` tokens, for
    `target`: "tflite" (one `.tflite` at `output`, two signatures), "savedmodel" (one
    SavedModel directory at `output`, two signatures sharing the variables) or "tfjs"
    (directory `output` with `prefill/` and `decode/` graph models). A list of targets or
    "all" writes each into directory `output` (`model.tflite`, `savedmodel/`, `tfjs/`) and
    returns {target: LMArtifact}; one target returns its LMArtifact. `quantization`: a
    weight-only or dynamic scheme (`"int4-weight"`: blockwise int4 matmuls, see
    `_lm_quantization`; `"dynamic-int8"`; or a config map of one), applied to both steps'
    matmuls and embedding tables alike; activations stay float at the interface (TFLite
    runs the integer and int4 kernels, TF and TF.js the dequantize form). Atomic: nothing is left at `output` on
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
        modules, cache_shapes = jax_steps(jax_lm, n)
    else:
        prefill, decode, names, cache_shapes = _steps(causal_lm, n)
        modules = {
            PREFILL: lift_concrete_function(
                prefill.get_concrete_function(),
                input_names=["token_ids", "prompt_length"][:len(
                    prefill.input_signature)],
                output_names=["logits", *names]),
            DECODE: lift_concrete_function(decode.get_concrete_function(),
                                           input_names=["token", "index", *names],
                                           output_names=["logits", *names]),
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
        quantization = _lm_quantization(quantization, modules)
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
    artifacts = {t: LMArtifact(dest, n, cache_shapes, vocab, t)
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
    import inspect

    if "cache_update_index" not in inspect.signature(causal_lm.call_with_cache).parameters:
        raise _problem(f"{type(causal_lm).__name__}.call_with_cache takes no cache position "
                       f"(cache_update_index): a recurrent state, not a key/value cache "
                       f"that prefill and decode steps index; not supported")
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
    from ..backends.tflite.writer import save_tflite_signatures

    save_tflite_signatures(modules, dest)


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


LM_INT4_BLOCK = 32


def _lm_quantization(quantization, modules):
    """What `quantization` means for a language model: the scheme name "int4-weight" takes
    its matmul weights blockwise (one scale per LM_INT4_BLOCK input elements per output
    channel: LiteRT's blockwise int4 kernel, more accurate than one scale per channel) when
    their contraction dim is a multiple of the block, and per channel otherwise. Embedding
    tables are per row; a matmul that reads an embedding table (tied input and output
    embeddings: the logits) stays per channel too, so that one int4 table, stored once,
    serves both. Anything else is used as given."""
    from ..passes.quantize.config import QuantizationConfigurationMap
    from ..passes.quantize.configuration import QuantizationConfiguration

    if quantization != "int4-weight":
        return quantization
    tables = {np.asarray(n.inputs[0].const).tobytes()
              for m in modules.values() for n in m.main
              if n.op == "gather" and n.inputs[0].const is not None}
    per_channel = set()
    for module in modules.values():
        for node in module.main:
            w = node.inputs[1] if node.op == "matmul" and len(node.inputs) > 1 else None
            if w is None or w.const is None or w.type.rank != 2:
                continue
            nk = np.asarray(w.const) if node.attrs["transpose_b"] else np.asarray(w.const).T
            if nk.shape[1] % LM_INT4_BLOCK or np.ascontiguousarray(nk).tobytes() in tables:
                per_channel.add(node.scope)
    config = QuantizationConfigurationMap("int4-weight")
    block = QuantizationConfiguration(bits=4, symmetric=True, granularity="blockwise",
                                      block_size=LM_INT4_BLOCK, narrow_range=True)
    config.set_config(".*", op_type="matmul", config={"b": block})
    for scope in sorted(per_channel):
        # An exact scope key beats the regex: these matmuls keep the scheme's per-channel
        # weights.
        config.set_config(scope, op_type="matmul", config={})
    return config


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


class LMCache(dict):
    """The key/value cache between generation steps: {signature name: tensor}, tagged with
    the artifact that made it so that a cache cannot be fed to another artifact."""

    def __init__(self, tensors, origin: str):
        super().__init__(tensors)
        self.origin = origin


class LMRunner:
    """The two steps of a `convert_lm` artifact, loaded once: a `.tflite` file (LiteRT) or a
    SavedModel directory (TensorFlow; `num_threads` is LiteRT's). `prefill(ids)` and `decode(token, cache, index)` each
    return (logits as a NumPy array, the new LMCache); a cache from another artifact, or
    with other names, shapes or dtypes, is refused with a GenerationError listing each
    difference. `max_sequence_length` is N; `cache_specs` maps each cache name to its
    (shape, dtype)."""

    def __init__(self, artifact: str | os.PathLike, num_threads: int | None = None):
        path = Path(artifact)
        if path.is_dir() and (path / "saved_model.pb").exists():
            self._open_savedmodel(path)
        elif path.is_dir() and (path / PREFILL / "model.json").exists():
            raise GenerationError(f"{path} is a TF.js generation artifact: run it with "
                                  f"@tensorflow/tfjs (examples/tfjs_generate.js)")
        elif not path.is_file():
            raise GenerationError(f"{path} is neither a .tflite file nor a SavedModel "
                                  f"directory written by tensorforge.convert_lm")
        else:
            self._open_tflite(path, num_threads)
        stat = path.stat()
        # Two loads of one unchanged artifact share caches; anything else does not.
        self.origin = f"{path.resolve()} ({stat.st_size} bytes, mtime {stat.st_mtime_ns})"

    def _open_tflite(self, path: Path, num_threads: int | None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        except (ValueError, RuntimeError) as e:
            raise GenerationError(f"{path} is not a readable .tflite model: {e}") from None
        _check_keys(path, interpreter.get_signature_list())
        prefill = interpreter.get_signature_runner(PREFILL)
        decode = interpreter.get_signature_runner(DECODE)
        details = decode.get_input_details()
        self.max_sequence_length = int(prefill.get_input_details()["token_ids"]["shape"][1])
        self.cache_specs = {k: (tuple(int(d) for d in v["shape"]), np.dtype(v["dtype"]))
                            for k, v in details.items() if k not in ("token", "index")}
        self.takes_prompt_length = "prompt_length" in prefill.get_input_details()
        self._prefill = lambda **inputs: prefill(**inputs)
        self._decode = lambda **inputs: decode(**inputs)
        self._to_numpy = np.asarray

    def _open_savedmodel(self, path: Path) -> None:
        import tensorflow as tf

        # `loaded` owns the variables the signatures read: kept alive with them.
        self._loaded = tf.saved_model.load(str(path))
        signatures = self._loaded.signatures
        _check_keys(path, signatures)
        prefill, decode = signatures[PREFILL], signatures[DECODE]
        specs = decode.structured_input_signature[1]
        self.max_sequence_length = int(
            prefill.structured_input_signature[1]["token_ids"].shape[1])
        self.cache_specs = {k: (tuple(int(d) for d in v.shape), np.dtype(v.dtype.as_numpy_dtype))
                            for k, v in specs.items() if k not in ("token", "index")}
        # The cache stays in tf.Tensors between steps: no copy through NumPy.
        self.takes_prompt_length = "prompt_length" in prefill.structured_input_signature[1]
        self._prefill = lambda **inputs: prefill(**{k: tf.constant(v)
                                                    for k, v in inputs.items()})
        self._decode = lambda **inputs: decode(**{
            k: v if isinstance(v, tf.Tensor) else tf.constant(v) for k, v in inputs.items()})
        self._to_numpy = lambda t: t.numpy()

    def _split(self, out) -> tuple[np.ndarray, LMCache]:
        cache = LMCache({k: out[k] for k in self.cache_specs}, self.origin)
        return self._to_numpy(out["logits"]), cache

    def prefill(self, token_ids, prompt_length: int | None = None
                ) -> tuple[np.ndarray, LMCache]:
        """Logits [1, N, vocab] and the cache after the prompt `token_ids` ([N] or [1, N]
        int32, padded with 0 to N). Artifacts whose prefill takes `prompt_length` (models
        with a recurrent state, `takes_prompt_length`) need it: the prompt's length."""
        ids = np.asarray(token_ids, np.int32).reshape(1, -1)
        if ids.shape[1] != self.max_sequence_length:
            raise GenerationError(f"prefill takes {self.max_sequence_length} token ids (the "
                                  f"prompt padded with 0), got {ids.shape[1]}")
        inputs = {"token_ids": ids}
        if self.takes_prompt_length:
            if prompt_length is None:
                raise GenerationError("this artifact's prefill takes prompt_length (the "
                                      "number of prompt tokens in token_ids)")
            inputs["prompt_length"] = np.asarray(prompt_length, np.int32)
        return self._split(self._prefill(**inputs))

    def decode(self, token: int, cache: LMCache, index: int) -> tuple[np.ndarray, LMCache]:
        """Logits [1, 1, vocab] and the new cache after `token` at position `index`."""
        self._check_cache(cache)
        if not 0 <= int(index) < self.max_sequence_length:
            raise GenerationError(f"decode index {index} is outside [0, "
                                  f"{self.max_sequence_length})")
        return self._split(self._decode(token=np.full((1, 1), token, np.int32),
                                        index=np.asarray(index, np.int32), **cache))

    def _check_cache(self, cache) -> None:
        """GenerationError listing every way `cache` does not fit this artifact."""
        if not isinstance(cache, LMCache):
            raise GenerationError(f"decode takes the LMCache returned by this artifact's "
                                  f"prefill or decode, got {type(cache).__name__}")
        problems = []
        if cache.origin != self.origin:
            problems.append(f"it was made by {cache.origin}, not by {self.origin}")
        for name, (shape, dtype) in self.cache_specs.items():
            if name not in cache:
                problems.append(f"{name} is missing")
                continue
            got = cache[name]
            got_shape, got_dtype = tuple(got.shape), np.dtype(getattr(
                got.dtype, "as_numpy_dtype", got.dtype))
            if got_shape != shape or got_dtype != dtype:
                problems.append(f"{name} is {got_dtype}{list(got_shape)}, the artifact takes "
                                f"{dtype}{list(shape)}")
        problems += [f"{name} is not one of this artifact's cache tensors"
                     for name in cache if name not in self.cache_specs]
        if problems:
            raise GenerationError("this cache does not belong to this artifact: "
                                  + "; ".join(problems))


def open_lm(artifact: str | os.PathLike, num_threads: int | None = None) -> LMRunner:
    """Loads a `convert_lm` artifact (a `.tflite` file or a SavedModel directory) for step-by-
    step use: `LMRunner.prefill` and `LMRunner.decode` (LiteRT on `num_threads` threads, its
    default when None). GenerationError when it is not one."""
    return LMRunner(artifact, num_threads)


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
    runner = open_lm(artifact)
    n = runner.max_sequence_length
    prompt = np.asarray(prompt_ids, np.int32).ravel()
    p = len(prompt)
    if p < 1 or p + max_new_tokens > n:
        raise GenerationError(f"a prompt of {p} tokens plus {max_new_tokens} new ones does not "
                              f"fit this artifact's max_sequence_length {n}")
    ids = np.zeros(n, np.int32)
    ids[:p] = prompt
    _, cache = runner.prefill(ids, p)
    rng = np.random.default_rng(seed)
    for index in range(p, p + max_new_tokens):
        logits, cache = runner.decode(ids[index - 1], cache, index - 1)
        ids[index] = _pick(logits[0, -1], sampler, rng, temperature, top_k)
    return ids[p:p + max_new_tokens].copy()
