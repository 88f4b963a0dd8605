"""Runs TF.js graph models in Node.js with @tensorflow/tfjs (pure-JS CPU backend), through the
harness in tests/js (`run_model.js`, dependencies pinned by its package-lock.json).

Used by `--verify` for the tfjs target and by the tests. `make test` runs `npm ci` there; when
the harness is not installed yet, `ensure_harness` installs it from the lock file."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..ir.errors import ConversionError

JS_DIR = Path(__file__).resolve().parent.parent / "tests" / "js"


def _install_current() -> bool:
    """node_modules holds exactly what package-lock.json pins (npm's hidden lockfile matches),
    so `npm ci` would only reinstall the same files."""
    hidden = JS_DIR / "node_modules" / ".package-lock.json"
    if not hidden.exists():
        return False
    want = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]
    want.pop("", None)
    return json.loads(hidden.read_text()).get("packages") == want


def ensure_harness(force: bool = False) -> None:
    """Makes sure node, npm and the pinned @tensorflow/tfjs are available."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise ConversionError(f"running TF.js models needs {' and '.join(missing)} on PATH")
    if force or not _install_current():
        proc = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                              cwd=JS_DIR, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise ConversionError(f"npm ci failed in {JS_DIR}: {proc.stderr.strip()[-500:]}")


def _js_dtype(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "bool"
    return "int32" if dtype.kind in "iu" else "float32"


def _js_data(a: np.ndarray) -> list:
    """A flat list for JSON; NaN and +-Infinity as the strings JS's Number() reads back
    (JSON has no such numbers; run_model.js converts them)."""
    data = a.ravel().tolist()
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        data = [v if np.isfinite(v) else ("NaN" if np.isnan(v) else
                                          "Infinity" if v > 0 else "-Infinity") for v in data]
    return data


def run_jobs(jobs, workdir: Path) -> list:
    """Runs [(model dir, {input name: array})] in one Node process; returns per job a dict of
    output arrays, or the error string the harness reported."""
    workdir.mkdir(parents=True, exist_ok=True)
    listing = []
    for i, (model_dir, inputs) in enumerate(jobs):
        path = workdir / f"inputs{i}.json"
        path.write_text(json.dumps({
            name: {"shape": list(a.shape), "dtype": _js_dtype(a.dtype),
                   "data": _js_data(a)} for name, a in inputs.items()}))
        listing.append([str(model_dir), str(path)])
    jobs_path = workdir / "jobs.json"
    jobs_path.write_text(json.dumps(listing))
    proc = subprocess.run(["node", str(JS_DIR / "run_model.js"), "--batch", str(jobs_path)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise ConversionError(f"the TF.js harness failed: {proc.stderr.strip()[-1000:]}")
    results = []
    for r in json.loads(proc.stdout):
        if "error" in r:
            results.append(r["error"])
            continue
        # NaN/Infinity arrive as strings (JSON has no such numbers).
        results.append({name: np.asarray([float(v) if isinstance(v, str) else v
                                          for v in o["data"]]).reshape(o["shape"])
                        for name, o in r["outputs"].items()})
    return results


def run_in_node(model_dir: Path, inputs: dict[str, np.ndarray], names: list[str]
                ) -> list[np.ndarray]:
    """Runs one TF.js model on named inputs; returns its outputs in `names` order."""
    ensure_harness()
    with tempfile.TemporaryDirectory() as tmp:
        [result] = run_jobs([(model_dir, inputs)], Path(tmp))
    if isinstance(result, str):
        raise ConversionError(f"TF.js model {model_dir} failed in Node: {result}")
    return [result[n] for n in names]
