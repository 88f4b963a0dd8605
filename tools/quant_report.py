"""`tensorforge quant-report`: per-layer quantization error, like TFLite's QuantizationDebugger.

Writes `report.md` (scheme, resolved configuration, nodes left float and why, per-layer SQNR
of the quantized model against the float model on the calibration data) and `sqnr.png` (the
per-layer SQNR plot) into a directory, atomically.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any


from ..backends.common import swap_directory
from ..ir.errors import ConversionError
from ..ir.graph import Module
from . import quantize as Q


def _markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt_db(x: float) -> str:
    return "exact" if x == float("inf") else f"{x:.1f}"


def _plot(errors: list[Q.LayerError], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    finite = [min(e.sqnr_db, 100.0) for e in errors]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(errors)), 4.0))
    colors = ["tab:blue" if e.quantized else "tab:gray" for e in errors]
    ax.bar(range(len(errors)), finite, color=colors)
    ax.set_xticks(range(len(errors)))
    ax.set_xticklabels([e.scope or e.op for e in errors], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR vs float (dB, capped at 100)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(module: Module, quantization: Any, calibration_data, out_dir: str | Path, *,
                 runner=None, limit: int = 32) -> Path:
    """Quantizes `module` (already canonicalized) and writes report.md and sqnr.png into
    `out_dir`; returns the report's path."""
    result = Q.quantize_module(module, quantization, calibration_data, runner=runner,
                               progress=False, keep_float=True)
    errors = Q.layer_errors(result, calibration_data, runner=runner, limit=limit)
    final = Path(out_dir)
    if final.exists() and not final.is_dir():
        raise ConversionError(f"output {final} exists and is not a directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        _plot(errors, stage / "sqnr.png", f"per-layer SQNR, scheme {result.scheme.name}")
        (stage / "report.md").write_text(_render(result, errors), encoding="utf-8")
        swap_directory(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final / "report.md"


def _render(result: Q.QuantizeResult, errors: list[Q.LayerError]) -> str:
    out = [f"# Quantization report: scheme `{result.scheme.name}`", ""]
    if errors:
        worst = sorted((e for e in errors if e.quantized), key=lambda e: e.sqnr_db)[:5]
        last = errors[-1]
        out += [f"Output SQNR against float (last node, `{last.scope or last.op}`): "
                f"**{_fmt_db(last.sqnr_db)} dB**. Calibration took "
                f"{result.calibration_seconds:.2f} s.", ""]
        if worst:
            out += ["Lowest per-layer SQNR: " + ", ".join(
                f"`{e.scope or e.op}` ({e.op}) {_fmt_db(e.sqnr_db)} dB" for e in worst), ""]
    out += ["![per-layer SQNR](sqnr.png)", "", "## Per-layer error", ""]
    out.append(_markdown_table(
        ["#", "scope", "op", "quantized", "SQNR dB", "max abs err"],
        [[str(i), f"`{e.scope}`", e.op, "yes" if e.quantized else "no", _fmt_db(e.sqnr_db),
          f"{e.max_abs:.3e}"] for i, e in enumerate(errors)]))
    floats = result.float_nodes()
    out += ["", "## Nodes left in float", ""]
    if floats:
        out.append(_markdown_table(["scope", "op", "reason"],
                                   [[f"`{s}`", op, r] for s, op, r in floats]))
    else:
        out.append("None: every node is quantized.")
    if result.resolution is not None:
        out += ["", "## Resolved configuration", "", "```", result.resolution.table(), "```"]
    return "\n".join(out) + "\n"
