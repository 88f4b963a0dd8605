"""Calibration: run the float graph on representative data and observe value ranges.

    samples = check_calibration_data(module, dataset)        # every sample checked up front
    ranges = calibrate(module, dataset, {value: "minmax", other: make_observer("mse")},
                       runner=tf_runner)                      # {Value: (lo, hi)}

The dataset follows TFLiteConverter's `representative_dataset`: an iterable (or a function
returning one) whose items are a list/tuple of arrays in graph-input order, a dict keyed by
input name, or a single array for a one-input graph. Data must already have the input dtypes
(float64 for a float32 input is an error, not a silent cast).

A runner executes the graph: `runner(module, values)` returns `fn(inputs) -> [array per
value]`. The default runs the IR interpreter; `backends.tf_probe.tf_runner` lowers to one
TensorFlow function and is much faster (passes cannot import backends, hence the argument).
"""

from __future__ import annotations

import os
import struct
import sys
import zipfile
import zlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ...ir.errors import ConversionError, Diagnostic
from ...ir.graph import Module, Value
from ...ir.interpreter import run_graph
from .observers import NoDataError, Observer, make_observer

MAX_LISTED = 10   # bad samples listed in full; the rest are counted

Runner = Callable[[Module, Sequence[Value]], Callable[[list], list]]


def _signature(module: Module) -> str:
    return ", ".join(f"{v.name or f'input{i}'}: {v.type.dtype.np.name}"
                     f"[{','.join(str(d) for d in v.type.shape)}]"
                     for i, v in enumerate(module.main.inputs))


def _sample_problems(item: Any, inputs: list[Value]
                     ) -> tuple[list[np.ndarray] | None, list[str]]:
    """(arrays in input order, problems) for one dataset item."""
    names = [v.name or f"input{i}" for i, v in enumerate(inputs)]
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in names)
        missing = [n for n in names if n not in item]
        if unknown or missing:
            what = []
            if missing:
                what.append(f"missing {', '.join(missing)}")
            if unknown:
                what.append(f"unknown {', '.join(unknown)}")
            return None, [f"keys {sorted(map(str, item))}: {'; '.join(what)}"]
        raw = [item[n] for n in names]
    elif isinstance(item, (list, tuple)):
        raw = list(item)
    elif hasattr(item, "__array__") or isinstance(item, np.ndarray):
        raw = [item]
    else:
        return None, [f"is a {type(item).__name__}, expected a list/tuple of arrays, a dict "
                      f"keyed by input name, or (one-input graphs) an array"]
    if len(raw) != len(inputs):
        return None, [f"has {len(raw)} array{'s' if len(raw) != 1 else ''}, the model takes "
                      f"{len(inputs)} input{'s' if len(inputs) != 1 else ''}"]
    arrays, problems = [], []
    bindings: dict[str, int] = {}
    for v, name, r in zip(inputs, names, raw):
        try:
            a = np.asarray(r)
        except Exception as e:  # e.g. ragged nested lists
            problems.append(f"input '{name}': not an array ({type(e).__name__}: {e})")
            continue
        want = v.type.dtype.np
        if a.dtype != want:
            hint = ""
            if a.dtype == np.float64 and want == np.float32:
                hint = " (cast to float32)"
            elif a.dtype.kind == want.kind:
                hint = f" (cast to {want.name})"
            problems.append(f"input '{name}': dtype {a.dtype.name}, expected {want.name}{hint}")
        if not v.type.accepts(a.shape, bindings):
            problems.append(f"input '{name}': shape {tuple(a.shape)} does not fit "
                            f"[{','.join(str(d) for d in v.type.shape)}]")
        arrays.append(a)
    return (arrays if not problems else None), problems


def check_calibration_data(module: Module, dataset) -> list[list[np.ndarray]]:
    """Materialises `dataset` and checks every sample (arity, dtype, shape; symbolic dims
    bind consistently within a sample) against `module.main`'s inputs before any work.

    Returns the samples as lists of arrays in graph-input order. Raises ConversionError
    ("calibration data does not match the model signature ...") naming the expected
    signature and every bad sample (the first MAX_LISTED in full, then a count)."""
    inputs = list(module.main.inputs)
    sig = _signature(module)
    if callable(dataset) and not isinstance(dataset, (Mapping, np.ndarray)):
        dataset = dataset()   # TF style: representative_dataset is a generator function
    if isinstance(dataset, (np.ndarray, Mapping)) or not isinstance(dataset, Iterable):
        raise ConversionError(
            f"calibration data does not match the model signature ({sig}): expected an "
            f"iterable of samples, got a {type(dataset).__name__}")
    items = list(dataset)
    if not items:
        raise ConversionError(f"calibration data does not match the model signature ({sig}): "
                              f"the dataset is empty")
    samples: list[list[np.ndarray]] = []
    bad: list[Diagnostic] = []
    nbad = 0
    for i, item in enumerate(items):
        arrays, problems = _sample_problems(item, inputs)
        if problems:
            nbad += 1
            if len(bad) < MAX_LISTED:
                bad.append(Diagnostic(f"sample {i}: {'; '.join(problems)}"))
            continue
        samples.append(arrays)
    if nbad:
        if nbad > len(bad):
            bad.append(Diagnostic(f"and {nbad - len(bad)} more bad samples"))
        raise ConversionError(
            f"calibration data does not match the model signature ({sig}): {nbad} of "
            f"{len(items)} samples are bad", bad)
    return samples


