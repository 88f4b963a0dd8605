"""SavedModel benchmark: Keras -> SavedModel with tensorforge beside Keras's own
`model.export(path)` (format "tf_saved_model"), side by side in one process on the same models.

Per model: seconds of each (best of `repeats`, alternating, after one warm-up of each), the
ratio tensorforge / export (goal <= 0.5), which path wrote the function (the GraphDef written
from the IR, or op by op through `tf_lowering`) and the max abs difference of the two
artifacts' outputs on one random input (both loaded with `tf.saved_model.load`)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .models import application, tiny_kerashub_bert
from .rows import measure_row

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


SAVEDMODEL_BENCH_MODELS = {
    "MobileNetV2": lambda: application("MobileNetV2"),
    "ResNet50": lambda: application("ResNet50"),
    "ConvNeXtTiny (96x96)": lambda: application("ConvNeXtTiny", (96, 96, 3)),
    "BERT (tiny KerasHub BertBackbone)": tiny_kerashub_bert,
}


def _feeds(model) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for t in model.inputs:
        shape = [(1 if i == 0 else 8) if d is None else d for i, d in enumerate(t.shape)]
        if "int" in str(t.dtype):
            high = 2 if ("mask" in t.name or "segment" in t.name) else 10   # tiny vocabularies
            out[t.name] = rng.integers(0, high, shape).astype(np.int32)
        else:
            out[t.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _run(path: Path, feeds: dict) -> list[np.ndarray]:
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    if len(specs) == len(feeds) == 1:
        feeds = {next(iter(specs)): next(iter(feeds.values()))}
    out = fn(**{k: tf.constant(v) for k, v in feeds.items()})
    return [np.asarray(out[k]) for k in sorted(out)]


def bench_savedmodel(name: str, build=None, repeats: int = 2) -> dict:
    from ..convert import convert

    model = (build or SAVEDMODEL_BENCH_MODELS[name])()
    best = {"ours": float("inf"), "export": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model.export(str(tmp / "warm_export"), verbose=False)
        convert(model, target="savedmodel", output=tmp / "warm_ours", progress=False)
        result = None
        for i in range(repeats):
            start = time.perf_counter()
            model.export(str(tmp / f"export{i}"), verbose=False)
            best["export"] = min(best["export"], time.perf_counter() - start)
            start = time.perf_counter()
            result = convert(model, target="savedmodel", output=tmp / f"ours{i}",
                             progress=False)
            best["ours"] = min(best["ours"], time.perf_counter() - start)
        feeds = _feeds(model)
        try:
            ours, theirs = _run(tmp / "ours0", feeds), _run(tmp / "export0", feeds)
            diff = max(float(np.max(np.abs(a.astype(np.float64) - b)))
                       for a, b in zip(ours, theirs)) if len(ours) == len(theirs) \
                else float("nan")
        except Exception:   # e.g. the two signatures name their outputs differently
            diff = float("nan")
    return {"model": name, "sec": (best["ours"], best["export"]),
            "direct": not [n for n in result.notes if n.startswith("savedmodel:")],
            "diff": diff}


def savedmodel_table(console, names=None) -> list[dict]:
    from rich.table import Table

    table = Table(title="Keras -> SavedModel: tensorforge vs Keras model.export() (same "
                        "process, best of 2; ratio = tensorforge / export, goal <= 0.5)")
    for col in ("model", "convert s (tensorforge / export)", "ratio", "function written",
                "max abs diff of outputs"):
        table.add_column(col, justify="left" if col == "model" else "right")
    rows = []
    for name in names or SAVEDMODEL_BENCH_MODELS:
        r = measure_row(console, table, name, bench_savedmodel, 4)
        rows.append(r)
        if "error" in r:
            continue
        a, b = r["sec"]
        table.add_row(name, f"{a:.2f} / {b:.2f}", f"{a / b:.2f}",
                      "GraphDef from the IR" if r["direct"] else "op by op (tf_lowering)",
                      f"{r['diff']:.1e}")
    console.print(table)
    return rows


if __name__ == "__main__":
    import sys

    from rich.console import Console

    savedmodel_table(Console(width=160), sys.argv[1:] or None)
