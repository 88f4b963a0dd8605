"""`tensorforge.convert`: source -> IR -> pipeline -> artifacts, written atomically, optionally
verified against the source model in each target runtime.

Targets are looked up in TARGETS; each entry emits bytes from a Module and knows how to run
its own artifact for verification. Every artifact is built in memory first and only then
written, so a failed compile never leaves a partial or clobbered file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..ir.errors import ConversionError
from ..ir.graph import Module
from ..ir.verify import verify_module
from ..passes import PassContext, PassManager
from . import verify as V
from .files import write_files_atomic
from .sources import Source, load_source

DEFAULT_PIPELINE = "canonicalize"


@dataclass(frozen=True)
class Target:
    """A backend as the driver sees it."""

    name: str
    suffix: str                                   # file name suffix of a single artifact
    emit: Callable[..., bytes]                    # (module, **options) -> bytes
    run: Callable[[bytes, dict[str, np.ndarray], list[str]], list[np.ndarray]]


def _emit_tflite(module: Module, *, fp16: bool = False) -> bytes:
    from ..backends.tflite import write_tflite

    return write_tflite(module, fp16=fp16)


def _run_tflite(data: bytes, inputs: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data).get_signature_runner("serving_default")
    out = runner(**inputs)
    return [out[n] for n in names]


TARGETS: dict[str, Target] = {
    "tflite": Target("tflite", ".tflite", _emit_tflite, _run_tflite),
}


@dataclass
class ConversionResult:
    """What `convert` produced: artifact paths by target, the optimized module, and the
    verification table when `verify=True`."""

    paths: dict[str, Path]
    module: Module
    verification: V.Verification | None = None
    source: str = ""
    artifacts: dict[str, bytes] = field(default_factory=dict, repr=False)


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
    """One file per target. `output` is a file path for a single target whose suffix matches,
    else a directory holding `model<suffix>` per target."""
    out = Path(output)
    if len(targets) == 1 and out.suffix == TARGETS[targets[0]].suffix and not out.is_dir():
        return {targets[0]: out}
    if out.exists() and not out.is_dir():
        raise ConversionError(f"output {out} is an existing file; for targets "
                              f"{', '.join(targets)} give a directory or a *.{targets[0]} path")
    return {t: out / f"model{TARGETS[t].suffix}" for t in targets}


def optimize(module: Module, passes: str | None, ctx: PassContext | None = None) -> Module:
    """Verifies, runs the pipeline (default: canonicalize) and verifies again."""
    verify_module(module)
    pipeline = DEFAULT_PIPELINE if passes is None else passes
    PassManager.parse(pipeline).run(module, ctx or PassContext())
    verify_module(module)
    return module


def convert(model: Any, target: str | Sequence[str] = "tflite",
            output: str | Path = "model.tflite", *, verify: bool = False,
            passes: str | None = None, fp16: bool = False, safe_mode: bool = True,
            input_signature=None, pass_context: PassContext | None = None,
            batch: int = 2) -> ConversionResult:
    """Compiles `model` (Keras model, `.keras` file, SavedModel directory, `.tfir` file or
    Module) to `target` ("tflite", a list, or "all") and writes the artifacts under `output`.

    `passes` is a pipeline string (default "canonicalize"; "" runs none). With `verify=True`,
    the source model, the IR interpreter and each artifact run on the same random inputs and
    `result.verification` holds the error table (float32 contract: 1e-4 relative)."""
    targets = resolve_targets(target)
    paths = output_paths(output, targets)
    source = load_source(model, safe_mode=safe_mode, input_signature=input_signature)
    module = optimize(source.module, passes, pass_context)
    artifacts = {t: TARGETS[t].emit(module, **({"fp16": fp16} if t == "tflite" else {}))
                 for t in targets}
    verification = verify_artifacts(source, module, artifacts, fp16=fp16, batch=batch) \
        if verify else None
    write_files_atomic({str(paths[t]): data for t, data in artifacts.items()})
    return ConversionResult(paths, module, verification, source.description, artifacts)


def verify_artifacts(source: Source, module: Module, artifacts: dict[str, bytes], *,
                     fp16: bool = False, batch: int = 2) -> V.Verification:
    """Runs the reference (source model, else the IR interpreter), the IR and every artifact on
    the same inputs and tabulates their errors."""
    inputs = V.sample_inputs(module, batch=batch)
    names = V.output_names(module)
    ir_out = V.run_ir(module, inputs)
    if source.run_original is not None:
        reference, want = source.kind, source.run_original(inputs)
    else:
        reference, want = "IR interpreter", ir_out
    result = V.Verification(reference, batch)
    if source.run_original is not None:
        V.compare(result, "ir", ir_out, want, names, V.FLOAT_RTOL)
    # float16 weights carry ~3 decimal digits; that, not 1e-4, is the honest bound there.
    tol = 1e-2 if fp16 else V.FLOAT_RTOL
    for t, data in artifacts.items():
        V.compare(result, t, TARGETS[t].run(data, inputs, names), want, names, tol)
    return result
