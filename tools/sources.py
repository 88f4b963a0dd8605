"""Recognising and loading what a user hands the compiler: a Keras model object, a `.keras`
file, a SavedModel directory, a `.tfir` file or an IR Module.

A `Source` keeps the lifted Module and, where there is one, a callable running the original
model (for `--verify`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..ir.errors import ConversionError
from .files import existing_path
from ..ir.graph import Module

# Runs the original model on named inputs and returns its outputs in output order.
Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class Source:
    module: Module
    kind: str                      # "keras", "jax", "savedmodel", "tfir", "module"
    run_original: Runner | None    # None where there is no original framework model
    description: str


def _is_keras_model(obj: Any) -> bool:
    # A Keras model can only exist if keras was imported; checking sys.modules first keeps
    # `.tfir` compiles from paying for the TensorFlow import.
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


def _keras_runner(model, output_names: list[str]) -> Runner:
    # A model built on a dict of inputs is called with that dict (its keys are the IR input
    # names, frontends/keras), others with one array or a list in input order.
    struct = getattr(model, "_inputs_struct", None)
    keys = list(struct) if isinstance(struct, dict) else None

    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if keys is not None:
            out = model({k: inputs[k] for k in keys}, training=False)
        else:
            args = list(inputs.values())
            out = model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(out, dict) and all(k in out for k in output_names):
            return [np.asarray(out[k]) for k in output_names]
        # Nested outputs (a dict of tuples): leaves in the order the frontend names them
        # (`key_0`, `key_1`, ...: dict keys sorted, sequences in order).
        return [np.asarray(o) for o in _leaves(out)]
    return run


def _leaves(tree):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    elif isinstance(tree, (list, tuple)):
        for x in tree:
            yield from _leaves(x)
    else:
        yield tree


def _savedmodel_runner(path: str, signature: str, output_names: list[str]) -> Runner:
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[signature]

    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return [out[k].numpy() for k in output_names]
    return run


@dataclass
class JaxModel:
    """A JAX program to compile: `fn(*example_args)`, or `fn(params, *example_args)` when
    `params` is given. `example_args` are arrays or `jax.ShapeDtypeStruct`s (symbolic dims
    allowed); `names` names the inputs. A `file.py:factory` source returns one of these."""

    fn: Callable
    example_args: Sequence[Any]
    params: Any = None
    names: Sequence[str] | None = None


def _jax_runner(model: JaxModel) -> Runner:
    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import jax
        import jax.numpy as jnp

        # JAX arrays, as a traced call would see them (`x.at[i].set(...)` needs one).
        args = [jnp.asarray(a) for a in inputs.values()]
        out = model.fn(model.params, *args) if model.params is not None else model.fn(*args)
        return [np.asarray(o) for o in jax.tree_util.tree_leaves(out)]
    return run


def _load_jax(model: JaxModel) -> Source:
    from ..frontends.jax import from_jax

    module = from_jax(model.fn, model.example_args, params=model.params, names=model.names)
    name = getattr(model.fn, "__name__", "function")
    return Source(module, "jax", _jax_runner(model), f"JAX function '{name}'")


def _user_code_error(path: Path, what: str, e: BaseException) -> ConversionError:
    """The user's code failed: an error pointing at their line, not ours."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if Path(f.filename).resolve() == path.resolve()]
    where = f"{path}:{frames[-1].lineno}: " if frames else f"{path}: "
    return ConversionError(f"{where}{what} failed: {type(e).__name__}: {e}")


def import_user_file(path: Path, why: str):
    """Runs the Python file `path` as a fresh module and returns it (ConversionError naming
    the user's line when it fails)."""
    import importlib.util

    try:
        found = path.is_file()
    except OSError:         # a name too long to look up
        found = False
    if not found:
        raise ConversionError(f"no such file: {path} ({why})")
    if path.suffix != ".py":
        raise ConversionError(f"{path} is not a Python file ({why})")
    module_name = f"tensorforge_user_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    mod = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(mod)
    except Exception as e:
        raise _user_code_error(path, "importing it", e) from None
    return mod


def custom_objects_from(spec) -> dict[str, Any]:
    """Keras `custom_objects` from what a user gives: a dict (as Keras takes it), an imported
    module or the path of a `.py` file (its classes and functions by name; importing it also
    runs its `@keras.saving.register_keras_serializable` decorators), or a list of those."""
    import inspect
    import types

    if spec is None:
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, (list, tuple)):
        out: dict[str, Any] = {}
        for item in spec:
            out.update(custom_objects_from(item))
        return out
    if isinstance(spec, (str, Path)):
        spec = import_user_file(Path(spec), "custom objects")
    if isinstance(spec, types.ModuleType):
        return {name: obj for name, obj in vars(spec).items()
                if (inspect.isclass(obj) or inspect.isfunction(obj))
                and getattr(obj, "__module__", None) == spec.__name__}
    raise ConversionError(f"custom_objects must be a dict, a module, a .py path or a list of "
                          f"those, got {type(spec).__name__}")


