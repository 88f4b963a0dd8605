"""Conformance sweeps: generated tables of what converts."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_worker(module: str, name: str, timeout_s: int, backend: str = "tensorflow") -> dict:
    """One model's row from `python -m MODULE --one NAME` in a fresh process (a crash or a
    hang is that model's row, not the sweep's end): the last JSON line it prints, or a row
    whose reason says how the process failed."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run([sys.executable, "-m", module, "--one", name],
                              capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"model": name, "reason": f"timed out after {timeout_s} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"model": name, "reason": f"process failed: {tail}"}
    return json.loads(lines[-1])


def table_verdicts(text: str) -> dict[str, str]:
    """model -> its 'passes' cell (yes / no / n/a), read back from a sweep's markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[2] in ("yes", "no", "n/a"):
            rows[cells[1]] = cells[2]
    return rows