def interpreter_runner(module: Module, values: Sequence[Value]) -> Callable[[list], list]:
    """The default runner: the IR interpreter, capturing `values`."""
    graph = module.main
    values = list(values)

    def run(inputs: list) -> list:
        return run_graph(graph, inputs, capture=values)[1]

    return run


def _batchable(module: Module) -> bool:
    """True when samples may be concatenated along axis 0: every input's first dim is the
    same symbol (any symbol for a one-input graph), used nowhere else in the signature, so it
    is a free batch dimension."""
    inputs = module.main.inputs
    if not inputs or any(not v.type.shape or not isinstance(v.type.shape[0], str)
                         for v in inputs):
        return False
    firsts = {v.type.shape[0] for v in inputs}
    if len(inputs) > 1 and (len(firsts) != 1 or "?" in firsts):
        return False   # unrelated leading dims: rows of different inputs need not pair up
    return not any(isinstance(d, str) and d in firsts and d != "?"
                   for v in inputs for d in v.type.shape[1:])


def _batches(samples: list[list[np.ndarray]], batch_size: int, batchable: bool):
    """Yields (number of samples, inputs) runs: consecutive samples whose shapes agree beyond
    axis 0 are concatenated up to `batch_size` rows of the first input."""
    if not batchable or batch_size <= 1:
        for s in samples:
            yield 1, s
        return
    group: list[list[np.ndarray]] = []
    rows = 0

    def flush():
        if len(group) == 1:
            return 1, group[0]
        return len(group), [np.concatenate(parts, axis=0) for parts in zip(*group)]

    for s in samples:
        n = s[0].shape[0]
        compatible = not group or all(a.shape[1:] == b.shape[1:] for a, b in zip(s, group[0]))
        if group and (rows + n > batch_size or not compatible):
            yield flush()
            group, rows = [], 0
        group.append(s)
        rows += n
    if group:
        yield flush()