def _load_factory(spec: str, **options) -> Source:
    """`path/to/file.py:factory`: imports the file and compiles what `factory()` returns (a
    Keras model or a JaxModel)."""
    file, _, attr = spec.rpartition(":")
    path = Path(file)
    mod = import_user_file(path, f"from source '{spec}'")
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise ConversionError(f"{path} has no function '{attr}'")
    try:
        made = factory()
    except ConversionError:
        raise
    except Exception as e:
        raise _user_code_error(path, f"{attr}()", e) from None
    if isinstance(made, (Module, JaxModel)) or _is_keras_model(made):
        return load_source(made, **options)
    raise ConversionError(f"{spec} returned a {type(made).__name__}; expected a Keras model, "
                          f"a tensorforge.JaxModel or a Module")


def _refuse_input_shapes(input_shapes, why: str) -> None:
    if input_shapes:
        raise ConversionError(f"input_shapes (--input-shape) applies to Keras models; {why}")


def load_source(src: Any, *, safe_mode: bool = True, input_signature=None,
                signature: str = "serving_default", example_args=None, params=None,
                input_shapes=None, custom_objects=None) -> Source:
    """Lifts `src` into IR. Raises ConversionError for anything that is not a model.

    `src` may be a Module, a Keras model, a JaxModel, a JAX function (with `example_args`
    and optional `params`), a `.keras` file, a SavedModel directory, a `.tfir` file or
    `file.py:factory`. `input_shapes` ({input name: shape}; None or -1: the model's own size)
    fixes input shapes of a Keras model (any other source refuses it before lifting).
    `custom_objects` (see `custom_objects_from`) are the user's classes a `.keras` file
    names."""
    if isinstance(src, Module):
        _refuse_input_shapes(input_shapes, "an IR module has its own shapes")
        return Source(src, "module", None, "IR module")
    if isinstance(src, JaxModel):
        _refuse_input_shapes(input_shapes, "a JAX function takes its shapes from example_args")
        return _load_jax(src)
    if callable(src) and example_args is not None and not _is_keras_model(src):
        _refuse_input_shapes(input_shapes, "a JAX function takes its shapes from example_args")
        return _load_jax(JaxModel(src, example_args, params))
    if isinstance(src, str) and ":" in src and src.rpartition(":")[0].endswith(".py"):
        return _load_factory(src, safe_mode=safe_mode, input_signature=input_signature,
                             input_shapes=input_shapes,
                             signature=signature)
    if _is_keras_model(src):
        from ..frontends.keras import from_keras

        module = from_keras(src, input_signature, input_shapes=input_shapes)
        return Source(module, "keras", _keras_runner(src, list(module.metadata["output_names"])),
                      f"Keras model '{src.name}'")
    if not isinstance(src, (str, Path)):
        hint = " (a JAX function also needs example_args=...)" if callable(src) else ""
        raise ConversionError(f"cannot compile a {type(src).__name__}{hint}: expected a Keras "
                              f"model, a JAX function or JaxModel, a .keras file, a SavedModel "
                              f"directory, a .tfir file, file.py:factory or a Module")
    path = existing_path(src)
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ConversionError(f"{path} is a directory but not a SavedModel "
                                  f"(no saved_model.pb)")
        _refuse_input_shapes(input_shapes, "a SavedModel takes its shapes from its signature")
        from ..frontends.tf import from_saved_model

        module = from_saved_model(str(path), signature=signature)
        names = list(module.metadata.get("output_names", ()))
        return Source(module, "savedmodel", _savedmodel_runner(str(path), signature, names),
                      f"SavedModel {path} [{signature}]")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        from ..frontends.keras import from_keras, load_keras_file

        model = load_keras_file(path, safe_mode=safe_mode,
                                custom_objects=custom_objects_from(custom_objects))
        module = from_keras(model, input_signature, input_shapes=input_shapes)
        return Source(module, "keras", _keras_runner(model, list(module.metadata["output_names"])),
                      f"Keras file {path}")
    if suffix == ".tfir":
        _refuse_input_shapes(input_shapes, "an IR file has its own shapes")
        from ..ir.text import parse_module
        from .files import read_text

        return Source(parse_module(read_text(path), str(path)), "tfir", None, f"IR file {path}")
    raise ConversionError(f"{path}: unknown source type '{suffix or '(none)'}' (expected .keras, "
                          f".tfir or a SavedModel directory)")
