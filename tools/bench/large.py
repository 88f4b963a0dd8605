"""Large-model benchmark: artifacts past the 2 GiB flatbuffer limit, and the memory they take to
write.

The model is built in the IR directly: `tables` float32 embedding tables of `vocab` x `dim`
(random, distinct, 2.2 GB in all by default), each gathered at the same token ids, the rows
summed: the shape of an LLM's embedding and output tables, with no compute to speak of.
Each figure comes from a fresh subprocess, so one measurement's memory does not hide
another's:

- conversion: the module is built, then written by `save_tflite` (or `write_savedmodel`);
  peak RSS (VmHWM) ÷ the weights' bytes is the ratio (goal <= 1.5: the weights are streamed to
  the file from the IR's arrays, never copied whole). The RSS of the process before the
  weights existed (Python and the libraries) is printed beside it.
- run: a second process loads the artifact (LiteRT from the file, TF `saved_model.load`) and
  compares its output with NumPy's on the same tables.

The table has a TFLite row and a SavedModel row (whose writer peaks near 6 GB at the default
size). `TENSORFORGE_BENCH_LARGE_GB` sets the weights' size (default 2.2; past about 1.61 GB the
`.tflite` uses the appended-buffer layout, see backends/tflite/writer.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 1024
TABLES = 3
IDS = 8


def _status(key: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM); 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if key == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return 0


def vocab_for(gigabytes: float, tables: int = TABLES, dim: int = DIM) -> int:
    """Rows per table so that the tables hold `gigabytes` (1e9 bytes) of float32 in all."""
    return int(gigabytes * 1e9 / (tables * dim * 4))


def token_ids(vocab: int) -> np.ndarray:
    """The [1, IDS] int32 ids the model is run at: the first and last rows of the tables (the
    bytes furthest into the file) and a few between."""
    ids = np.linspace(0, vocab - 1, IDS).round().astype(np.int32)
    return ids.reshape(1, IDS)


def large_module(vocab: int, *, tables: int = TABLES, dim: int = DIM, seed: int = 0):
    """(the Module, its tables): `tables` f32 [vocab, dim] embedding tables gathered at the
    input ids [1, IDS] and summed into `embedding` [1, IDS, dim]."""
    from ...ir import DType, Graph, Module, TensorType

    rng = np.random.default_rng(seed)
    g = Graph()
    ids = g.add_input(TensorType(DType.i32, (1, IDS)), "ids")
    arrays, total = [], None
    for t in range(tables):
        table = rng.standard_normal((vocab, dim), dtype=np.float32)
        table.flags.writeable = False    # the IR keeps read-only arrays as they are (no copy)
        arrays.append(table)
        rows = g.add("gather", [g.constant(table, f"table{t}"), ids],
                     {"axis": 0, "batch_dims": 0}, scope=f"embed{t}").output
        total = rows if total is None else g.add("add", [total, rows]).output
    g.set_outputs([total])
    return Module([g], {"input_names": ["ids"], "output_names": ["embedding"]}), arrays


def reference(arrays, ids: np.ndarray) -> np.ndarray:
    """What the model computes, in NumPy (rows added in the model's order)."""
    out = None
    for table in arrays:
        rows = table[ids]
        out = rows if out is None else out + rows
    return out


# -- subprocess steps -------------------------------------------------------------------------

def _convert(target: str, path: str, vocab: int, expected: str) -> dict:
    """Builds the model and writes it; returns the sizes, seconds and RSS figures."""
    before = _status("VmRSS")
    module, arrays = large_module(vocab)
    weights = sum(a.nbytes for a in arrays)
    built = _status("VmRSS")
    np.save(expected, reference(arrays, token_ids(vocab)))
    del arrays      # the module holds the only reference to the tables now
    start = time.perf_counter()
    if target == "tflite":
        from ...backends.tflite.writer import save_tflite

        save_tflite(module, path)
        size = os.path.getsize(path)
    else:
        from ...backends.savedmodel import write_savedmodel

        write_savedmodel(module, path)
        size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    seconds = time.perf_counter() - start
    return {"weights": weights, "bytes": size, "seconds": seconds, "rss_start": before,
            "rss_built": built, "peak": _status("VmHWM")}


def _run(target: str, path: str, vocab: int, expected: str) -> dict:
    """Loads the artifact, runs it at `token_ids` and compares with the NumPy reference."""
    ids = token_ids(vocab)
    start = time.perf_counter()
    if target == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=path).get_signature_runner("serving_default")
        got = runner(ids=ids)["embedding"]
    else:
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        got = fn(ids=tf.constant(ids))["embedding"].numpy()
    seconds = time.perf_counter() - start
    want = np.load(expected)
    return {"run_seconds": seconds, "max_abs_err": float(np.max(np.abs(got - want))),
            "shape_ok": list(got.shape) == list(want.shape), "run_peak": _status("VmHWM")}


