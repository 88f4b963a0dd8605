"""The Keras conformance sweep: every layer class in `keras.layers` and every function in
`keras.ops` of the installed Keras 3, each in a tiny Functional model (Keras on TensorFlow)
with random but deterministic weights, converted to TFLite, SavedModel and TF.js and verified
against Keras in LiteRT, TensorFlow and Node.js, then quantized to int8 TFLite (calibrated on
a few batches) and verified in LiteRT against the quantized IR.

    python -m tensorforge.tools.sweeps.keras_layers                 # all; writes the docs table
    python -m tensorforge.tools.sweeps.keras_layers --only Dense,Conv3D,ops.top_k
    python -m tensorforge.tools.sweeps.keras_layers --out docs/conformance/keras.md --jobs 2

A layer is applied to its inputs (`layers.Conv2D(4, 3)(x)`); an op is an expression over the
inputs evaluated in the `call` of a small custom layer (`ops.take_along_axis(x, y, axis=1)`).
The cases (constructor arguments, input shapes, dtypes and value ranges, op arguments) and
the items left out, each with its reason, are `keras_layer_configs.py`; an item of Keras that
has neither a case nor a reason there is a failing row (`no case`), so a new Keras release
shows what it added.

Items run in worker processes, `--jobs` at a time, each item under a time limit: a crash or a
hang costs that item's row (the stage it died in is named), and a fresh worker takes the next.
Per item the table says whether float conversion to every target verifies (1e-4 relative to
the largest |value| of each output, at two batch sizes unless the case fixes the batch),
whether int8 TFLite verifies against the quantized IR (and the int8 error against Keras
float), the largest float error, and why not: the first problem of the error, with the
TensorFlow ops that have no lowering named.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import zlib
from pathlib import Path

import numpy as np

from ..docgen import BANNER
from .kerashub import _first_line, _first_problem

COMMAND = "python -m tensorforge.tools.sweeps.keras_layers"
DEFAULT_OUT = Path("docs/conformance/keras.md")
RUNTIMES = ("ir", "tflite", "savedmodel", "tfjs")
TARGETS = ("tflite", "savedmodel", "tfjs")
ITEM_TIMEOUT_S = 300     # per item: build, float conversion (and per-target retries), int8
MARK = "@@keras "        # a worker's result lines start with this
CALIBRATION_BATCHES = 4
CALIBRATION_BATCH = 4
_UNLOWERED = re.compile(r"op (\S+) has no IR lowering")


# -- the items -----------------------------------------------------------------------------------

def items() -> list[dict]:
    """Every layer class of keras.layers, then every function of keras.ops, one entry per
    distinct object: {kind, name, aliases, case (a Case, an exclusion reason, or None)}."""
    import keras

    from .keras_layer_configs import LAYERS, OPS

    out = []
    for kind, members, table, is_member in (
            ("layer", vars(keras.layers), LAYERS, lambda c: isinstance(c, type)),
            ("op", vars(keras.ops), OPS,
             lambda c: callable(c) and not isinstance(c, (type, types.ModuleType)))):
        groups: dict[int, list[str]] = {}
        objects = {}
        for name, obj in members.items():
            if name.startswith("_") or not is_member(obj):
                continue
            groups.setdefault(id(obj), []).append(name)
            objects[id(obj)] = obj
        for key, names in groups.items():
            own = getattr(objects[key], "__name__", "")
            # The row is named after the class / function itself when Keras exports it under
            # that name (AveragePooling2D, not AvgPool2D); the table's key when it has one.
            keyed = [n for n in names if n in table]
            name = keyed[0] if keyed else own if own in names else sorted(names)[0]
            out.append({"kind": kind, "name": name,
                        "aliases": sorted(n for n in names if n != name),
                        "case": table.get(name)})
    return sorted(out, key=lambda it: (it["kind"] != "layer", it["name"].lower()))


def key_of(item: dict) -> str:
    return f"{item['kind']}:{item['name']}"


def select(all_items: list[dict], only: str | None) -> list[dict]:
    """The items `only` names (comma-separated; a layer or op name, an alias, or
    `layers.X` / `ops.x`); all of them when `only` is None."""
    if not only:
        return all_items
    index = {}
    for it in all_items:
        prefix = "layers." if it["kind"] == "layer" else "ops."
        for n in [it["name"], *it["aliases"]]:
            index[n] = index[prefix + n] = it
    chosen, unknown = [], []
    for n in (s.strip() for s in only.split(",")):
        if not n:
            continue
        if n not in index:
            unknown.append(n)
        elif index[n] not in chosen:
            chosen.append(index[n])
    if unknown:
        raise SystemExit(f"{COMMAND}: no layer or op named {', '.join(unknown)}")
    return chosen


# -- building one model --------------------------------------------------------------------------

INPUT_NAMES = ("x", "y", "z", "u", "v")


def _const_factory(seed: int):
    """const(*shape): deterministic float32 arrays, the n-th call of an evaluation always the
    same (an expression is evaluated at every trace)."""
    count = [0]

    def const(*shape):
        count[0] += 1
        rng = np.random.default_rng([seed, count[0], *shape])
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)
    return const


def _namespace(seed: int) -> dict:
    import keras

    from .keras_layer_configs import tiny_saved_model

    return {"keras": keras, "layers": keras.layers, "ops": keras.ops, "np": np,
            "const": _const_factory(seed), "tiny_saved_model": tiny_saved_model}


def build(item: dict):
    """The Keras model of an item's case (see keras_layer_configs), its weights randomized
    deterministically. Returns (model, convert options)."""
    import keras

    case = item["case"]
    seed = zlib.crc32(key_of(item).encode())
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed % 2**31)
    names = INPUT_NAMES[:len(case.inputs)]
    options = dict(case.options)
    if case.batch and not case.subclassed:
        # tensorforge traces dim 0 of a Keras input as the run-time batch unless told.
        options.setdefault("input_shapes", {n: (case.batch, *s.dims)
                                            for n, s in zip(names, case.inputs)})
    if item["kind"] == "layer":
        ns = _namespace(seed)
        layer = eval(case.code, ns)  # noqa: S307 (the sweep's own configuration)
        call = case.call or ("layer(x)" if len(names) == 1 else
                             f"layer([{', '.join(names)}])")
        if case.subclassed:
            model = _subclassed(layer, call, names, ns)
            import tensorflow as tf

            specs = [tf.TensorSpec([case.batch, *s.dims], s.dtype, name=n)
                     for n, s in zip(names, case.inputs)]
            model(*[_array(s, case.batch or 2, np.random.default_rng(0)) for s in case.inputs])
            options.setdefault("input_signature", specs)
        else:
            inputs = [keras.Input(s.dims, batch_size=case.batch, dtype=s.dtype, name=n)
                      for n, s in zip(names, case.inputs)]
            out = eval(call, {**ns, "layer": layer, **dict(zip(names, inputs))})  # noqa: S307
            model = keras.Model(inputs[0] if len(inputs) == 1 else inputs, out,
                                name=item["name"].lower())
    else:
        inputs = [keras.Input(s.dims, batch_size=case.batch, dtype=s.dtype, name=n)
                  for n, s in zip(names, case.inputs)]
        out = _op_layer(case.code, names, seed)(*inputs)
        model = keras.Model(inputs[0] if len(inputs) == 1 else inputs, out,
                            name=f"op_{item['name']}")
    _randomize(model, np.random.default_rng(seed))
    return model, options


def _op_layer(code: str, names: tuple, seed: int):
    """A layer whose call evaluates `code` over its positional inputs, named `names`."""
    import keras

    compiled = compile(code, "<op case>", "eval")

    class OpCase(keras.layers.Layer):
        def call(self, *args):
            return eval(compiled, {**_namespace(seed), **dict(zip(names, args))})  # noqa: S307

    return OpCase(name="op")


def _subclassed(layer, call: str, names: tuple, ns: dict):
    """A subclassed model around `layer`, for layers Keras cannot build functionally."""
    import keras

    class Wrapped(keras.Model):
        def __init__(self):
            super().__init__(name="wrapped")
            self.inner = layer

        def call(self, *args):
            return eval(call, {**ns, "layer": self.inner, **dict(zip(names, args))})  # noqa: S307

    return Wrapped()


def _randomize(model, rng) -> None:
    """Trainable float weights ~ N(0, 0.5) and batch-norm statistics (variances in [0.5, 1.5]):
    zero biases and unit statistics would hide bugs."""
    for w in model.weights:
        dtype = str(w.dtype)
        path = getattr(w, "path", w.name)
        if not dtype.startswith(("float", "bfloat")):
            continue
        if not w.trainable and not path.endswith(("moving_mean", "moving_variance")):
            continue
        shape = tuple(w.shape)
        if "variance" in path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * 0.5
        w.assign(value.astype(dtype))


def _array(spec, batch: int, rng) -> np.ndarray:
    """Values for input `spec` (keras_layer_configs.In) with batch `batch`."""
    from .keras_layer_configs import GENERATORS

    shape = (batch, *spec.dims)
    if spec.gen:
        a = GENERATORS[spec.gen](rng, shape)
    elif spec.dtype == "bool":
        a = rng.random(shape) < 0.5
    elif spec.dtype.startswith(("int", "uint")):
        a = rng.integers(spec.lo, spec.hi, shape)
    elif spec.lo is not None:
        a = rng.uniform(spec.lo, spec.hi, shape)
    else:
        a = rng.standard_normal(shape)
    return np.asarray(a).astype(spec.dtype)


def verify_inputs(case, seed: int) -> list[dict]:
    """Verification inputs: batch 2 then 3 (a dynamic batch), or the case's fixed batch."""
    sizes = (case.batch,) if case.batch else (2, 3)
    names = INPUT_NAMES[:len(case.inputs)]
    return [{n: _array(s, b, np.random.default_rng([seed, b, i]))
             for i, (n, s) in enumerate(zip(names, case.inputs))} for b in sizes]


