"""The speed goals of issue 20 in one table: per model (MobileNetV2, ResNet50, ConvNeXtTiny
96x96, a tiny KerasHub BERT), the ratio each benchmark of this `make bench` run measured
against its anchor, beside its goal:

- Keras -> TFLite seconds ÷ TFLiteConverter's (lifting.py; goal 0.08, moonshot 0.05);
- Keras -> SavedModel seconds ÷ Keras's `model.export()` (savedmodel.py; goal 0.5);
- Keras -> TF.js seconds ÷ tensorforge's own Keras -> TFLite (convert.py; goal 1.5);
- `target="all", verify=True` seconds ÷ unverified (verify.py; goal 3);
- peak RSS of the Keras -> TFLite conversion ÷ the model's weight bytes (lifting.py).

`python -m tensorforge.tools.bench.speed` runs only those tables and this one. The rows come
from the tables printed before it; a benchmark that did not run a model, or
failed on it (its table prints the error), leaves the cell as "-"."""

from __future__ import annotations

from .lifting import GOAL_FLOOR
from .verify import GOAL as VERIFY_GOAL

GOALS = {"tflite": GOAL_FLOOR, "savedmodel": 0.5, "tfjs": 1.5, "verify": VERIFY_GOAL}
MODELS = ("MobileNetV2", "ResNet50", "ConvNeXtTiny 96x96", "tiny KerasHub BERT")


# The row names of the benchmarks (their *_BENCH_MODELS keys), by model.
_ROW_NAMES = {
    "MobileNetV2": ("MobileNetV2",),
    "ResNet50": ("ResNet50",),
    "ConvNeXtTiny 96x96": ("ConvNeXtTiny 96x96", "ConvNeXtTiny (96x96)"),
    "tiny KerasHub BERT": ("KerasHub BERT tiny (2 layers, 64 wide)",
                           "BERT (tiny KerasHub BertBackbone)", "BertBackbone (tiny KerasHub)"),
}
_MODEL_OF = {row: model for model, rows in _ROW_NAMES.items() for row in rows}


def model_key(name: str) -> str | None:
    """Which of MODELS a benchmark's row name is (the benchmarks spell them differently)."""
    return _MODEL_OF.get(name)


def ratios(lifting, savedmodel, tfjs, verify) -> dict[str, dict[str, float]]:
    """{model: {"tflite" | "savedmodel" | "tfjs" | "verify" | "peak_rss": value}}."""
    out: dict[str, dict[str, float]] = {m: {} for m in MODELS}

    def put(rows, goal, value):
        for r in rows or []:
            key = model_key(r.get("model", ""))
            if key is not None and "error" not in r:
                out[key][goal] = value(r)

    put(lifting, "tflite", lambda r: r["sec"][0] / r["sec"][1])
    put(lifting, "peak_rss", lambda r: (r["peak_rss"] - r["before_rss"]) / r["weight_bytes"])
    put(lifting, "peak_since_start", lambda r: not r.get("peak_exact", True))
    put(savedmodel, "savedmodel", lambda r: r["sec"][0] / r["sec"][1])
    put(tfjs, "tfjs", lambda r: r["sec"][0] / r["sec"][1])
    put(verify, "verify", lambda r: r["ratio"])
    return out


def speed_table(console, lifting, savedmodel, tfjs, verify) -> dict:
    """Prints the table; returns what `ratios` returns."""
    from rich.table import Table

    values = ratios(lifting, savedmodel, tfjs, verify)
    table = Table(title="Issue 20 speed goals: each ratio from this run's tables, with its "
                        "goal (met: yes / NO)")
    columns = [("tflite", "Keras->TFLite ÷ TFLiteConverter"),
               ("savedmodel", "Keras->SavedModel ÷ model.export()"),
               ("tfjs", "Keras->TF.js ÷ own TFLite"),
               ("verify", "all, verified ÷ unverified")]
    table.add_column("model")
    for key, title in columns:
        table.add_column(f"{title} (<= {GOALS[key]:g})", justify="right")
    table.add_column("peak RSS ÷ weights", justify="right")
    for model in MODELS:
        row = values[model]
        cells = [f"{row[k]:.3f} {'yes' if row[k] <= GOALS[k] else 'NO'}" if k in row else "-"
                 for k, _ in columns]
        cells.append(f"{row['peak_rss']:.2f}" + (" (since start)" if row.get("peak_since_start")
                                                 else "") if "peak_rss" in row else "-")
        table.add_row(model, *cells)
    console.print(table)
    return values


def main() -> None:
    """`python -m tensorforge.tools.bench.speed`: only the tables this summary reads
    (lifting, TF.js, SavedModel, verification), then the summary: the issue's goals without
    the rest of `make bench`."""
    from rich.console import Console

    from .convert import tfjs_table
    from .lifting import lifting_table
    from .savedmodel import savedmodel_table
    from .verify import verify_table

    console = Console(width=max(Console().width, 160))
    lifting = lifting_table(console)
    tfjs = tfjs_table(console)
    savedmodel = savedmodel_table(console)
    verify = verify_table(console)
    speed_table(console, lifting, savedmodel, tfjs, verify)


if __name__ == "__main__":
    main()
