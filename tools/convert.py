"""`tensorforge.convert`: source -> IR -> pipeline -> artifacts, written atomically, optionally
verified against the source model in each target runtime.

Targets are looked up in TARGETS; each entry writes its artifact (a file or a directory) and
knows how to run it for verification. Artifacts are staged beside the output and moved into
place only when all are written, so a failed compile never leaves a partial or clobbered
artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..backends.common import swap_directory
from ..ir.errors import ConversionError
from ..ir.graph import Module
from ..ir.quantized import is_quantized, near_ties_rounded_the_other_way
from ..ir.types import DType
from ..ir.verify import verify_module
from ..passes import PassContext, PassManager
from ..passes.dtypes import narrow_float_values
from ..passes.recurrent import tflite_unfused
from . import quantize as Q
from . import trainable as T
from . import verify as V
from .files import check_output_path
from .sources import Source, load_source

DEFAULT_PIPELINE = "canonicalize"


@dataclass(frozen=True)
class Target:
    """A backend as the driver sees it: how to write its artifact at a path (a file or a
    directory) and how to run that artifact for verification."""

    name: str
    default_name: str                       # artifact name inside an output directory
    is_dir: bool                            # the artifact is a directory (SavedModel, TF.js)
    write: Callable[..., None]              # (module, path, **options)
    # (path, feeds, output names): the artifact loaded once and run on each feed (a dict of
    # named inputs); per feed its outputs in `names` order or the Exception it failed with.
    # It may return a `Runs` to say how it ran ("wasm backend"), or, for a `background`
    # target, something with a `wait()` giving that: verification then starts it first and
    # runs the source model, the IR and the other targets meanwhile.
    run: Callable[[Path, list[dict[str, np.ndarray]], list[str]], Any]
    background: bool = False    # runs in another process (Node.js): started before the rest


class Runs(list):
    """A Target's per-feed results, with a note on how the runtime ran them."""

    def __init__(self, results, detail: str = ""):
        super().__init__(results)
        self.detail = detail


def _write_tflite(module: Module, path: Path, *, fp16: bool = False,
                  notes: list[str] | None = None, **_) -> None:
    from ..backends.tflite.writer import save_tflite

    # Streamed to the file: a model past 2 GiB keeps its weights after the flatbuffer.
    save_tflite(module, path, fp16=fp16, notes=notes)


def _run_tflite(path: Path, feeds: list[dict[str, np.ndarray]], names: list[str]) -> list:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    results = []
    for inputs in feeds:    # the runner resizes its inputs to each feed's shapes
        try:
            out = runner(**inputs)
            results.append([np.array(out[n]) for n in names])
        except Exception as e:
            results.append(e)
    return results


def _write_savedmodel(module: Module, path: Path, *, trainable=False,
                      notes: list[str] | None = None, **_) -> None:
    from ..backends.savedmodel import write_savedmodel

    write_savedmodel(module, path, trainable=trainable, notes=notes)


def _run_savedmodel(path: Path, feeds, names):
    import tensorflow as tf

    # Loaded once: the first call pays for TF's graph optimization (Grappler), which on a
    # SavedModel of thousands of nodes is most of the run.
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    results = []
    for inputs in feeds:
        try:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
            results.append([out[n].numpy() for n in names])
        except Exception as e:
            results.append(e)
    return results


def _write_tfjs(module: Module, path: Path, *, tfjs_quantize: str | None = None,
                tfjs_quantize_globs=None, notes: list[str] | None = None, **_) -> None:
    from ..backends.tfjs import write_tfjs

    write_tfjs(module, path, quantize=tfjs_quantize, quantize_globs=tfjs_quantize_globs,
               notes=notes)


class _PendingTfjs:
    """TF.js running in a background Node process; `wait()` gives its Runs."""

    def __init__(self, run):
        self._run = run
        self.seconds: float | None = None

    def cancel(self) -> None:
        self._run.cancel()

    def join(self) -> None:
        """Waits until Node has finished (its results are read by `wait`)."""
        self._run.join()

    def wait(self) -> Runs:
        results = self._run.wait()
        self.seconds = self._run.seconds
        details = self._run.details
        used = sorted({d["backend"] for d in details if "backend" in d})
        detail = f"Node.js, {'/'.join(used)} backend" if used else ""
        fallback = next((d["wasm_error"] for d in details if "wasm_error" in d), None)
        if fallback:
            detail += f"; WASM failed: {fallback[:120]}"
        return Runs(results, detail)