def calibration_data(case, seed: int) -> list[list[np.ndarray]]:
    """A few calibration batches, drawn like the verification inputs."""
    b = case.batch or CALIBRATION_BATCH
    return [[_array(s, b, np.random.default_rng([seed, 1000 + k, i]))
             for i, s in enumerate(case.inputs)] for k in range(CALIBRATION_BATCHES)]


# -- running one item ----------------------------------------------------------------------------

def new_row(item: dict) -> dict:
    case = item["case"]
    row = {"kind": item["kind"], "name": item["name"], "aliases": item["aliases"],
           "float": "-", "int8": "-", "max_rel": None, "notes": [], "errors": {},
           "unsupported": {}, "seconds": None}
    if isinstance(case, str):
        row["float"] = row["int8"] = "excluded"
        row["reason"] = case
    elif case is None:
        row["float"] = row["int8"] = "no case"
        row["reason"] = ("no case in tools/sweeps/keras_layer_configs.py (new in this Keras?): "
                         "add one, or a reason to leave it out")
    else:
        row["code"] = case.code
        if case.call:
            row["call"] = case.call
        row["inputs"] = [f"{n}: {s.describe()}" for n, s in zip(INPUT_NAMES, case.inputs)]
        if case.batch:
            row["inputs"] = [d.replace("[b", f"[{case.batch}", 1) for d in row["inputs"]]
        if case.note:
            row["notes"].append(case.note)
        if case.limitation:
            row["limitation"] = case.limitation
    return row