def _child(step: str, *args: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "tensorforge.tools.bench.large", step, *args],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{step} {args[0]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_large(gigabytes: float | None = None, targets=("tflite",),
                directory: str | None = None) -> list[dict]:
    """One row per target: weights and artifact bytes, conversion seconds, peak RSS and its
    ratio to the weights (goal <= 1.5 for TFLite), and the artifact's max abs error against
    NumPy when run (LiteRT from the file; TF after `saved_model.load`)."""
    if gigabytes is None:
        gigabytes = float(os.environ.get("TENSORFORGE_BENCH_LARGE_GB", "2.2"))
    vocab = vocab_for(gigabytes)
    rows = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for target in targets:
            path = str(Path(tmp) / ("model.tflite" if target == "tflite" else "saved_model"))
            expected = str(Path(tmp) / "expected.npy")
            row = {"target": target, "vocab": vocab,
                   **_child("convert", target, path, str(vocab), expected)}
            row.update(_child("run", target, path, str(vocab), expected))
            row["ratio"] = row["peak"] / row["weights"]
            if target == "tflite":
                row["appended"] = appended_buffers(path)
                os.unlink(path)
            rows.append(row)
    return rows


def appended_buffers(path: str) -> int:
    """How many of a `.tflite` file's buffers lie after its flatbuffer (offset > 1)."""
    import mmap

    from ai_edge_litert import schema_py_generated as fb

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        root = fb.Model.GetRootAs(m, 0)
        return sum(root.Buffers(i).Offset() > 1 for i in range(root.BuffersLength()))


def large_table(console) -> None:
    from rich.table import Table

    rows = bench_large(targets=("tflite", "savedmodel"))
    table = Table(title="Large model (> 2 GiB of weights: 3 f32 embedding tables): peak RSS "
                        "while converting ÷ weight bytes (goal for TFLite <= 1.5; SavedModel "
                        "holds tf.Variable copies and TF itself), artifact run vs NumPy")
    for col in ("target", "weights", "artifact bytes", "layout", "convert s", "RSS at start",
                "peak RSS", "peak ÷ weights", "run s", "max abs err"):
        table.add_column(col, justify="left" if col in ("target", "layout") else "right")
    for r in rows:
        table.add_row(r["target"], f"{r['weights']:,}", f"{r['bytes']:,}",
                      ("buffers after flatbuffer" if r.get("appended") else "inline")
                      if r["target"] == "tflite" else "variables/ checkpoint",
                      f"{r['seconds']:.1f}", f"{r['rss_start'] / 2**20:,.0f} MiB",
                      f"{r['peak'] / 2**20:,.0f} MiB", f"{r['ratio']:.2f}",
                      f"{r['run_seconds']:.1f}", f"{r['max_abs_err']:.1e}")
    console.print(table)


if __name__ == "__main__":
    step, target, path, vocab, expected = sys.argv[1:6]
    fn = _convert if step == "convert" else _run
    print(json.dumps(fn(target, path, int(vocab), expected)))
