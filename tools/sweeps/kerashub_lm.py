"""The generation sweep: every KerasHub `*CausalLM` class through `convert_lm`, its greedy
tokens in LiteRT compared with Keras's own `generate` on the same random weights.

    python -m tensorforge.tools.sweeps.kerashub_lm [--only QwenCausalLM,...] [--out FILE]

Each model is built from the tiny backbone configuration of the KerasHub sweep
(kerashub_configs.CONFIGS), with `preprocessor=None`, converted at max_sequence_length
`LENGTH` and asked for `NEW_TOKENS` greedy tokens after a `PROMPT`. One subprocess per model,
so that a crash or a hang is that model's row, not the sweep's end. The markdown table goes
to docs/conformance/kerashub_lm.md."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from . import run_worker

LENGTH, NEW_TOKENS = 24, 8
PROMPT = (5, 17, 3, 42, 8)
TIMEOUT_S = 600
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "conformance" / "kerashub_lm.md"

# CausalLMs whose `generate` needs more than token ids (images, audio, a vision tower): not a
# text decoder `convert_lm` takes; listed with the reason, not counted.
NOT_TEXT: dict[str, str] = {
    "BLIP2CausalLM": "generation is conditioned on images (a vision encoder and Q-Former)",
    "PaliGemmaCausalLM": "generation is conditioned on images (a vision encoder)",
    "PARSeqCausalLM": "a scene-text recognizer: generation is conditioned on images",
    "Gemma3nCausalLM": "its generate takes image and audio inputs beside the token ids",
    "Gemma4AssistantCausalLM": "a speculative-decoding drafter, not used standalone: each "
                               "step takes the target model's hidden state and KV cache",
}


def model_names() -> list[str]:
    """Every `*CausalLM` class in the installed keras_hub.models, sorted."""
    import keras_hub

    return sorted(n for n in dir(keras_hub.models)
                  if n.endswith("CausalLM") and n != "CausalLM")


def build(name: str):
    """The CausalLM `name` over its tiny KerasHub-sweep backbone, seeded random weights."""
    import keras
    import keras_hub

    from .kerashub_configs import CONFIGS

    cls = getattr(keras_hub.models, name)
    backbone_name = cls.backbone_cls.__name__
    if backbone_name not in CONFIGS:
        raise LookupError(f"no tiny configuration for {backbone_name}")
    config = CONFIGS[backbone_name]
    config = config() if callable(config) else dict(config)
    keras.utils.set_random_seed(0)
    return cls(backbone=cls.backbone_cls(**config), preprocessor=None)


def _keras_greedy(lm) -> list[int]:
    import numpy as np

    ids = np.zeros((1, LENGTH), np.int32)
    ids[0, :len(PROMPT)] = PROMPT
    mask = np.zeros((1, LENGTH), bool)
    mask[0, :len(PROMPT)] = True
    lm.compile(sampler="greedy")
    inputs = {"token_ids": ids, "padding_mask": mask}
    try:
        out = lm.generate(inputs, stop_token_ids=None)
    except ValueError:
        # Gemma3CausalLM's generate (keras-hub 0.32) computes the tokens, then fails to
        # batch its output dict for a text-only model (an `images` entry of None): the
        # same generate step, without that last normalization.
        out = lm.generate_step(inputs, stop_token_ids=None)
    return [int(t) for t in np.asarray(out["token_ids"])[0, len(PROMPT):len(PROMPT) + NEW_TOKENS]]


def run_one(name: str) -> dict:
    """One model's row: whether its greedy LiteRT tokens equal Keras's, and why not."""
    from ...ir.errors import TensorforgeError
    from ..generation import convert_lm, generate

    row = {"model": name}
    if name in NOT_TEXT:
        row["reason"] = f"not swept: {NOT_TEXT[name]}"
        return row
    try:
        lm = build(name)
    except Exception as e:      # a class the tiny configs cannot build is a row, not a crash
        row["reason"] = f"not built: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return row
    row["backbone"] = type(lm.backbone).__name__
    with tempfile.TemporaryDirectory() as tmp:
        try:
            start = time.perf_counter()
            artifact = convert_lm(lm, output=Path(tmp) / "lm.tflite",
                                  max_sequence_length=LENGTH)
            row["convert_s"] = round(time.perf_counter() - start, 1)
            row["caches"] = len(artifact.cache_shapes)
            got = [int(t) for t in generate(artifact.path, list(PROMPT), NEW_TOKENS)]
        except TensorforgeError as e:
            diags = getattr(e, "diagnostics", None) or []
            detail = f": {diags[0].message}" if diags else ""
            row["reason"] = f"cannot convert{detail[:240] or ': ' + str(e).splitlines()[0]}"
            return row
        except Exception as e:
            row["reason"] = f"internal error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            return row
    try:
        want = _keras_greedy(lm)
    except Exception as e:
        row["reason"] = f"Keras generate failed: {type(e).__name__}: {str(e)[:200]}"
        return row
    row["equal"] = sum(a == b for a, b in zip(got, want))
    if row["equal"] != NEW_TOKENS:
        row["reason"] = f"tokens differ: {got} vs Keras {want}"
    return row


def _run_isolated(name: str) -> dict:
    return run_worker("tensorforge.tools.sweeps.kerashub_lm", name, TIMEOUT_S)


def applicable(row: dict) -> bool:
    """False for CausalLMs that are not text decoders (listed, not counted)."""
    return not str(row.get("reason", "")).startswith("not swept")


def passes(row: dict) -> bool:
    """Every greedy token equal to Keras's."""
    return row.get("equal") == NEW_TOKENS


def table(rows: list[dict], version: str) -> str:
    """The markdown page."""
    n_ok = sum(passes(r) for r in rows)
    n_all = sum(applicable(r) for r in rows)
    lines = [
        "<!-- Generated by `python -m tensorforge.tools.sweeps.kerashub_lm`; do not edit by "
        "hand. -->",
        "# KerasHub language models: generation",
        "",
        f"Every `*CausalLM` class of keras-hub {version}, built over the tiny random-weight "
        f"backbone of the [KerasHub sweep](kerashub.md) with `preprocessor=None`, written by "
        f"`tensorforge.convert_lm` (one `.tflite`, `prefill` and `decode` signatures, "
        f"max_sequence_length {LENGTH}) and run by `tensorforge.generate` in LiteRT: "
        f"{NEW_TOKENS} greedy tokens after the prompt {list(PROMPT)}, compared with Keras's "
        f"own `generate` (greedy sampler) on the same weights.",
        "",
        f"**{n_ok} of {n_all} pass** (token-identical).",
        "",
        "| model | passes | backbone | caches | convert s | notes |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "n/a" if not applicable(r) else ("yes" if passes(r) else "no")
        lines.append(f"| {r['model']} | {ok} | {r.get('backbone', '')} | "
                     f"{r.get('caches', '')} | {r.get('convert_s', '')} | "
                     f"{str(r.get('reason', '')).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tensorforge.tools.sweeps.kerashub_lm",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated CausalLM class names (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown table to write")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)   # the per-model worker
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one)))
        return 0
    import keras_hub

    names = args.only.split(",") if args.only else model_names()
    rows = []
    for name in names:
        row = _run_isolated(name)
        rows.append(row)
        print(f"{name}: {'ok' if passes(row) else row.get('reason', '')}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(rows, keras_hub.__version__))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