def run_one(item: dict, emit=lambda kind, payload: None) -> dict:
    """Builds, converts and verifies one item (float, then int8); the row as a dict. `emit`
    gets the row after each stage (so that a crash later keeps what is known)."""
    row = new_row(item)
    if item["case"] is None or isinstance(item["case"], str):
        return row
    start = time.perf_counter()
    seed = zlib.crc32(key_of(item).encode())
    try:
        model, options = build(item)
    except Exception as e:
        row["float"] = row["int8"] = "cannot build"
        row["errors"]["build"] = f"Keras cannot build the case: {type(e).__name__}: " \
                                 f"{_keras_message(e)}"
        return row
    for stage, fn in (("float", _float), ("int8", _int8)):
        row["stage"] = stage
        emit("stage", row)
        try:
            fn(model, item["case"], seed, options, row)
        except Exception as e:      # a bug of the sweep itself: the row says so
            row[stage] = "sweep error"
            row["errors"][stage] = f"the sweep failed: {type(e).__name__}: {_first_line(e)}"
    row.pop("stage", None)
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def _keras_message(e: BaseException) -> str:
    """The message of a Keras error, without its "Exception encountered when calling ..."
    wrapping and terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    if "Error encountered:" in text:
        text = text.split("Error encountered:", 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines()
             if ln.strip() and not ln.startswith("Exception encountered")]
    return lines[0][:300] if lines else ""


def _reason(e: BaseException) -> str:
    from tensorforge.ir.errors import TensorforgeError

    if isinstance(e, TensorforgeError):
        return _first_problem(e)
    return f"{type(e).__name__}: {_first_line(e)}"


def _diagnostics(e: BaseException) -> list[str]:
    """Every distinct diagnostic message of a tensorforge error (the first 8)."""
    seen = []
    for d in getattr(e, "diagnostics", None) or []:
        msg = str(d.message)[:300]
        if msg not in seen:
            seen.append(msg)
    return seen[:8]


def _unlowered(e: BaseException) -> list[str]:
    """The TensorFlow ops an error says have no IR lowering."""
    found = []
    for d in getattr(e, "diagnostics", None) or []:
        m = _UNLOWERED.search(str(d.message))
        if m and m.group(1) not in found:
            found.append(m.group(1))
    return found


def _float(model, case, seed: int, options: dict, row: dict) -> None:
    import tensorforge

    given = verify_inputs(case, seed)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = tensorforge.convert(model, target="all", output=Path(tmp) / "all",
                                         verify=True, verify_inputs=given, progress=False,
                                         **options)
        except Exception as e:
            row["float"] = "fails"
            row["errors"]["float"] = _reason(e)
            row["unsupported"]["float"] = _unlowered(e)
            row.setdefault("diagnostics", {})["float"] = _diagnostics(e)
            row["failing_targets"] = _failing_targets(model, given, options, Path(tmp), row)
            return
    v = result.verification
    ran = {r.runtime for r in v.rows if r.runtime not in v.failures}
    errors = [r.max_rel for r in v.rows if r.runtime in ran]
    row["max_rel"] = (max(errors) if all(np.isfinite(errors)) else float("nan")) \
        if errors else None
    missing = [t for t in RUNTIMES if t not in ran]
    bad = [r for r in v.rows if not r.ok]
    if missing or v.failures:
        row["float"] = "fails"
        why = "; ".join(f"{t}: {w}" for t, w in v.failures.items()) if v.failures else ""
        row["errors"]["float"] = f"{', '.join(missing) or 'a runtime'} did not run" + \
            (f" ({why})" if why else "")
        row["failing_targets"] = [t for t in RUNTIMES if t in missing]
    elif bad:
        row["float"] = "wrong"
        worst = max(bad, key=lambda r: r.max_rel if np.isfinite(r.max_rel) else np.inf)
        row["failing_targets"] = sorted({r.runtime for r in bad},
                                        key=lambda t: RUNTIMES.index(t)
                                        if t in RUNTIMES else 9)
        row["errors"]["float"] = (f"{worst.runtime} output {worst.output}"
                                  f"{f' ({worst.sizes})' if worst.sizes else ''}: rel error "
                                  f"{worst.max_rel:.1e} (tolerance {worst.tolerance:.0e})")
    else:
        row["float"] = "ok"
    if result.notes:
        row["notes"] += [n for n in result.notes if n not in row["notes"]]


def _failing_targets(model, given, options, tmp: Path, row: dict) -> list[str]:
    """After `target='all'` raised: every target fails when the frontend cannot lift the
    model; otherwise each target is converted alone to tell which ones fail."""
    import tensorforge

    try:
        tensorforge.from_keras(model, **{k: v for k, v in options.items()
                                         if k in ("input_signature", "input_shapes")})
    except Exception:
        return list(TARGETS)
    failing = []
    for t in TARGETS:
        try:
            result = tensorforge.convert(model, target=t, output=tmp / f"only-{t}",
                                         verify=True, verify_inputs=given, progress=False,
                                         **options)
        except Exception as e:
            failing.append(t)
            row["errors"].setdefault(f"float {t}", _reason(e))
            continue
        if not result.verification.ok:
            failing.append(t)
    if failing and len(failing) < len(TARGETS):
        # The error of the 'all' run is the first failing target's; keep each one's own.
        first = failing[0]
        if f"float {first}" in row["errors"]:
            row["errors"]["float"] = row["errors"].pop(f"float {first}")
    return failing


def _int8_skip(model, case) -> str:
    """Why int8 does not apply to the case ('' when it does)."""
    import keras

    if any(s.dtype != "float32" for s in case.inputs):
        return "integer or bool inputs"
    if any(s.gen in ("with NaN", "with inf and NaN") for s in case.inputs):
        return "inputs hold NaN or inf, which int8 cannot represent"
    outs = getattr(model, "outputs", None)
    if outs is None:        # a subclassed model: run it
        outs = model(*[_array(s, case.batch or 2, np.random.default_rng(0))
                       for s in case.inputs])
    if any(not keras.backend.standardize_dtype(t.dtype).startswith(("float", "bfloat"))
           for t in keras.tree.flatten(outs)):
        return "integer or bool outputs"
    return ""


def _int8(model, case, seed: int, options: dict, row: dict) -> None:
    import tensorforge

    why_not = _int8_skip(model, case)
    if why_not:
        row["int8"] = "n/a"
        row["int8_skip"] = why_not
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = tensorforge.convert(model, target="tflite",
                                         output=Path(tmp) / "int8.tflite",
                                         quantization="int8",
                                         calibration_data=calibration_data(case, seed),
                                         verify=True, progress=False, **options)
        except Exception as e:
            row["int8"] = "fails"
            row["errors"]["int8"] = _reason(e)
            row["unsupported"]["int8"] = _unlowered(e)
            row.setdefault("diagnostics", {})["int8"] = _diagnostics(e)
            return
    v = result.verification
    tfl = [r for r in v.rows if r.runtime == "tflite"]
    ref = [r for r in v.rows if r.runtime.startswith("ir (")]
    row["int8_max_rel"] = max((r.max_rel for r in tfl), default=None)
    row["int8_vs_float"] = max((r.max_rel for r in ref), default=None)
    sqnr = [r.sqnr_db for r in ref if getattr(r, "sqnr_db", None) is not None]
    row["int8_sqnr_db"] = min(sqnr) if sqnr else None
    row["int8_quantized"] = any(n.op in ("quantize", "dequantize") or
                                any(getattr(o, "quant", None) for o in n.outputs)
                                for n in result.module.main.walk())
    if result.notes:
        row["int8_notes"] = list(dict.fromkeys(result.notes))
    bad = [r for r in v.rows if not r.ok]
    if not tfl or v.failures:
        row["int8"] = "fails"
        row["errors"]["int8"] = "tflite did not run" + (
            f" ({'; '.join(v.failures.values())})" if v.failures else "")
    elif bad:
        # An artifact off the quantized IR, or the quantized model itself off Keras float
        # (its SQNR below the floor, or its output collapsed to a constant).
        row["int8"] = "wrong"
        worst = next((r for r in bad if r.runtime == "tflite"), bad[0])
        row["int8_wrong"] = "tflite" if worst.runtime == "tflite" else "float"
        row["errors"]["int8"] = _int8_problem(worst)
    else:
        row["int8"] = "ok"


def _int8_problem(r) -> str:
    """What an int8 verification row that is not ok says."""
    if r.runtime != "tflite":
        if getattr(r, "collapsed", False):
            return (f"the int8 model's output {r.output} is constant where Keras float's is not "
                    f"(collapsed)")
        if getattr(r, "sqnr_db", None) is not None:
            return (f"the int8 model against Keras float, output {r.output}: SQNR "
                    f"{r.sqnr_db:.1f} dB (needs >= {r.min_sqnr_db:g} dB; max rel error "
                    f"{r.max_rel:.1e})")
        return f"{r.runtime} output {r.output}: rel error {r.max_rel:.1e}"
    if getattr(r, "abs_tolerance", None) is not None:
        return (f"tflite output {r.output}: abs error {r.max_abs:.1e} against the quantized IR "
                f"(tolerance {r.abs_tolerance:.1e})")
    return (f"tflite output {r.output}: rel error {r.max_rel:.1e} against the quantized IR "
            f"(tolerance {r.tolerance:.0e})")


# -- workers -------------------------------------------------------------------------------------

def _worker() -> None:
    """Reads item keys from stdin, one a line; prints each item's row (and its stages)."""
    by_key = {key_of(it): it for it in items()}

    def emit(kind, payload):
        print(f"{MARK}{kind} {json.dumps(payload, default=_jsonable)}", flush=True)

    for line in sys.stdin:
        key = line.strip()
        if key:
            emit("row", run_one(by_key[key], emit))


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


