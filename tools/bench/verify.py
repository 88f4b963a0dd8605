"""Verification cost: `convert(target="all")` with and without `verify=True`, side by side in
one process on the same model, best of three alternating runs each (goal: verified <= 3 x
unverified). Three, as the lifting table takes: a verified run of a CNN lasts 1-3 s, and one
stall of the shared machine in both of two samples moved a row by 0.5-1.0 (MobileNetV2: 2.32,
3.28 in two runs of the same code).

Verification runs the source model, the IR interpreter and the three artifacts (LiteRT,
TensorFlow's SavedModel loader, TF.js in Node) on random inputs, at two sizes when the model
has run-time dims; the row shows the seconds each runtime took (`Verification.seconds`).
TENSORFORGE_BENCH_VERIFY_MODELS=MobileNetV2,BERT (substrings of the names) runs a subset."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .models import application, tiny_kerashub_bert

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOAL = 3.0
REPEATS = 3


VERIFY_BENCH_MODELS = {
    "MobileNetV2": lambda: application("MobileNetV2"),
    "ResNet50": lambda: application("ResNet50"),
    "ConvNeXtTiny (96x96)": lambda: application("ConvNeXtTiny", (96, 96, 3)),
    "BertBackbone (tiny KerasHub)": tiny_kerashub_bert,
}


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and its ended children (Node)."""
    import resource

    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_verify_model(name: str, build=None, repeats: int = REPEATS) -> dict:
    """Seconds of `convert(target="all")` unverified and verified (after one unverified
    warm-up conversion, so neither pays for first-time imports and tracing; best of
    `repeats`, alternating, as the other tables measure), their ratio, the CPU seconds of
    the fastest run of each (this process and Node: the unverified conversion runs on one
    core, so on N cores the wall-clock ratio cannot fall much below the CPU ratio / N), the
    verification's seconds per runtime (of the fastest verified run) and whether every run
    passed."""
    from ..convert import convert

    model = (build or VERIFY_BENCH_MODELS[name])()
    plain = verified = float("inf")
    plain_cpu = verified_cpu = 0.0
    result, ok = None, True
    with tempfile.TemporaryDirectory() as tmp:
        convert(model, target="all", output=Path(tmp) / "warm", progress=False)
        for i in range(repeats):
            start, cpu = time.perf_counter(), _cpu_seconds()
            convert(model, target="all", output=Path(tmp) / f"plain{i}", progress=False)
            seconds = time.perf_counter() - start
            if seconds < plain:
                plain, plain_cpu = seconds, _cpu_seconds() - cpu
            start, cpu = time.perf_counter(), _cpu_seconds()
            run = convert(model, target="all", output=Path(tmp) / f"verified{i}", verify=True,
                          progress=False)
            seconds = time.perf_counter() - start
            ok = ok and run.verification.ok
            if seconds < verified:
                verified, verified_cpu, result = seconds, _cpu_seconds() - cpu, run
    v = result.verification
    return {"model": name, "plain": plain, "verified": verified, "ratio": verified / plain,
            "cpu": (plain_cpu, verified_cpu), "runtimes": dict(v.seconds),
            "details": dict(v.details), "ok": ok}


def bench_verify(names=None) -> list[dict]:
    chosen = os.environ.get("TENSORFORGE_BENCH_VERIFY_MODELS")
    if names is None and chosen:
        keys = [k.strip().lower() for k in chosen.split(",") if k.strip()]
        names = [n for n in VERIFY_BENCH_MODELS if any(k in n.lower() for k in keys)]
    rows = []
    for name in names or VERIFY_BENCH_MODELS:
        try:
            rows.append(bench_verify_model(name))
        except Exception as e:     # reported in the table's place (e.g. keras_hub missing)
            rows.append({"model": name, "error": f"{type(e).__name__}: {e}"})
    return rows


def verify_table(console, rows=None) -> list[dict]:
    from rich.table import Table

    rows = bench_verify() if rows is None else rows
    table = Table(title=f'convert(target="all"): unverified vs verify=True (same process, '
                        f'best of {REPEATS}; ratio = verified / unverified, goal <= {GOAL:g})')
    for col in ("model", "unverified s", "verified s", "ratio", f"<= {GOAL:g}",
                "CPU s unverified / verified (ratio)", "verification seconds per runtime",
                "checks pass"):
        table.add_column(col, justify="left" if col in ("model", "verification seconds per "
                                                        "runtime") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["model"], *["-"] * 7)
            console.print(f"{r['model']}: {r['error']}")
            continue
        runtimes = ", ".join(f"{k} {s:.1f}" + (f" ({r['details'][k].split(';')[0]})"
                                                if k in r["details"] else "")
                             for k, s in r["runtimes"].items())
        plain_cpu, verified_cpu = r["cpu"]
        cpu = (f"{plain_cpu:.2f} / {verified_cpu:.2f} ({verified_cpu / plain_cpu:.1f})"
               if plain_cpu > 0 else "-")
        table.add_row(r["model"], f"{r['plain']:.2f}", f"{r['verified']:.2f}",
                      f"{r['ratio']:.2f}", "yes" if r["ratio"] <= GOAL else "NO", cpu, runtimes,
                      "yes" if r["ok"] else "NO")
    console.print(table)
    return rows


if __name__ == "__main__":
    from rich.console import Console

    verify_table(Console(width=200))
