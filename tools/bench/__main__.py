"""`make bench`: the benchmarks, printed as tables: pass scaling, then Keras -> TFLite
conversion side by side with TFLiteConverter (recurrent layers too), JAX and TF.js conversion,
Keras -> SavedModel beside Keras's model.export() (MobileNetV2, ResNet50, ConvNeXtTiny, BERT), KerasHub models side
by side with TFLiteConverter's concrete-function path, then int8 post-training quantization side by side
with TFLiteConverter (TENSORFORGE_BENCH_QUANT_MODELS=digits,MobileNetV2 runs a subset),
sharding plans, LLM generation (`convert_lm` artifacts in LiteRT vs Keras's jitted generate on
JAX: decode tokens/s, decode cost by position, bytes and logits SQNR of the quantized ones), and
a model past 2 GiB (peak RSS while writing it ÷ its weight bytes, goal <= 1.5;
TENSORFORGE_BENCH_LARGE_GB sets its size, default 2.2), and the cost of verification:
`target="all"` with and without `verify=True` (goal <= 3x; TENSORFORGE_BENCH_VERIFY_MODELS
runs a subset); last, the speed goals of issue 20 in one table (tools/bench/speed.py): per
model (MobileNetV2, ResNet50, ConvNeXtTiny 96x96, a tiny KerasHub BERT) the TFLite,
SavedModel, TF.js and verification ratios of the tables above with their goals, and the peak
RSS of conversion ÷ weight bytes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .passes import bench_canonicalize


def conversion_table(console: Console, rows, title: str, reference: str) -> None:
    table = Table(title=title)
    for col in ("model", "convert s (tf / anchor)", "ratio", "bytes (tf / anchor)", "ratio",
                "LiteRT ms, 2 threads", "ratio", f"max abs err vs {reference} (tf / anchor)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        (a, b), (c, d), (e, f), (g, h) = r["sec"], r["bytes"], r["latency_ms"], r["err"]
        table.add_row(r["model"], f"{a:.2f} / {b:.2f}", f"{a / b:.3f}", f"{c:,} / {d:,}",
                      f"{c / d:.3f}", f"{e:.2f} / {f:.2f}", f"{e / f:.2f}",
                      f"{g:.1e} / {h:.1e}")
    console.print(table)


def main() -> None:
    console = Console(width=max(Console().width, 160))
    rows = bench_canonicalize()
    table = Table(title="canonicalize scaling (best of 3; goal: flat within 20%, 100k < 2 s)")
    for col in ("nodes", "after", "seconds", "µs/node", "× smallest"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['nodes']:,}", f"{r['after']:,}", f"{r['seconds']:.3f}",
                      f"{r['us_per_node']:.2f}", f"{r['vs_smallest']:.2f}")
    console.print(table)
    flat = max(r["vs_smallest"] for r in rows) <= 1.2
    fast = rows[-1]["seconds"] < 2.0
    console.print(f"flat within 20%: {'yes' if flat else 'NO'}; "
                  f"largest under 2 s: {'yes' if fast else 'NO'}")
    from .convert import bench_conversion, bench_jax, bench_recurrent

    conversion_table(console, bench_conversion(),
                     "Keras -> TFLite: tensorforge vs TFLiteConverter (same process; "
                     "ratio = tensorforge / TFLiteConverter)", "Keras")
    from .lifting import lifting_table

    lifting = lifting_table(console)
    conversion_table(console, bench_recurrent(),
                     "Keras recurrent layers -> TFLite, run at [1, 32, 16]: tensorforge (shape "
                     "fixed: fused sequence kernels) vs TFLiteConverter on the frozen concrete "
                     "function of that shape (ratio = tensorforge / TFLiteConverter; latency "
                     "goal <= 1.0)", "Keras")
    conversion_table(console, bench_jax(),
                     "JAX -> TFLite: tensorforge vs jax2tf + TFLiteConverter (same process; "
                     "ratio = tensorforge / anchor)", "JAX")
    from .convert import tfjs_table

    tfjs = tfjs_table(console)
    from .savedmodel import savedmodel_table

    savedmodel = savedmodel_table(console)
    from .kerashub import bench_kerashub

    conversion_table(console, bench_kerashub(),
                     "KerasHub -> TFLite: tensorforge (dynamic batch and sequence, then "
                     "static) vs TFLiteConverter.from_concrete_functions (static [1, 64]); "
                     "latency at [1, 64]; ratio = tensorforge / anchor; goals: seconds <= "
                     "0.2, latency <= 1.0", "Keras")
    from .quant import quantization_table, quantized_training_table

    quantization_table(console)
    quantized_training_table(console)
    from .shard import sharding_table

    sharding_table(console)
    from .llm import llm_table

    llm_table(console)
    from .large import large_table

    large_table(console)
    from .verify import verify_table

    verify = verify_table(console)
    from .speed import speed_table

    speed_table(console, lifting, savedmodel, tfjs, verify)


if __name__ == "__main__":
    main()