class _Process:
    """One worker process, fed item keys; its stdout read by a thread into a queue."""

    def __init__(self):
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
               "PYTHONUNBUFFERED": "1"}
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "tensorforge.tools.sweeps."
                                      "keras_layers", "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=env, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, item: dict, timeout: float) -> tuple[dict | None, dict | None, str]:
        """(row, the last stage row, why it stopped) for `item`: row None when the worker
        died or hung, with `why` saying which."""
        self.proc.stdin.write(key_of(item) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        stage = None
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                return None, stage, f"hangs (no result after {timeout:g} s)"
            if line is None:
                return None, stage, self._death()
            if not line.startswith(MARK):
                continue
            kind, payload = line[len(MARK):].split(" ", 1)
            if kind == "stage":
                stage = json.loads(payload)
            elif kind == "row":
                return json.loads(payload), stage, ""

    def _death(self) -> str:
        code = self.proc.wait()
        self.stderr.seek(0)
        tail = [ln for ln in self.stderr.read().decode(errors="replace").splitlines()
                if ln.strip()]
        last = tail[-1][:200] if tail else "no output"
        if code < 0:
            return f"crashes ({signal.Signals(-code).name}): {last}"
        return f"exits with status {code}: {last}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.stderr.close()


def run_all(chosen: list[dict], jobs: int = 1, log=print,
            timeout: float = ITEM_TIMEOUT_S) -> list[dict]:
    """Every item of `chosen` (excluded ones without a worker), `jobs` workers at a time."""
    rows: dict[str, dict] = {}
    todo: queue.Queue = queue.Queue()
    for it in chosen:
        if isinstance(it["case"], str) or it["case"] is None:
            rows[key_of(it)] = new_row(it)
        else:
            todo.put(it)
    lock = threading.Lock()
    total = len(chosen)

    def report(row):
        with lock:
            rows[f"{row['kind']}:{row['name']}"] = row
            log(f"[{len(rows)}/{total}] {row['kind']} {row['name']}: float {row['float']}, "
                f"int8 {row['int8']} {_short_errors(row)}")

    def loop():
        proc = None
        while True:
            try:
                it = todo.get_nowait()
            except queue.Empty:
                break
            proc = proc or _Process()
            row, stage, why = proc.run(it, timeout)
            if row is None:
                proc.close()
                proc = None
                row = _died(it, stage, why)
            report(row)
        if proc is not None:
            proc.close()

    for it in chosen:
        if key_of(it) in rows:
            log(f"[-] {it['kind']} {it['name']}: {rows[key_of(it)]['float']}")
    threads = [threading.Thread(target=loop) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [rows[key_of(it)] for it in chosen]


def _died(item: dict, stage: dict | None, why: str) -> dict:
    """The row of an item whose worker died or hung in `stage` (the row so far)."""
    row = stage or new_row(item)
    where = row.pop("stage", "build")
    status = "hangs" if why.startswith("hangs") else "crashes"
    if where == "int8":
        row["int8"] = status
        row["errors"]["int8"] = f"the worker {why}"
    else:
        row["float"] = status
        row["errors"]["float"] = f"the worker {why} ({where})"
        row["int8"] = "-"
    return row


def _short_errors(row: dict) -> str:
    errs = row.get("errors", {})
    return "; ".join(f"{k}: {v[:160]}" for k, v in errs.items())


# -- the page ------------------------------------------------------------------------------------

def in_scope(row: dict) -> bool:
    return row["float"] != "excluded"


def float_passes(row: dict) -> bool:
    return row["float"] == "ok"


def int8_applies(row: dict) -> bool:
    return in_scope(row) and row["int8"] != "n/a"


def int8_passes(row: dict) -> bool:
    return row["int8"] == "ok"


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.0f}%" if d else "-"


def summary(rows: list[dict], kind: str) -> dict:
    mine = [r for r in rows if r["kind"] == kind]
    scope = [r for r in mine if in_scope(r)]
    q = [r for r in scope if int8_applies(r)]
    return {"in_scope": len(scope), "float": sum(map(float_passes, scope)),
            "int8_applies": len(q), "int8": sum(map(int8_passes, q)),
            "excluded": len(mine) - len(scope), "names": sum(1 + len(r["aliases"])
                                                             for r in mine)}


def _float_cell(row: dict) -> str:
    status = row["float"]
    if status == "wrong":
        return f"wrong ({', '.join(row.get('failing_targets', []))})"
    if status == "fails" and row.get("failing_targets") and \
            len(row["failing_targets"]) < len(TARGETS):
        return f"fails ({', '.join(row['failing_targets'])})"
    return status


def _int8_cell(row: dict) -> str:
    status = row["int8"]
    if status == "ok":
        if not row.get("int8_quantized", True):
            return "ok (stays float)"
        err = row.get("int8_vs_float")
        return f"ok ({err:.1e})" if err is not None and np.isfinite(err) else "ok"
    if status == "wrong":
        if row.get("int8_wrong") == "float":
            sqnr = row.get("int8_sqnr_db")
            return f"wrong (SQNR {sqnr:.1f} dB)" if sqnr is not None else "wrong (vs float)"
        return f"wrong (tflite {row.get('int8_max_rel', float('nan')):.1e})"
    return status


def _note(row: dict) -> str:
    if row["float"] == "excluded":
        return f"excluded: {row['reason']}"
    parts = []
    if row.get("reason"):
        parts.append(row["reason"])
    if row.get("limitation") and (not float_passes(row) or (
            int8_applies(row) and not int8_passes(row))):
        parts.append(f"**not supported:** {row['limitation']}")
    if row.get("code"):
        what = f"`{row['code']}`"
        if row.get("call"):
            what += f", called as `{row['call']}`"
        parts.append(f"{what} on {', '.join(row.get('inputs', []))}")
    parts += row.get("notes", [])
    errs = row.get("errors", {})
    if "build" in errs:
        parts.append(errs["build"])
    if "float" in errs:
        parts.append(f"float: {_error_text(row, 'float')}")
    for t in TARGETS:
        if f"float {t}" in errs:
            parts.append(f"float {t} alone: {errs[f'float {t}']}")
    if "int8" in errs and errs.get("int8") != errs.get("float"):
        parts.append(f"int8: {_error_text(row, 'int8')}")
    elif "int8" in errs:
        parts.append("int8: the same")
    for note in row.get("int8_notes", [])[:1]:
        more = len(row["int8_notes"]) - 1
        parts.append(f"int8 note: {note}" + (f" (+{more} more)" if more else ""))
    if row.get("int8_skip"):
        parts.append(f"int8 n/a: {row['int8_skip']}")
    return "; ".join(parts).replace("|", "\\|").replace("\n", " ")


def _error_text(row: dict, stage: str) -> str:
    """A stage's error; a missing lowering as the list of TF ops that lack one (and the
    first other problem, if any)."""
    ops = row.get("unsupported", {}).get(stage)
    if not ops:
        return row["errors"][stage]
    text = f"no IR lowering for TF op{'s' if len(ops) > 1 else ''} {', '.join(ops)}"
    other = [d for d in row.get("diagnostics", {}).get(stage, [])
             if not _UNLOWERED.search(d)]
    return f"{text}; {other[0]}" if other else text


def _name_cell(row: dict) -> str:
    return ", ".join(f"`{n}`" for n in [row["name"], *row["aliases"]])


def table(rows: list[dict], version: str) -> str:
    """The markdown page."""
    layers, ops = summary(rows, "layer"), summary(rows, "op")

    def line(s, what):
        return (f"**{what}: {s['float']} of {s['in_scope']} in scope pass in float "
                f"({_pct(s['float'], s['in_scope'])}); int8: {s['int8']} of "
                f"{s['int8_applies']} ({_pct(s['int8'], s['int8_applies'])}) of those with "
                f"float inputs and outputs; {s['excluded']} excluded.**")

    out = [
        BANNER.replace("tensorforge.tools.docgen", "tensorforge.tools.sweeps.keras_layers")
        .rstrip("\n"), "",
        "# Keras layers and ops", "",
        f"Every layer class in `keras.layers` and every function in `keras.ops` of Keras "
        f"{version} ({layers['names']} layer names and {ops['names']} op names; aliases such "
        f"as `Convolution2D` share their class's row), each in a tiny Functional model on the "
        f"TensorFlow backend with random but deterministic weights "
        f"(`tools/sweeps/keras_layer_configs.py` holds every case: constructor arguments, "
        f"input shapes, dtypes and value ranges, op arguments). A layer is applied to its "
        f"inputs; an op is an expression evaluated in the `call` of a small custom layer.", "",
        "- **float**: `convert(model, target='all', verify=True)` on given inputs (batch 2 "
        "and 3, or the case's fixed batch): `ok` when the IR interpreter, LiteRT, TensorFlow "
        "and Node.js `@tensorflow/tfjs` are each within 1e-4 of Keras relative to the largest "
        "value of every output; `wrong (targets)` names the runtimes that are not; `fails` is "
        "a conversion error (`fails (targets)` when only some targets fail).",
        "- **int8**: `convert(model, target='tflite', quantization='int8', "
        "calibration_data=...)` calibrated on 4 batches: `ok` when the verification passes "
        "(LiteRT within tolerance of the quantized IR, and the quantized model not too far "
        "from Keras float where tensorforge checks that); the number is the int8 model's "
        "relative error against Keras float; `stays float` when no op of the model was "
        "quantized; `wrong (tflite ...)` is LiteRT off the quantized IR, `wrong (SQNR ...)` "
        "the quantized model off Keras float. `n/a`: integer or bool inputs or outputs, or "
        "inputs holding NaN.",
        "- **max error**: the largest float relative error over every runtime, output and "
        "size.", "",
        f"Regenerate with `{COMMAND}` (`--only Dense,ops.top_k` runs some items, `--jobs 2` "
        f"two at a time).", "",
        line(layers, "Layers"), "",
        line(ops, "Ops"), "",
    ]
    for kind, title in (("layer", "Layers"), ("op", "Ops")):
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        out += [f"## {title}", "",
                "| name | float (LiteRT, TF, TF.js) | int8 (LiteRT) | max error | "
                "notes / reason |",
                "|---|---|---|---|---|"]
        for r in sorted(mine, key=lambda r: r["name"].lower()):
            err = r.get("max_rel")
            err = f"{err:.1e}" if err is not None else "-"
            out.append(f"| {_name_cell(r)} | {_float_cell(r)} | {_int8_cell(r)} | {err} | "
                       f"{_note(r)} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated layer / op names (default: all); "
                                       "layers.X and ops.x work too")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown table to write")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes at a time")
    parser.add_argument("--timeout", type=float, default=ITEM_TIMEOUT_S,
                        help="seconds one item may take")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if args.worker:
        _worker()
        return 0
    import keras

    if keras.backend.backend() != "tensorflow":
        parser.error(f"Keras runs on {keras.backend.backend()}; the sweep needs "
                     f"KERAS_BACKEND=tensorflow")
    start = time.perf_counter()
    chosen = select(items(), args.only)
    rows = run_all(chosen, jobs=args.jobs, timeout=args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(rows, keras.__version__))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=_jsonable))
    for kind in ("layer", "op"):
        s = summary(rows, kind)
        if s["in_scope"] or s["excluded"]:
            print(f"{kind}s: float {s['float']} of {s['in_scope']}, int8 {s['int8']} of "
                  f"{s['int8_applies']}, {s['excluded']} excluded")
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
