"""The KerasHub conformance sweep: every backbone class of the installed keras-hub (plus the
task models' logits paths), in a tiny random-weight configuration, converted once with
dynamic batch and sequence to TFLite, SavedModel and TF.js and verified against Keras in
LiteRT, TensorFlow and Node.js at two (batch, sequence) sizes from the same artifacts.

    python -m tensorforge.tools.sweeps.kerashub                 # all; writes the docs table
    python -m tensorforge.tools.sweeps.kerashub --only BertBackbone,GPT2CausalLM
    python -m tensorforge.tools.sweeps.kerashub --out docs/conformance/kerashub.md

Each model runs in its own process (a crash or a hang is one failed row, not a lost sweep),
with the Keras backend given by `--backend`. Per model the table says: the targets that
verify, the run-time dims of the inputs, the largest relative error over every runtime,
output and size, TFLite conversion seconds next to TFLiteConverter's
`from_concrete_functions` path (the only anchor path that takes KerasHub models) and their
ratio, and the reason when it does not pass. The configurations are `kerashub_configs.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import run_worker

TIMEOUT_S = 600
DEFAULT_OUT = Path("docs/conformance/kerashub.md")
TARGETS = ("tflite", "savedmodel", "tfjs")

# Task models whose call produces logits, on a tiny backbone of the sweep (no preprocessor).
TASKS = {
    "GPT2CausalLM": ("GPT2Backbone", {}),
    "LlamaCausalLM": ("LlamaBackbone", {}),
    "GemmaCausalLM": ("GemmaBackbone", {}),
    "BertTextClassifier": ("BertBackbone", {"num_classes": 3}),
    "ViTImageClassifier": ("ViTBackbone", {"num_classes": 3}),
    "ResNetImageClassifier": ("ResNetBackbone", {"num_classes": 3}),
}


# Conversion options for models whose declared inputs are wider than what they accept:
# SigLIP adds its position table unsliced, so its text is exactly 32 tokens long.
OPTIONS = {
    "SigLIPTextEncoder": {"input_shapes": {"token_ids": (-1, 32)}},
    "SigLIPBackbone": {"input_shapes": {"token_ids": (-1, 32)}},
    # Its prompt encoder branches on the number of masks (ops.cond on a shape): one mask.
    "SAMBackbone": {"input_shapes": {"masks": (-1, 1, 16, 16, 1)}},
    # Its geometry encoder branches on the number of boxes; keras-hub 0.32 runs one per image.
    "SAM3PromptableConceptBackbone": {"input_shapes": {"boxes": (-1, 1, 5),
                                                       "box_labels": (-1, 1)}},
}


def _moonshine_inputs(batch: int, samples: int, tokens: int) -> dict:
    """Raw audio long enough for Moonshine's conv stem (>= 895 samples) and bool masks."""
    rng = np.random.default_rng(batch)
    return {"encoder_input_values": rng.standard_normal((batch, samples, 1)).astype(np.float32),
            "encoder_padding_mask": np.ones((batch, samples), bool),
            "decoder_token_ids": rng.integers(0, 50, (batch, tokens)).astype(np.int32),
            "decoder_padding_mask": np.ones((batch, tokens), bool)}


def _sam3_inputs(batch: int, tokens: int) -> dict:
    """One box per image, [own batch index, cx, cy, w, h] normalized, labelled 0 or 1."""
    rng = np.random.default_rng(batch)
    boxes = np.concatenate([np.arange(batch, dtype=np.float32)[:, None, None],
                            rng.uniform(0.2, 0.8, (batch, 1, 4)).astype(np.float32)], -1)
    return {"pixel_values": rng.standard_normal((batch, 32, 32, 3)).astype(np.float32),
            "token_ids": rng.integers(0, 50, (batch, tokens)).astype(np.int32),
            "padding_mask": np.ones((batch, tokens), np.int32),
            "boxes": boxes, "box_labels": rng.integers(0, 2, (batch, 1)).astype(np.int32)}


# Verification inputs (two sizes) for models the random generator cannot serve.
VERIFY_INPUTS = {
    "MoonshineBackbone": lambda: [_moonshine_inputs(2, 1600, 3), _moonshine_inputs(3, 2000, 5)],
    # keras-hub 0.32's SAM3 attention mask breaks in Keras itself beyond batch 2.
    "SAM3PromptableConceptBackbone": lambda: [_sam3_inputs(1, 3), _sam3_inputs(2, 5)],
}


# Why a model cannot pass yet, from reading its code: appended to the table's reason.
WHY = {
    "Qwen3_5Backbone": "its gated delta rule loops in Python over sequence chunks (range of a "
                       "run-time size), which tracing cannot turn into a While loop",
    "Qwen3_5MoeBackbone": "its gated delta rule loops in Python over sequence chunks (range "
                          "of a run-time size), which tracing cannot turn into a While loop",
    "RWKV7Backbone": "its time-mix recurrence loops in Python over the time steps (range of "
                     "the run-time sequence length), which tracing cannot turn into a While "
                     "loop",
    "StableDiffusion3Backbone": "its noise scheduler uses the num_steps input as a Python "
                                "count (ops.linspace), so no graph is traced; the diffusion "
                                "transformer converts on its own "
                                "(StableDiffusion3Backbone.diffuser)",
}