class _Progress:
    """A rich progress bar on stderr when it is a terminal (CI logs stay clean)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True),
                                transient=True)
            self.task = self.bar.add_task("calibrate", total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def calibrate(module: Module, dataset, requests: Mapping[Value, Observer | str], *,
              runner: Runner | None = None, batch_size: int = 32, progress: bool = True
              ) -> dict[Value, tuple[float, float]]:
    """Observes the ranges of `requests`' values (graph inputs, constants or node results of
    `module.main`) on `dataset` and returns {value: (lo, hi)}.

    Each request maps a value to an Observer or a method name for `make_observer` (default
    options). The data is checked first (`check_calibration_data`). When every graph input's
    first dim is a free symbol, consecutive samples are concatenated along axis 0 into runs of
    up to `batch_size` rows, so each observer `update` sees one run (per-run statistics: this
    matters for `moving_average` only; the others are order- and batching-independent up to
    histogram resolution). Otherwise samples run one at a time. `runner` defaults to the IR
    interpreter. A progress bar shows on stderr when it is a terminal and `progress` is set."""
    samples = check_calibration_data(module, dataset)
    values = list(requests)
    graph = module.main
    defined = {id(v) for v in graph.inputs}
    defined.update(id(v) for node in graph for v in node.outputs)
    stray = [v for v in values if id(v) not in defined]
    if stray:
        raise ConversionError("calibration requests values that are not in the graph",
                              [Diagnostic(f"%{v.name or '?'}: {v.type}") for v in stray])
    observers: list[Observer] = []
    for v in values:
        obs = requests[v]
        observers.append(make_observer(obs) if isinstance(obs, str) else obs)
    run = (runner or interpreter_runner)(module, values)
    with _Progress(len(samples), progress) as bar:
        for count, inputs in _batches(samples, batch_size, _batchable(module)):
            arrays = run(inputs)
            for obs, a in zip(observers, arrays):
                obs.update(a)
            bar.advance(count)
    ranges: dict[Value, tuple[float, float]] = {}
    empty = []
    for v, obs in zip(values, observers):
        try:
            ranges[v] = obs.range()
        except NoDataError:
            p = v.producer
            empty.append(Diagnostic(f"%{v.name or '?'} never took a finite value on the "
                                    f"calibration data", node=p.describe() if p else "",
                                    scope=p.scope if p else ""))
    if empty:
        raise ConversionError("calibration observed no usable values", empty)
    return ranges


def read_npz(path: str | os.PathLike, what: str = "calibration data") -> dict[str, np.ndarray]:
    """Every array of an `.npz` archive, read eagerly and checked: ConversionError naming the
    file and every problem (not a file, not a zip archive, an `.npy` where an `.npz` is
    expected, a truncated or corrupt member, a bad CRC, object (pickled) arrays, a header
    declaring more data than the member holds) instead of whatever NumPy or zipfile raise."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ConversionError(f"cannot read {what} {p}: no such file")
    if os.path.isdir(p):
        raise ConversionError(f"cannot read {what} {p}: it is a directory, expected an .npz file")
    try:
        with open(p, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise ConversionError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if head == b"\x93NUMPY":
        raise ConversionError(f"cannot read {what} {p}: it is a single .npy array; save an .npz "
                              f"(numpy.savez) with one array per model input")
    if not zipfile.is_zipfile(p):
        raise ConversionError(f"cannot read {what} {p}: not an .npz archive "
                              f"({'empty file' if not head else 'not a zip file'})")
    arrays, problems = {}, []
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                name = info.filename
                if info.is_dir():
                    continue
                if not name.endswith(".npy"):
                    problems.append(Diagnostic(f"member {name!r} is not an .npy array"))
                    continue
                key = name[:-4]
                try:
                    arrays[key] = _read_npy_member(z, info)
                except ValueError as e:
                    problems.append(Diagnostic(f"array {key!r}: {e}"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
            NotImplementedError, RuntimeError, ValueError, IndexError, KeyError, struct.error,
            OverflowError, MemoryError) as e:
        # What zipfile raises on damaged archives: RuntimeError for an encrypted member,
        # NotImplementedError for an unknown compression, IndexError/struct.error for a
        # malformed extra field, ValueError/OverflowError for impossible sizes.
        raise ConversionError(f"cannot read {what} {p}: corrupt .npz archive "
                              f"({type(e).__name__}: {e})") from None
    if problems:
        raise ConversionError(f"cannot read {what} {p}", problems)
    return arrays


def _read_npy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One `.npy` member; ValueError saying what is wrong with it."""
    from numpy.lib import format as npy

    with z.open(info) as f:
        try:
            version = npy.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npy.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, SyntaxError, TypeError, EOFError, OverflowError) as e:
            raise ValueError(f"bad .npy header: {e}") from None
        if dtype.hasobject:
            raise ValueError(f"holds Python objects (dtype {dtype}), which would need pickle; "
                             f"save numeric arrays")
        if dtype.kind not in "biuf":
            raise ValueError(f"dtype {dtype} is not numeric (expected bool, int or float)")
        count = int(np.prod(shape, dtype=object)) if shape else 1
        want = count * dtype.itemsize
        if want > info.file_size:
            raise ValueError(f"header declares {tuple(shape)} {dtype} ({want:,} bytes) but the "
                             f"member holds {info.file_size:,} bytes (truncated?)")
        data = f.read(want + 1)
    if len(data) != want:
        raise ValueError(f"holds {len(data):,} data bytes, {tuple(shape)} {dtype} needs {want:,}")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def load_npz_samples(path: str | os.PathLike, module: Module) -> list[list[np.ndarray]]:
    """Calibration samples from an .npz: one array per model input (keyed by input name, or
    arr_0, arr_1, ... in input order), each with one row per sample; every row is fed as a
    batch of one."""
    data = read_npz(path, "calibration data")
    names = list(module.metadata.get("input_names", ())) or \
        [v.name or f"input_{i}" for i, v in enumerate(module.main.inputs)]
    keys = list(data)
    if set(names) <= set(keys):
        arrays = [data[n] for n in names]
    elif len(keys) == len(names) and all(k == f"arr_{i}" for i, k in enumerate(keys)):
        arrays = [data[k] for k in keys]
    else:
        raise ConversionError(f"calibration data {path} has arrays {', '.join(keys) or '(none)'}"
                              f"; the model takes inputs {', '.join(names)} (name the arrays "
                              f"after them, or save them positionally as arr_0, arr_1, ...)")
    scalars = [n for n, a in zip(names, arrays) if a.ndim == 0]
    if scalars:
        raise ConversionError(f"calibration data {path}: array(s) {', '.join(scalars)} are "
                              f"scalars; each needs one row per sample")
    counts = {len(a) for a in arrays}
    if len(counts) != 1:
        raise ConversionError(f"calibration data {path}: arrays hold different sample counts "
                              f"{sorted(counts)}")
    n = counts.pop()
    return [[a[i:i + 1] for a in arrays] for i in range(n)]
