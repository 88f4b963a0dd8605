"""LLM generation benchmark: a KerasHub GPT-2 CausalLM (random weights, preprocessor=None)
written by `convert_lm` as one `.tflite` with `prefill` and `decode` signatures, measured in
LiteRT against Keras's own jitted `generate` on the JAX backend, same weights.

- decode tokens/s: 32 greedy tokens after an 8-token prompt. LiteRT: only the decode steps are
  timed (signature runner calls plus the argmax, as `generate` does them, 2 threads). Keras:
  `CausalLM.generate` on KERAS_BACKEND=jax (its generate step is jax.jit-compiled), in a
  subprocess since Keras's backend is fixed per process, weights passed through an .npz of
  `get_weights()`, compiled by a warm-up call first. Keras's generate always prefills the whole
  padded [1, L] input, then loops over the positions its padding mask leaves open; the decode
  time is the generate time with the prompt's mask minus the generate time with a full mask
  (same shapes, same compiled function, prefill only). Ratio LiteRT / Keras, goal >= 1.0.
- decode cost flat in the position: median seconds per `decode` call at index 8 vs index 120
  (the cache is max_sequence_length long either way), ratio goal <= 1.5.
- artifact bytes of float / dynamic-int8 / int4-weight and their ratio to float (goal int4 <=
  0.17x), and the SQNR in dB of each quantized artifact's prefill logits (prompt positions)
  against the float artifact's.

`TENSORFORGE_BENCH_LLM=hidden,layers,vocab` (e.g. 128,2,4000) shrinks the model, for
development."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HIDDEN, LAYERS, VOCAB, HEADS = 512, 8, 32000, 8
MAX_LEN = 128            # the artifact's max_sequence_length (and Keras's generate length)
PROMPT_LEN, NEW_TOKENS = 8, 32
POSITIONS = (8, 120)
POSITION_REPEATS = 30
KERAS_REPEATS = 3
SCHEMES = ("float", "dynamic-int8", "int4-weight")


def config() -> dict:
    """The GPT-2 backbone's arguments (module docstring: $TENSORFORGE_BENCH_LLM scales it)."""
    hidden, layers, vocab = HIDDEN, LAYERS, VOCAB
    env = os.environ.get("TENSORFORGE_BENCH_LLM", "").strip()
    if env:
        hidden, layers, vocab = (int(v) for v in env.split(","))
    return dict(vocabulary_size=vocab, num_layers=layers, num_heads=max(1, hidden // 64),
                hidden_dim=hidden, intermediate_dim=4 * hidden, max_sequence_length=MAX_LEN)


def _causal_lm(cfg: dict):
    import keras_hub

    return keras_hub.models.GPT2CausalLM(backbone=keras_hub.models.GPT2Backbone(**cfg),
                                         preprocessor=None)


def _prompt(vocab: int) -> np.ndarray:
    return np.random.default_rng(0).integers(1, vocab, PROMPT_LEN).astype(np.int32)


def sqnr_db(got: np.ndarray, want: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `got` against `want`, in dB."""
    want = want.astype(np.float64)
    noise = np.sum((got.astype(np.float64) - want) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(want ** 2) / noise))


# ------------------------------------------------------------------------------- LiteRT side

def litert_decode(path: Path, prompt: np.ndarray) -> dict:
    """Greedy decode of NEW_TOKENS after `prompt`, as `generate` does it (`open_lm`'s
    runner, LiteRT on 2 threads); only the decode calls (and the argmax) are timed. Also the
    prefill logits and per-position decode seconds."""
    from ..generation import open_lm

    runner = open_lm(path, num_threads=2)
    p = len(prompt)
    ids = np.zeros(MAX_LEN, np.int32)
    ids[:p] = prompt
    logits, cache = runner.prefill(ids)
    logits = logits[0, :p].copy()
    # One untimed step first (allocations, packing).
    runner.decode(int(ids[p - 1]), cache, p - 1)
    start = time.perf_counter()
    for index in range(p, p + NEW_TOKENS):
        step, cache = runner.decode(int(ids[index - 1]), cache, index - 1)
        ids[index] = int(np.argmax(step[0, -1]))
    seconds = time.perf_counter() - start
    per_position = {}
    for pos in POSITIONS:
        times = []
        for i in range(POSITION_REPEATS + 3):
            t0 = time.perf_counter()
            runner.decode(int(ids[0]), cache, pos)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        per_position[pos] = statistics.median(times)
    return {"seconds": seconds, "tokens": ids[p:p + NEW_TOKENS].copy(), "logits": logits,
            "per_position": per_position}


# -------------------------------------------------------------------------------- Keras side

def _keras_jax_main(cfg_json: str, weights: str, out: str) -> None:
    """Subprocess entry (KERAS_BACKEND=jax): Keras's jitted generate, decode seconds."""
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    cfg = json.loads(cfg_json)
    lm = _causal_lm(cfg)
    with np.load(weights) as w:
        lm.set_weights([w[f"arr_{i}"] for i in range(len(w.files))])
    lm.compile(sampler="greedy")
    prompt = _prompt(cfg["vocabulary_size"])
    ids = np.zeros((1, MAX_LEN), np.int32)
    ids[0, :PROMPT_LEN] = prompt
    decode_mask = np.zeros((1, MAX_LEN), bool)
    decode_mask[0, :PROMPT_LEN] = True
    # Generate up to PROMPT_LEN + NEW_TOKENS: the input is [1, L] with L that length.
    length = PROMPT_LEN + NEW_TOKENS
    x = {"token_ids": ids[:, :length], "padding_mask": decode_mask[:, :length]}
    full = {"token_ids": ids[:, :length], "padding_mask": np.ones((1, length), bool)}

    def timed(inputs) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        result = lm.generate(inputs, stop_token_ids=None)
        return time.perf_counter() - start, np.asarray(result["token_ids"])

    for inputs in (x, full, x):    # compile and warm up
        timed(inputs)
    gen, pre = [], []
    for _ in range(KERAS_REPEATS):
        seconds, tokens = timed(x)
        gen.append(seconds)
        pre.append(timed(full)[0])
    Path(out).write_text(json.dumps({
        "generate_s": statistics.median(gen), "prefill_s": statistics.median(pre),
        "tokens": tokens[0, PROMPT_LEN:length].tolist()}))


def keras_jax_decode(cfg: dict, weights: Path, workdir: Path) -> dict:
    """Runs `_keras_jax_main` in a subprocess on the JAX backend."""
    out = workdir / "keras_jax.json"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    code = ("import sys; from tensorforge.tools.bench.llm import _keras_jax_main; "
            "_keras_jax_main(*sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg), str(weights), str(out)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Keras-JAX generate failed:\n{proc.stderr[-3000:]}")
    r = json.loads(out.read_text())
    r["seconds"] = r["generate_s"] - r["prefill_s"]
    return r


# ------------------------------------------------------------------------------------ bench

def bench_llm() -> dict:
    """Converts the model three ways, measures LiteRT and Keras-JAX; returns the results."""
    import keras

    from ..generation import convert_lm

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("the LLM bench converts on the TensorFlow backend")
    cfg = config()
    keras.utils.set_random_seed(0)
    lm = _causal_lm(cfg)
    prompt = _prompt(cfg["vocabulary_size"])
    params = int(sum(np.prod(w.shape) for w in lm.weights))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "weights.npz"
        np.savez(weights, *lm.get_weights())
        arts, convert_s = {}, {}
        for scheme in SCHEMES:
            t0 = time.perf_counter()
            arts[scheme] = convert_lm(lm, output=tmp / f"{scheme}.tflite",
                                      max_sequence_length=MAX_LEN,
                                      quantization=None if scheme == "float" else scheme).path
            convert_s[scheme] = time.perf_counter() - t0
        sizes = {s: p.stat().st_size for s, p in arts.items()}
        runs = {s: litert_decode(p, prompt) for s, p in arts.items()}
        keras_r = keras_jax_decode(cfg, weights, tmp)
    f = runs["float"]
    return {
        "config": cfg, "params": params, "convert_s": convert_s, "bytes": sizes,
        "litert_tok_s": NEW_TOKENS / f["seconds"], "keras_tok_s": NEW_TOKENS / keras_r["seconds"],
        "tokens_match": int(np.sum(f["tokens"] == np.asarray(keras_r["tokens"]))),
        "per_position": {s: r["per_position"] for s, r in runs.items()},
        "quant_tok_s": {s: NEW_TOKENS / r["seconds"] for s, r in runs.items()},
        "sqnr": {s: sqnr_db(runs[s]["logits"], f["logits"]) for s in SCHEMES[1:]},
        "total_s": time.perf_counter() - started,
    }


def llm_table(console) -> dict:
    """Runs `bench_llm` and prints it as one rich Table; returns the results."""
    from rich.table import Table

    r = bench_llm()
    c = r["config"]
    a, b = POSITIONS
    table = Table(title=(
        f"LLM generation: KerasHub GPT-2 CausalLM (hidden {c['hidden_dim']}, {c['num_layers']} "
        f"layers, vocabulary {c['vocabulary_size']}, {r['params'] / 1e6:.1f}M parameters, random "
        f"weights), convert_lm max_sequence_length {MAX_LEN}; {NEW_TOKENS} greedy tokens after "
        f"a {PROMPT_LEN}-token prompt, decode steps only; LiteRT 2 threads vs Keras generate on "
        f"JAX (jitted, same weights); goals: tokens/s ratio >= 1.0, decode @{b} / @{a} <= 1.5, "
        f"int4 bytes <= 0.17x float"))
    for col in ("artifact", "convert s", "bytes", "× float", "logits SQNR dB",
                "decode tok/s (LiteRT / Keras-JAX)", "ratio", f"decode ms @{a} / @{b}", "ratio"):
        table.add_column(col, justify="left" if col == "artifact" else "right")
    fb = r["bytes"]["float"]
    for s in SCHEMES:
        pp = r["per_position"][s]
        tok = (f"{r['litert_tok_s']:.1f} / {r['keras_tok_s']:.1f}" if s == "float"
               else f"{r['quant_tok_s'][s]:.1f} / —")
        ratio = r["quant_tok_s"][s] / r["keras_tok_s"]
        table.add_row(s, f"{r['convert_s'][s]:.1f}", f"{r['bytes'][s]:,}",
                      f"{r['bytes'][s] / fb:.3f}",
                      "—" if s == "float" else f"{r['sqnr'][s]:.1f}", tok, f"{ratio:.2f}",
                      f"{pp[a] * 1e3:.2f} / {pp[b] * 1e3:.2f}", f"{pp[b] / pp[a]:.2f}")
    console.print(table)
    console.print(f"greedy tokens, LiteRT float vs Keras-JAX: {r['tokens_match']}/{NEW_TOKENS} "
                  f"equal; LLM bench {r['total_s']:.0f} s")
    return r


if __name__ == "__main__":
    from rich.console import Console

    llm_table(Console(width=max(Console().width, 200)))
