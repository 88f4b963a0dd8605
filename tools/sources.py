"""Recognising and loading what a user hands the compiler: a Keras model object, a `.keras`
file, a SavedModel directory, a `.tfir` file or an IR Module.

A `Source` keeps the lifted Module and, where there is one, a callable running the original
model (for `--verify`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..ir.errors import ConversionError
from ..ir.graph import Module

# Runs the original model on named inputs and returns its outputs in output order.
Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class Source:
    module: Module
    kind: str                      # "keras", "savedmodel", "tfir", "module"
    run_original: Runner | None    # None where there is no original framework model
    description: str


def _is_keras_model(obj: Any) -> bool:
    # A Keras model can only exist if keras was imported; checking sys.modules first keeps
    # `.tfir` compiles from paying for the TensorFlow import.
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


def _keras_runner(model, output_names: list[str]) -> Runner:
    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = list(inputs.values())
        out = model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(out, dict):
            return [np.asarray(out[k]) for k in output_names]
        if isinstance(out, (list, tuple)):
            return [np.asarray(o) for o in out]
        return [np.asarray(out)]
    return run


def _savedmodel_runner(path: str, signature: str, output_names: list[str]) -> Runner:
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[signature]

    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return [out[k].numpy() for k in output_names]
    return run


def load_source(src: Any, *, safe_mode: bool = True, input_signature=None,
                signature: str = "serving_default") -> Source:
    """Lifts `src` into IR. Raises ConversionError for anything that is not a model."""
    if isinstance(src, Module):
        return Source(src, "module", None, "IR module")
    if _is_keras_model(src):
        from ..frontends.keras import from_keras

        module = from_keras(src, input_signature)
        return Source(module, "keras", _keras_runner(src, list(module.metadata["output_names"])),
                      f"Keras model '{src.name}'")
    if not isinstance(src, (str, Path)):
        raise ConversionError(f"cannot compile a {type(src).__name__}: expected a Keras model, "
                              f"a .keras file, a SavedModel directory, a .tfir file or a Module")
    path = Path(src)
    if not path.exists():
        raise ConversionError(f"no such file or directory: {path}")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ConversionError(f"{path} is a directory but not a SavedModel "
                                  f"(no saved_model.pb)")
        from ..frontends.tf_graph import from_saved_model

        module = from_saved_model(str(path), signature=signature)
        names = list(module.metadata.get("output_names", ()))
        return Source(module, "savedmodel", _savedmodel_runner(str(path), signature, names),
                      f"SavedModel {path} [{signature}]")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        from ..frontends.keras import from_keras, load_keras_file

        model = load_keras_file(path, safe_mode=safe_mode)
        module = from_keras(model, input_signature)
        return Source(module, "keras", _keras_runner(model, list(module.metadata["output_names"])),
                      f"Keras file {path}")
    if suffix == ".tfir":
        from ..ir.text import parse_module
        from .files import read_text

        return Source(parse_module(read_text(path), str(path)), "tfir", None, f"IR file {path}")
    raise ConversionError(f"{path}: unknown source type '{suffix or '(none)'}' (expected .keras, "
                          f".tfir or a SavedModel directory)")