def model_names() -> list[str]:
    """Every backbone class of the installed keras-hub, then the task models."""
    import keras_hub

    backbones = sorted(n for n, c in vars(keras_hub.models).items()
                       if isinstance(c, type) and issubclass(c, keras_hub.models.Backbone)
                       and c is not keras_hub.models.Backbone)
    return backbones + list(TASKS) + list(SUBMODELS)


# Functional sub-models worth converting on their own: SD3's diffusion transformer (MMDiT),
# which the full backbone wraps with a Python-side noise schedule.
SUBMODELS = ["StableDiffusion3Backbone.diffuser"]


def build(name: str):
    """The tiny model `name` (a backbone class, a task of TASKS on its tiny backbone, or
    `Backbone.attribute`: a sub-model of one)."""
    import keras_hub

    from .kerashub_configs import CONFIGS

    if "." in name:
        owner, attribute = name.split(".", 1)
        return getattr(build(owner), attribute)
    if name in TASKS:
        backbone_name, kwargs = TASKS[name]
        return getattr(keras_hub.models, name)(backbone=build(backbone_name),
                                               preprocessor=None, **kwargs)
    config = CONFIGS[name]
    config = config() if callable(config) else dict(config)
    return getattr(keras_hub.models, name)(**config)


def _frozen(concrete):
    """The function with Keras' variables folded in: TF 2.21's converter otherwise keeps them
    as uninitialized resource variables (VAR_HANDLE / READ_VARIABLE), and the model computes
    garbage."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    return convert_variables_to_constants_v2(concrete)


def _anchor_seconds(model) -> float | None:
    """TFLiteConverter through a concrete function (what works for KerasHub models), timed;
    None when the anchor fails."""
    import tensorflow as tf

    specs = {t.name: tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs}
    dict_inputs = isinstance(model.input, dict)
    start = time.perf_counter()
    try:
        if dict_inputs:
            fn = tf.function(lambda d: model(d, training=False))
            concrete = fn.get_concrete_function(specs)
        else:
            (spec,) = specs.values()
            fn = tf.function(lambda x: model(x, training=False))
            concrete = fn.get_concrete_function(spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen(concrete)],
                                                                   model)
        converter.convert()
    except Exception:
        return None
    return time.perf_counter() - start


def run_one(name: str) -> dict:
    """Builds, converts and verifies one model; the row of the table as a dict."""
    row = {"model": name, "targets": [], "dims": "", "max_rel": None, "seconds": None,
           "anchor_seconds": None, "reason": ""}
    row = _run(name, row)
    if name in WHY and not passes(row):
        row["reason"] = f"{row['reason']} — {WHY[name]}" if row["reason"] else WHY[name]
    return row


def _run(name: str, row: dict) -> dict:
    """Fills `row` for model `name` (see run_one)."""
    import tensorforge
    from tensorforge.ir.errors import TensorforgeError

    try:
        model = build(name)
    except Exception as e:
        row["reason"] = f"cannot build the tiny model: {type(e).__name__}: {_first_line(e)}"
        return row
    with tempfile.TemporaryDirectory() as tmp:
        try:
            options = OPTIONS.get(name, {})
            start = time.perf_counter()
            tensorforge.convert(model, "tflite", Path(tmp) / "timed.tflite", progress=False,
                                **options)
            row["seconds"] = time.perf_counter() - start
            given = VERIFY_INPUTS[name]() if name in VERIFY_INPUTS else None
            result = tensorforge.convert(model, "all", Path(tmp) / "out", verify=True,
                                         verify_inputs=given, progress=False, **options)
        except TensorforgeError as e:
            row["reason"] = _first_problem(e) + _static_fallback(model, tmp)
            return row
        except Exception as e:
            row["reason"] = f"{type(e).__name__}: {_first_line(e)}" + \
                _static_fallback(model, tmp)
            return row
    v = result.verification
    row["dims"] = ", ".join(f"{inp.name}: [{', '.join(map(str, inp.type.shape))}]"
                            for inp in result.module.main.inputs)
    row["max_rel"] = max(r.max_rel for r in v.rows)
    row["sizes"] = sorted({r.sizes for r in v.rows})
    row["targets"] = [t for t in TARGETS if all(r.ok for r in v.rows if r.runtime == t)]
    bad = [r for r in v.rows if not r.ok]
    if bad:
        worst = max(bad, key=lambda r: r.max_rel)
        row["reason"] = (f"{worst.runtime} output {worst.output} ({worst.sizes}): rel error "
                         f"{worst.max_rel:.2e}")
    notes = []
    if result.module.metadata.get("assumptions"):
        notes.append("traced assuming " + ", ".join(result.module.metadata["assumptions"]))
    if name in OPTIONS:
        notes.append(f"options {OPTIONS[name]}")
    if name in VERIFY_INPUTS:
        notes.append("verified on given inputs")
    if notes and not row["reason"]:
        row["reason"] = "; ".join(notes)
    row["anchor_seconds"] = _anchor_seconds(model)
    return row


def _static_fallback(model, tmp) -> str:
    """After a dynamic conversion failed: whether fixing every run-time dim but the batch
    (to 8) converts and verifies, as a note for the table."""
    import tensorforge

    shapes = {t.name: tuple(-1 if i == 0 else 8 if d is None else d
                            for i, d in enumerate(t.shape)) for t in model.inputs}
    if not any(d is None for t in model.inputs for d in t.shape[1:]):
        return ""       # nothing but the batch is dynamic: no static variant to try
    try:
        result = tensorforge.convert(model, "all", Path(tmp) / "static", verify=True,
                                     input_shapes=shapes, progress=False)
    except Exception:
        return ""
    if result.verification.ok:
        return " — with the sequence fixed (input_shapes) it converts and verifies"
    return ""


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else ""


def _first_problem(e) -> str:
    """The summary and first diagnostic of a tensorforge error, on one line."""
    diags = getattr(e, "diagnostics", None) or []
    head = getattr(e, "summary", None) or _first_line(e)
    if diags:
        d = diags[0]
        where = f" [{d.scope}]" if getattr(d, "scope", "") else ""
        more = f" (+{len(diags) - 1} more)" if len(diags) > 1 else ""
        return f"{head}: {str(d.message)[:240]}{where}{more}"
    return str(head)[:300]


def _run_isolated(name: str, backend: str) -> dict:
    row = run_worker("tensorforge.tools.sweeps.kerashub", name, TIMEOUT_S, backend)
    row.setdefault("targets", [])
    return row


def applicable(row: dict) -> bool:
    """False for classes that are not models (abstract bases), listed but not counted."""
    return not str(row.get("reason", "")).startswith("not swept")


def passes(row: dict) -> bool:
    """Every target verified at both sizes within the float32 contract."""
    return len(row.get("targets", ())) == len(TARGETS) and not row.get("reason", "").startswith(
        ("cannot", "process", "timed")) and row.get("max_rel") is not None \
        and row["max_rel"] <= 1e-4


def table(rows: list[dict], backend: str, version: str) -> str:
    """The markdown page."""
    n_ok = sum(passes(r) for r in rows)
    n_all = sum(applicable(r) for r in rows)
    lines = [
        "<!-- Generated by `python -m tensorforge.tools.sweeps.kerashub`; do not edit by "
        "hand. -->", "",
        "# KerasHub conformance", "",
        f"Every backbone class of keras-hub {version} (and the logits path of some task "
        f"models) in a tiny random-weight configuration (`tools/sweeps/kerashub_configs.py`), "
        f"Keras on the {backend} backend, converted once with dynamic batch and sequence to "
        f"TFLite, SavedModel and TF.js, then verified against Keras in LiteRT, TensorFlow and "
        f"Node.js `@tensorflow/tfjs` at two sizes from the same artifacts (batch 2 with every "
        f"other run-time dim 2, then batch 3 with 5). A model passes when every target is "
        f"within 1e-4 relative error at both sizes.", "",
        f"**{n_ok} of {n_all} pass** ({100 * n_ok / max(n_all, 1):.0f}%; classes that are "
        f"not models, such as abstract bases, are listed but not counted).", "",
        "Convert seconds are tensorforge to TFLite next to TFLiteConverter's "
        "`from_concrete_functions` path (`from_keras_model` fails on KerasHub models); "
        "the ratio is ours over the anchor's.", "",
        "| model | passes | targets | input dims | max rel err | convert s | anchor s | ratio "
        "| why not / notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sec, anc = r.get("seconds"), r.get("anchor_seconds")
        ratio = f"{sec / anc:.2f}" if sec and anc else "-"
        err = f"{r['max_rel']:.1e}" if r.get("max_rel") is not None else "-"
        reason = str(r.get("reason", "")).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r['model']} | {'yes' if passes(r) else 'no' if applicable(r) else 'n/a'} | "
            f"{', '.join(r.get('targets', [])) or '-'} | {r.get('dims', '') or '-'} | {err} | "
            f"{f'{sec:.2f}' if sec else '-'} | {f'{anc:.2f}' if anc else '-'} | {ratio} | "
            f"{reason} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tensorforge.tools.sweeps.kerashub",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated model names (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown table to write")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax"),
                        help="the Keras backend the models run on")
    parser.add_argument("--one", help=argparse.SUPPRESS)   # the per-model worker
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one)))
        return 0
    import keras_hub

    names = args.only.split(",") if args.only else model_names()
    from .kerashub_configs import SKIPPED

    rows = []
    for i, name in enumerate(names, 1):
        if name in SKIPPED:
            row = {"model": name, "targets": [], "reason": f"not swept: {SKIPPED[name]}"}
        else:
            row = _run_isolated(name, args.backend)
        rows.append(row)
        print(f"[{i}/{len(names)}] {name}: {'pass' if passes(row) else 'FAIL'} "
              f"{row.get('reason', '')}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(rows, args.backend, keras_hub.__version__))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"{sum(passes(r) for r in rows)} of {sum(applicable(r) for r in rows)} pass; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