# Ops whose integer form tfjs's WASM backend does not compute bit-exactly (it runs int32
# arithmetic through float32: wrong past 2^24 and on wrap-around; measured on the bitwise
# expansion, integer sort and shifts), so graphs with them verify on the CPU backend.
_WASM_INEXACT_INT_OPS = frozenset({
    "Add", "AddV2", "Sub", "Mul", "Div", "RealDiv", "FloorDiv", "FloorMod", "TruncateDiv",
    "Maximum", "Minimum", "Neg", "Abs", "Square", "Pow", "Sum", "Prod", "Cumsum", "TopKV2",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Invert", "LeftShift", "RightShift"})
_INT_TYPES = frozenset({"DT_INT32", "DT_INT64", "DT_INT16", "DT_INT8", "DT_UINT8"})


def _tfjs_backend(path: Path) -> str | None:
    """"cpu" when the TF.js graph at `path` does integer arithmetic (`_WASM_INEXACT_INT_OPS`),
    else None: the harness's default, WASM."""
    try:
        topology = json.loads((path / "model.json").read_text())["modelTopology"]
    except (OSError, ValueError, KeyError):
        return None
    nodes = list(topology.get("node", []))
    for function in topology.get("library", {}).get("function", []):
        nodes += function.get("nodeDef", [])
    for node in nodes:
        dtype = node.get("attr", {}).get("T", {}).get("type")
        if node.get("op") in _WASM_INEXACT_INT_OPS and dtype in _INT_TYPES:
            return "cpu"
    return None


def _warm_node():
    """node_runner.warm_node: a Node process started ahead for the TF.js verification."""
    from .node_runner import warm_node

    return warm_node()


def _run_tfjs(path: Path, feeds, names):
    from .node_runner import start_feeds_in_node

    return _PendingTfjs(start_feeds_in_node(path, feeds, names, backend=_tfjs_backend(path)))


TARGETS: dict[str, Target] = {
    "tflite": Target("tflite", "model.tflite", False, _write_tflite, _run_tflite),
    "savedmodel": Target("savedmodel", "saved_model", True, _write_savedmodel, _run_savedmodel),
    "tfjs": Target("tfjs", "tfjs", True, _write_tfjs, _run_tfjs, background=True),
}


@dataclass
class ConversionResult:
    """What `convert` produced: artifact paths by target, the optimized module, and the
    verification table when `verify=True`."""

    paths: dict[str, Path]
    module: Module
    verification: V.Verification | None = None
    source: str = ""
    # The bytes of each single-file artifact (TFLite), read from `paths` when asked for: a
    # large model is not held in memory a second time unless the caller wants it.
    artifacts: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    quantization: Any = None    # tools.quantize.QuantizeResult for quantized conversions
    notes: list[str] = field(default_factory=list)  # what the artifacts do differently


class ArtifactBytes(Mapping):
    """{target: bytes} of single-file artifacts, each read from its path on access."""

    def __init__(self, paths: dict[str, Path]):
        self._paths = dict(paths)

    def __getitem__(self, target: str) -> bytes:
        return self._paths[target].read_bytes()

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def resolve_targets(target: str | Sequence[str]) -> list[str]:
    names = [target] if isinstance(target, str) else list(target)
    if "all" in names:
        names = list(TARGETS)
    bad = [t for t in names if t not in TARGETS]
    if bad or not names:
        raise ConversionError(f"unknown target{'s' if len(bad) > 1 else ''} "
                              f"{', '.join(repr(b) for b in bad) or '(none)'}; valid targets: "
                              f"{', '.join(TARGETS)}, all")
    return list(dict.fromkeys(names))


def output_paths(output: str | Path, targets: list[str]) -> dict[str, Path]:
    """Where each artifact goes. One target: `output` is the artifact itself (a `.tflite`
    file, a SavedModel or TF.js directory) unless it is an existing directory holding no
    artifact of that kind, then the artifact goes inside it. Several targets: `output` is a
    directory with one artifact per target under its default name."""
    out = Path(output)
    if not os.fspath(output):
        raise ConversionError("output path is empty")
    if len(targets) == 1:
        t = TARGETS[targets[0]]
        if t.is_dir:
            return {t.name: out}
        if out.is_dir() or out.suffix != ".tflite":
            if out.exists() and not out.is_dir():
                raise ConversionError(f"output {out} is an existing file without the .tflite "
                                      f"suffix; name a .tflite file or a directory")
            return {t.name: out / t.default_name}
        return {t.name: out}
    if out.exists() and not out.is_dir():
        raise ConversionError(f"output {out} is an existing file; targets "
                              f"{', '.join(targets)} need a directory")
    return {t: out / TARGETS[t].default_name for t in targets}


def _check_destinations(paths: dict[str, Path]) -> None:
    """Refuses, before any work, to replace something that is not an artifact of ours, or to
    write where nothing can be written (see files.check_output_path)."""
    for target, path in paths.items():
        check_output_path(path, directory=TARGETS[target].is_dir)
        if not path.exists():
            continue
        if TARGETS[target].is_dir:
            if not path.is_dir():
                raise ConversionError(f"output {path} exists and is not a directory")
            if any(path.iterdir()) and not _looks_like(target, path):
                raise ConversionError(f"output directory {path} holds something that is not a "
                                      f"{target} artifact; refusing to replace it")
        elif path.is_dir():
            raise ConversionError(f"output {path} is a directory")


def _looks_like(target: str, path: Path) -> bool:
    if target == "savedmodel":
        return (path / "saved_model.pb").exists()
    if target == "tfjs":
        return (path / "model.json").exists()
    return False


def _place(staged: Path, final: Path) -> None:
    """Moves a staged artifact into place; an existing one is swapped out and deleted only
    after the new one is in."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if staged.is_dir():
        swap_directory(staged, final)
    else:
        os.replace(staged, final)


def optimize(module: Module, passes: str | None, ctx: PassContext | None = None) -> Module:
    """Verifies, runs the pipeline (default: canonicalize) and verifies again."""
    verify_module(module)
    pipeline = DEFAULT_PIPELINE if passes is None else passes
    PassManager.parse(pipeline).run(module, ctx or PassContext())
    verify_module(module)
    return module


def convert(model: Any, target: str | Sequence[str] = "tflite",
            output: str | Path = "model.tflite", *, verify: bool = False,
            passes: str | None = None, fp16: bool = False, tfjs_quantize: str | None = None,
            tfjs_quantize_globs: Sequence[str] | None = None, safe_mode: bool = True,
            input_signature=None, input_shapes=None, example_args=None, params=None,
            pass_context: PassContext | None = None, batch: int = 2,
            quantization: Any = None, calibration_data=None, verify_inputs=None,
            custom_objects=None, min_sqnr_db: float = V.DEFAULT_MIN_SQNR_DB,
            progress: bool = True, trainable=False) -> ConversionResult:
    """Compiles `model` (Keras model, JAX function with `example_args` (and `params`),
    JaxModel, `.keras` file, SavedModel directory, `.tfir` file, `file.py:factory` or Module)
    to `target` ("tflite", "savedmodel", "tfjs", a list, or "all") under `output`.

    `input_shapes` ({input name: shape}; None or -1 leaves a dim as it is) fixes a Keras
    model's input shapes for a static artifact. `passes` is a pipeline string (default
    "canonicalize"; "" runs none). `fp16` stores TFLite
    weights as float16; `tfjs_quantize` ("uint8", "uint16", "float16") compresses TF.js weights
    (optionally only those matching `tfjs_quantize_globs`). With `verify=True`, the source
    model, the IR interpreter and each artifact run on the same inputs and
    `result.verification` holds the error table (float32 contract: 1e-4 relative). The
    inputs are random values the model accepts (ids below their table's size, 0/1 masks),
    or `verify_inputs` (input name -> array, or an .npz path, or a list of these to check
    several sizes; implies `verify`), checked against the model's signature before any work.
    `custom_objects` are the classes a `.keras` file names that Keras does not know: a dict
    (as Keras takes it), a module or the path of a `.py` file defining or registering them,
    or a list of those (`safe_mode` stays on).

    `quantization` (a scheme name such as "int8", a Scheme, or a
    `tensorforge.quantization.QuantizationConfigurationMap`) quantizes the model; static
    schemes calibrate on `calibration_data` (an iterable of input batches, like
    TFLiteConverter's representative_dataset, or an .npz path: one array per input, one row
    per sample), which is checked against the model's signature
    before any other work. A model trained with fake-quant (QAT) converts to the quantized
    form without either. TFLite gets integer kernels; SavedModel and TF.js run the
    quantize/dequantize form. Quantized artifacts are verified against the IR interpreter
    of the same quantized module, in output quantization steps; the quantized model against
    the float source by SQNR (each output at least `min_sqnr_db`, default 5 dB) and collapse
    (a constant output where the float one varies fails).

    `trainable=True` (target "savedmodel" only; float models only) writes the fine-tuning
    form: the model's parameters (JAX params, Flax variables, Keras weights) are trainable
    tf.Variables, kept as they are by the pass pipeline, and the SavedModel's object has a
    differentiable `__call__`, `variables` and `trainable_variables` beside its
    `serving_default` signature (docs/guide.md, "Fine-tuning a JAX model in TensorFlow").
    A list of name globs instead of True trains only the parameters it matches.

    Every artifact is first written to a staging directory beside `output`; only when all of
    them are written are they moved into place, so a failure leaves nothing behind and never
    clobbers an existing artifact."""
    targets = resolve_targets(target)
    check_output_path(output, directory=None)   # the staging area's parent, before any work
    paths = output_paths(output, targets)
    _check_destinations(paths)
    # Node.js (TF.js's runtime) starts now when it will verify, so that its start-up overlaps
    # lifting and writing.
    with _warm_node() if (verify or verify_inputs is not None) and "tfjs" in targets \
            else contextlib.nullcontext():
        source = load_source(model, safe_mode=safe_mode, input_signature=input_signature,
                             example_args=example_args, params=params, input_shapes=input_shapes,
                             custom_objects=custom_objects)
        if verify_inputs is not None:
            # One set of inputs, or several (the same artifacts checked at several sizes).
            sets = verify_inputs if isinstance(verify_inputs, (list, tuple)) else [verify_inputs]
            verify, verify_inputs = True, [V.given_inputs(source.module, x) for x in sets]
        if isinstance(calibration_data, (str, os.PathLike)):
            from ..passes.quantize.calibrate import load_npz_samples

            calibration_data = load_npz_samples(calibration_data, source.module)
        if quantization is not None:
            Q.as_config_map(quantization)       # an unknown scheme fails before any work
            if calibration_data is not None:
                # Checked against the signature before any work, and materialized once (a
                # generator is read only once; calibration and verification both need it).
                calibration_data = Q.check_calibration_data(source.module, calibration_data)
        if trainable is not False:
            # The pipeline must not fold, merge or delete a parameter (tools/trainable.py).
            T.check_trainable(targets, quantization, source.module,
                              fake_quant=Q.has_fake_quant(source.module))
            shields = T.shield_parameters(source.module)
            module = optimize(source.module, passes, pass_context)
            T.restore_parameters(module, shields)
        else:
            module = optimize(source.module, passes, pass_context)
        qresult = None
        if quantization is not None:
            qresult = Q.quantize_module(module, quantization, calibration_data,
                                        runner=_calibration_runner, progress=progress)
        elif Q.has_fake_quant(module):
            qresult = Q.from_fake_quant(module)
        modules = {t: Q.for_target(qresult, t) if qresult is not None else module
                   for t in targets}
        notes: list[str] = []    # what the artifacts do differently, from the writers too
        options = {"fp16": fp16, "tfjs_quantize": tfjs_quantize,
                   "tfjs_quantize_globs": tfjs_quantize_globs, "notes": notes}
        if trainable is not False:
            options["trainable"] = trainable
        anchor = Path(output).resolve()
        anchor.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{anchor.name}.staging-", dir=anchor.parent))
        try:
            staged = {t: stage / TARGETS[t].default_name for t in targets}
            # A float verification begins before the artifacts are written: TF.js (Node, in the
            # background) starts as soon as its artifact is, and runs while the others are
            # written (see _FloatCheck).
            check = _FloatCheck(source, module, staged, fp16=fp16, tfjs_quantize=tfjs_quantize,
                                batch=batch, inputs=verify_inputs) \
                if verify and qresult is None else None
            _write_all(targets, modules, staged, options, check)
            if not verify:
                verification = None
            elif qresult is not None:
                verification = verify_quantized(source, modules, staged, calibration_data,
                                                min_sqnr_db=min_sqnr_db,
                                                batch=batch, inputs=verify_inputs and
                                                verify_inputs[0])
            else:
                verification = check.finish()
            artifacts = ArtifactBytes({t: paths[t] for t in targets if not TARGETS[t].is_dir})
            for t in targets:
                _place(staged[t], paths[t])
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        result_module = qresult.module if qresult is not None else module
        narrow = narrow_float_values(module)
        if narrow:
            notes.append(f"bf16/f16 computed in f32 in {', '.join(targets)} (their kernels lack "
                         f"them); widened: {', '.join(narrow)}")
        f32_only = [t for t in targets if t in ("tflite", "tfjs")]
        doubles = narrow_float_values(module, (DType.f64,)) if f32_only else []
        if doubles:
            notes.append(f"f64 computed in f32 in {', '.join(f32_only)} (TFLite's kernels and "
                         f"TF.js have no float64): {', '.join(doubles)}")
        if trainable is not False and source.kind == "keras" and not isinstance(model, (str, Path)):
            frozen = T.unlifted_weights(model, module)
            if frozen:
                notes.append(f"not trainable in the SavedModel (the frontend folded them into "
                             f"constants while lifting): {', '.join(frozen)}")
        for scope, reason in tflite_unfused(module) if "tflite" in targets else []:
            notes.append(f"'{scope}' runs as a WHILE loop in TFLite: the fused sequence kernel "
                         f"{reason}")
        return ConversionResult(paths, result_module, verification, source.description, artifacts,
                                quantization=qresult, notes=notes)


def _calibration_runner(module: Module, values):
    """Calibration runs the float graph as one TensorFlow function (much faster than the
    NumPy interpreter on convolutional models)."""
    from ..backends.tf_probe import tf_runner

    return tf_runner(module, values)


def _verification_inputs(module: Module, calibration_data, batch: int) -> dict:
    """In-distribution inputs for a quantized model: the first calibration samples (random
    normal inputs would fall outside the calibrated ranges), else random ones."""
    if calibration_data is None:
        return V.sample_inputs(module, batch=batch)
    samples = Q.check_calibration_data(module, calibration_data)[:batch]
    names = V.input_names(module)
    return {n: np.concatenate([s[i] for s in samples]) if module.main.inputs[i].type.shape
            and isinstance(module.main.inputs[i].type.shape[0], str) else samples[0][i]
            for i, n in enumerate(names)}


def _output_steps(module: Module) -> list[float | None]:
    """Each output's quantization step: 1 for integer codes, the scale (the largest, per
    channel) of the value a final dequantize reads, None for a float result of a float op."""
    steps = []
    for v in module.main.outputs:
        p = v.producer
        if is_quantized(v):
            steps.append(1.0)
        elif p is not None and p.op == "dequantize":
            q = p.inputs[0].quant
            steps.append(float(np.max(q.scale if q is not None else p.attrs["scale"])))
        else:
            steps.append(None)
    return steps


def _artifact_tolerances(module: Module, inputs, want: list[np.ndarray]):
    """(absolute tolerance, steps) per output for an artifact of quantized `module`: twice how
    far one-code rounding differences move the outputs (V.QUANT_TIE_BAND), at least one
    step."""
    with near_ties_rounded_the_other_way(V.QUANT_TIE_BAND):
        moved = V.run_ir(module, inputs)
    out = []
    for step, w, m in zip(_output_steps(module), want, moved):
        w, m = np.asarray(w, np.float64), np.asarray(m, np.float64)
        spread = float(np.max(np.abs(w - m))) if w.size else 0.0
        if step is None:
            scale = float(np.max(np.abs(w))) if w.size else 0.0
            out.append((max(V.QUANT_RTOL * scale, V.QUANT_SPREAD_FACTOR * spread), None))
            continue
        steps = max(1.0, float(np.ceil(V.QUANT_SPREAD_FACTOR * spread / step - 1e-6)))
        out.append((steps * step * (1 + 1e-6), steps))
    return out


def verify_quantized(source: Source, modules: dict[str, Module], artifacts: dict[str, Path],
                     calibration_data, *, batch: int = 2,
                     inputs: dict[str, np.ndarray] | None = None,
                     min_sqnr_db: float = V.DEFAULT_MIN_SQNR_DB) -> V.Verification:
    """Two checks, neither with a tolerance taken from the error it checks:

    - the quantized IR against the float source: each output's SQNR must reach
      `min_sqnr_db`, and an output that collapses (constant where the float one varies)
      fails, which is what a quantization gone wrong looks like;
    - each artifact against the IR interpreter of the very module its backend got, in
      output quantization steps: at least one step, or twice as far as rounding a few codes
      the other way moves the IR's outputs (integer kernels round differently from the
      reference's real arithmetic and from each other; a deep, badly conditioned network
      amplifies that, and this measures by how much on this model)."""
    first = next(iter(modules.values()))
    fed = "given inputs" if inputs is not None else \
        "calibration samples" if calibration_data is not None else "random inputs"
    if inputs is None:
        inputs = _verification_inputs(first, calibration_data, batch)
    names = V.output_names(first)
    result = V.Verification("IR interpreter of the quantized module", _batch_of(inputs, batch),
                            inputs=fed)
    # The IR of each distinct module runs once, shared by the targets that got it.
    ir_runs: dict[int, tuple[list, list]] = {}

    def ir_of(m: Module):
        if id(m) not in ir_runs:
            with result.timed("ir"):
                want = V.run_ir(m, inputs)
                ir_runs[id(m)] = want, _artifact_tolerances(m, inputs, want)
        return ir_runs[id(m)]

    started = _start_targets(result, artifacts, [inputs], names)
    try:
        if source.run_original is not None:
            with result.timed(_reference_label(source, artifacts)):
                want = source.run_original(inputs)
            V.compare_quantized(result, f"ir ({source.kind} float)", ir_of(first)[0],
                                want, names, min_sqnr_db)
        for t in artifacts:
            ir_of(modules[t])
    except BaseException:
        _wait_all(started)
        raise
    for t in artifacts:
        want, tolerances = ir_of(modules[t])
        [got] = _finish_target(result, t, started[t], 1)
        if isinstance(got, Exception):  # the runtime rejected the artifact: a failed check
            V.failed_run(result, t, names, got)
            continue
        V.compare_in_steps(result, t, got, want, names, tolerances)
    result.order_seconds([_reference_label(source, artifacts), "ir", *artifacts])
    return result


def _reference_label(source: Source, artifacts) -> str:
    """The source's name in the seconds per runtime: its kind, or "source savedmodel" where
    an artifact has that name (a SavedModel converted to a SavedModel)."""
    return source.kind if source.kind not in artifacts else f"source {source.kind}"


def _start_targets(result: V.Verification, artifacts: dict[str, Path], feeds: list,
                   names: list[str]) -> dict:
    """Starts every artifact on all the feeds, each loaded once: background targets (TF.js in
    Node) first, left running; the others run to completion here. Returns per target what
    `_finish_target` takes."""
    order = sorted(artifacts, key=lambda t: not TARGETS[t].background)
    started = {}
    for t in order:
        start = time.perf_counter()
        try:
            started[t] = TARGETS[t].run(artifacts[t], feeds, names)
        except Exception as e:  # the runtime could not load the artifact: every feed fails
            started[t] = [e] * len(feeds)
        if not hasattr(started[t], "wait"):
            result.seconds[t] = time.perf_counter() - start
    return started


def _finish_target(result: V.Verification, t: str, runs, count: int) -> list:
    """A started target's per-feed outputs (or the exception each feed failed with), its
    seconds recorded in `result` (a background run's own wall time)."""
    if hasattr(runs, "wait"):
        start = time.perf_counter()
        try:
            runs_done = runs.wait()
        except Exception as e:
            runs_done = [e] * count
        seconds = getattr(runs, "seconds", None)
        result.seconds[t] = seconds if seconds is not None else time.perf_counter() - start
        runs = runs_done
    if getattr(runs, "detail", ""):
        result.details[t] = runs.detail
    if len(runs) != count:
        return [RuntimeError(f"{t} returned {len(runs)} results for {count} input sets")
                ] * count
    return list(runs)


def _wait_all(started: dict) -> None:
    """Waits for background runs nobody will read (an error interrupted verification)."""
    for runs in started.values():
        if hasattr(runs, "wait"):
            try:
                runs.wait()
            except Exception:
                pass


def _other_batch(batch: int) -> int:
    """The batch of the second input set of a model with run-time dims."""
    return 2 if batch == 1 else 1


def _batch_of(inputs: dict[str, np.ndarray], default: int) -> int:
    """The leading size of the given inputs (the table's `batch`)."""
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else default


def _write_all(targets: list[str], modules: dict[str, Module], staged: dict[str, Path],
               options: dict, check: "_FloatCheck | None") -> None:
    """Writes every target's artifact. Under a float verification (`check`), background
    targets (TF.js) are written first and started at once, so that their runtime works while
    the other artifacts are written; the writers' notes keep the order of `targets` either
    way. When a write fails, whatever `check` started is stopped."""
    order = targets if check is None else \
        sorted(targets, key=lambda t: not TARGETS[t].background)
    notes = {t: [] for t in targets}
    try:
        for t in order:
            TARGETS[t].write(modules[t], staged[t], **{**options, "notes": notes[t]})
            if check is not None:
                check.written(t)
    except BaseException:
        if check is not None:
            check.cancel()
        raise
    finally:
        for t in targets:
            options["notes"].extend(notes[t])


class _FloatCheck:
    """The verification of a float conversion (`verify_artifacts`), begun before the artifacts
    are written, so that what can run early does.

    The input sets are drawn (or the user's taken) up front. A `background` target (TF.js:
    single-threaded WebAssembly in its own Node process, the longest runtime on CNNs) starts
    the moment `written(t)` says its artifact is on disk, and works while the other artifacts
    are written. `finish()` then queues the reference (the source model), the IR interpreter
    and the other artifacts for worker threads, waits for everything and tabulates the
    errors. Every runtime still runs once per artifact and input set, each artifact loaded
    once; `Verification.seconds` has each runtime's own wall time (they overlap).

    Threads: TensorFlow, LiteRT and NumPy's BLAS release the GIL, so runtimes on different
    threads overlap. One worker runs the queue while a background run is alive (Node keeps
    a core busy; more threads would only slice that core between them and leave Node, the
    longest single runtime, as the last thing running); once the background runs are done,
    up to one worker per core (at most 4) share what is left. The source model is not
    started while the artifacts are written: Keras's eager dispatch and the writers are both
    Python-bound and contend for the GIL; measured on 2 shared cores, starting it before the
    writes was no faster (MobileNetV2, ResNet50) and took more CPU."""

    def __init__(self, source: Source, module: Module, artifacts: dict[str, Path], *,
                 fp16: bool = False, tfjs_quantize: str | None = None, batch: int = 2,
                 inputs=None):
        import queue

        self.source, self.module, self.artifacts = source, module, dict(artifacts)
        self.fp16, self.tfjs_quantize = fp16, tfjs_quantize
        fed = "given inputs" if inputs is not None else "random inputs"
        if inputs is not None:
            runs = list(inputs) if isinstance(inputs, list) else [inputs]
            if len(runs) > 1:
                fed += f" at {len(runs)} sizes"
        else:
            runs = [V.sample_inputs(module, batch=batch)]
            if V.has_runtime_dims(module):
                # The same artifacts at other run-time sizes: one file must serve them all.
                # The second batch is 1 (2 when the first is): the size most deployments
                # run, where a squeezed or broadcast batch axis shows, and the cheapest.
                runs.append(V.sample_inputs(module, batch=_other_batch(batch),
                                            dim=batch + 3, seed=1))
                fed += f" at {len(runs)} sizes"
        self.runs = runs
        self.names = V.output_names(module)
        reference = source.kind if source.run_original is not None else "IR interpreter"
        self.result = V.Verification(reference, _batch_of(runs[0], batch), inputs=fed)
        # bf16/f16 run in f32 in the file formats (passes/dtypes.py): fed and held as such.
        self.wide = [{k: v.astype(np.float32) if v.dtype in _NARROW_NP else v
                      for k, v in feed.items()} for feed in runs]
        self.started: dict[str, Any] = {}   # background target -> its pending run
        # Runtime name -> Future of its outputs, run by the worker threads from the queue
        # (None in the queue ends one worker).
        self._futures: dict[str, Any] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._workers: list = []

    @staticmethod
    def _start_thread(target):
        import threading

        thread = threading.Thread(target=target, name="tensorforge-verify", daemon=True)
        thread.start()
        return thread

    def _submit(self, runtime: str, fn: Callable[[], Any], key: str | None = None) -> None:
        """Queues `fn`, timed as `runtime`; its Future is `self._futures[key or runtime]`."""
        from concurrent.futures import Future

        def timed():
            start = time.perf_counter()
            try:
                return fn()
            finally:    # each runtime's own wall time (one thread sets one key)
                self.result.seconds[runtime] = time.perf_counter() - start
        self._futures[key or runtime] = future = Future()
        self._queue.put((timed, future))

    def _work(self) -> None:
        """A worker: runs queued tasks until it takes a None."""
        while (item := self._queue.get()) is not None:
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:     # handed to whoever reads the future
                future.set_exception(e)

    def _work_after_background(self) -> None:
        """A worker that joins in once every background run has ended."""
        for runs in list(self.started.values()):
            join = getattr(runs, "join", None)
            if join is not None:
                join()
        self._work()

    def written(self, t: str) -> None:
        """Artifact `t` is written: a background target starts running it now."""
        if TARGETS[t].background:
            self.started.update(_start_targets(self.result, {t: self.artifacts[t]},
                                               self.wide, self.names))

    def _end_workers(self) -> None:
        """Ends every worker once the queue before it is done, and waits for them."""
        for _ in self._workers:
            self._queue.put(None)
        for thread in self._workers:
            thread.join()

    def cancel(self) -> None:
        """Stops the background runs and the queued tasks and waits for the running ones (the
        conversion failed: nobody will read their results)."""
        for runs in self.started.values():
            stop = getattr(runs, "cancel", None)
            try:
                stop() if stop is not None else runs.wait()
            except Exception:
                pass
        self.started.clear()
        for future in self._futures.values():
            future.cancel()
        self._end_workers()

    def finish(self) -> V.Verification:
        """Runs what has not run yet (the background targets are started here if `written`
        was not called for them), waits for everything and returns the table."""
        for t in self.artifacts:
            if TARGETS[t].background and t not in self.started:
                self.written(t)
        result, runs, names, source = self.result, self.runs, self.names, self.source
        reference = _reference_label(source, self.artifacts)
        try:
            # The longest first: the source model and the interpreter compute the whole model
            # at every size, through Python-driven kernels.
            if source.run_original is not None:
                self._submit(reference, lambda: _run_reference(source.run_original,
                                                               self.module, runs),
                             key=_REFERENCE)
            # Checked against the source model, the IR runs as one more runtime, in float32
            # arithmetic; it stays the float64 reference where there is no source.
            checked = source.run_original is not None
            self._submit("ir", lambda: [V.run_ir(self.module, feed, float32=checked)
                                        for feed in runs])
            for t in self.artifacts:
                if not TARGETS[t].background:
                    self._submit(t, lambda t=t: _run_target(t, self.artifacts[t], self.wide,
                                                            names))
            self._workers += [self._start_thread(self._work)] + [
                self._start_thread(self._work_after_background)
                for _ in range(min(os.cpu_count() or 1, 4) - 1)]
            self._end_workers()
            # Every task has ended here; the reference's or the IR's error propagates.
            done = {k: f.result() for k, f in self._futures.items()}
        except BaseException:
            self.cancel()
            raise
        ir_outs = done["ir"]
        wants, stacked = done[_REFERENCE] if source.run_original is not None else (ir_outs,
                                                                                   False)
        got_by_target = {t: _finish_target(result, t, self.started[t] if TARGETS[t].background
                                           else done[t], len(runs)) for t in self.artifacts}
        sizes = [V.sizes_label(self.module, feed) if len(runs) > 1 else "" for feed in runs]
        floor = V.narrow_float_tolerance(self.module)
        # Rows per feed: the IR then each artifact.
        for i, (want, size) in enumerate(zip(wants, sizes)):
            checks = [("ir", ir_outs[i], V.FLOAT_RTOL)] if source.run_original is not None \
                else []
            checks += [(t, got[i], max(floor, V.tolerance(t, fp16=self.fp16,
                                                          tfjs_quantize=self.tfjs_quantize)))
                       for t, got in got_by_target.items()]
            if stacked and not _all_within(checks, want):
                # The reference ran on all the sets at once (`_run_reference`): a model whose
                # items depend on each other in a batch gives other values for this set
                # alone, so the set is run alone before any mismatch is reported.
                with result.timed(reference):
                    want = source.run_original(runs[i])
            for t, got, tolerance in checks:
                if isinstance(got, Exception):  # the runtime rejected the artifact
                    V.failed_run(result, t, names, got, size)
                else:
                    V.compare(result, t, got, want, names, tolerance, size)
        result.order_seconds([reference, "ir", *self.artifacts])
        return result


# The key of the reference run's Future: a runtime name would be shared with an artifact of
# the same kind (a SavedModel source converted to a SavedModel), whose outputs then stood in
# for the source's.
_REFERENCE = "<reference>"


def _stacked_feeds(module: Module, runs: list[dict]) -> dict | None:
    """The input sets as one batch (each input concatenated along axis 0), when every input
    of `module` has the run-time batch as its dim 0 and the sets differ in their batch size
    only; else None."""
    if len(runs) < 2 or not all(v.type.rank and isinstance(v.type.shape[0], str)
                                for v in module.main.inputs):
        return None
    for feed in runs:
        if list(feed) != list(runs[0]) or \
                len({x.shape[0] if x.ndim else None for x in feed.values()}) != 1:
            return None
        for k, x in feed.items():
            y = runs[0][k]
            if x.ndim == 0 or x.ndim != y.ndim or x.shape[1:] != y.shape[1:] or \
                    x.dtype != y.dtype:
                return None
    return {k: np.concatenate([feed[k] for feed in runs]) for k in runs[0]}


def _run_reference(run: Callable, module: Module, runs: list[dict]) -> tuple[list, bool]:
    """(the reference's outputs per input set, whether they come from one stacked run).

    Sets that differ only in their batch run as one batch and the outputs are split: an
    eager Keras call costs ~0.1 s of Python per call on a CNN besides its arithmetic
    (MobileNetV2 at batches 2 and 1: 0.24 s apart, 0.14 s stacked; ConvNeXtTiny 96x96: 0.77
    vs 0.51 s). A set whose runtimes do not all match its slice is run alone before its
    errors are recorded (`_FloatCheck.finish`), so a model that mixes the items of its batch
    is judged on its own outputs; a stacked run that fails, or outputs without the stacked
    batch as dim 0, fall back to one run per set."""
    feed = _stacked_feeds(module, runs)
    if feed is not None:
        try:
            outs = [np.asarray(o) for o in run(feed)]
        except Exception:   # the model refuses the larger batch: one run per set
            outs = []
        batches = [next(iter(f.values())).shape[0] for f in runs]
        if outs and all(o.ndim and o.shape[0] == sum(batches) for o in outs):
            bounds = np.cumsum([0, *batches])
            return [[o[a:b] for o in outs] for a, b in zip(bounds, bounds[1:])], True
    return [run(f) for f in runs], False


def _all_within(checks: list, want: list) -> bool:
    """Whether every (runtime, outputs, tolerance) of `checks` that ran matches `want` within
    its tolerance (a runtime that could not run fails whatever the reference says)."""
    for _, got, tolerance in checks:
        if isinstance(got, Exception):
            continue
        if len(got) != len(want) or any(V.errors(g, w)[1] > tolerance
                                        for g, w in zip(got, want)):
            return False
    return True


def _run_target(t: str, path: Path, feeds: list, names: list[str]):
    """A foreground target run on every feed; a load failure fails every feed."""
    try:
        return TARGETS[t].run(path, feeds, names)
    except Exception as e:  # the runtime could not load the artifact
        return [e] * len(feeds)


def verify_artifacts(source: Source, module: Module, artifacts: dict[str, Path], *,
                     fp16: bool = False, tfjs_quantize: str | None = None,
                     batch: int = 2, inputs=None) -> V.Verification:
    """Runs the reference (source model, else the IR interpreter), the IR and every artifact on
    the same inputs (`inputs`: one dict or a list of dicts, else random ones the model accepts
    at two sizes when it has run-time dims) and tabulates their errors. (`convert` begins
    this before writing the artifacts: see _FloatCheck.)"""
    return _FloatCheck(source, module, artifacts, fp16=fp16, tfjs_quantize=tfjs_quantize,
                       batch=batch, inputs=inputs).finish()


_NARROW_NP = (np.dtype(np.float16), np.dtype(DType.bf16.np))
