"""Keras 3 -> IR: loads `.keras` files, traces the model and lifts the traced graph.

On the JAX backend the model's stateless call is lifted by the JAX frontend (`_lift_on_jax`).
On the TensorFlow backend the model is traced once, `model(inputs, training=False)` in a
graph whose inputs have a `None` batch (a bare FuncGraph for Functional/Sequential models, a
`tf.function` for subclassed ones), with each variable read bound to a placeholder instead of
a captured handle (`_variable_binding_scope`; docs/design/lifting.md), and the traced graph
is lifted by the TF frontend (`frontends/tf/lift.py`; no freezing, no TFLite converter: see
its docstring for why that is fast). Scopes are the
Keras layer paths: Keras 3 opens each layer's TF name scope twice per call, so a layer
`block_3_expand` shows up as `block_3_expand_1` in op names (`dense_1` as `dense_1_2`); the
scope function maps name-scope components back to layer names by walking the model's layer
tree.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ...ir.errors import ConversionError, Diagnostic
from ...ir.graph import Module
from ..jax import from_jax
from ..tf import lift_concrete_function
from ..tf.variables import VariableValues
from .block_reuse import reuse_repeated_blocks
from .block_rules import call_rules
from .direct import lift_direct
from .quantized import dequantized_tracing, fold_weight_transposes

_SUFFIX = re.compile(r"^(.*)_(\d+)$")


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def load_keras_file(path, *, safe_mode: bool = True,
                    custom_objects: Mapping[str, object] | None = None):
    """Loads a `.keras` archive with `keras.saving.load_model` (`custom_objects`: the user's
    classes and functions by name, as Keras takes them). Raises a one-line ConversionError
    for a missing or corrupt file, a class Keras cannot find, or a model that needs unsafe
    deserialization (a Lambda layer) while `safe_mode` is on."""
    p = Path(path)
    if not p.is_file():
        raise ConversionError(f"no such Keras file: {p}")
    if not zipfile.is_zipfile(p):
        raise ConversionError(f"{p} is not a valid .keras file (not a zip archive)")
    import keras

    stored = _stored_weights(p)
    _register_packages_of(p)
    try:
        model = keras.saving.load_model(str(p), safe_mode=safe_mode,
                                        custom_objects=dict(custom_objects or {}))
    except Exception as e:
        text = str(e)
        if "Could not locate" in text or "custom_objects" in text:
            raise ConversionError(
                f"cannot load Keras model {p}: {_one_line(e)} If the model uses your own "
                f"layers, pass custom_objects= (on the command line: --custom-objects "
                f"my_layers.py, a file that defines or registers them)") from None
        if "safe_mode" in text or "unsafe" in text.lower():
            raise ConversionError(
                f"{p} needs unsafe deserialization (it contains a Lambda layer or other "
                f"Python code); if you trust the file, pass safe_mode=False (on the command "
                f"line: --unsafe)") from None
        raise ConversionError(f"cannot load Keras model {p}: {_one_line(e)}") from None
    _check_weights(p, model, stored)
    return model


WEIGHTS = "model.weights.h5"


def _stored_weights(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{dataset path: (shape, dtype kind)} of the archive's HDF5 weights, read from its
    metadata (no data is read); ConversionError for a missing, truncated or corrupt weights
    file, or a dataset whose dtype is not a number. An archive without weights (a model that
    has none) gives {}."""
    import h5py

    out, problems = {}, []
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise ConversionError(f"{path} is not a valid .keras file (no config.json in the "
                                      f"archive)")
            if WEIGHTS not in names:
                return {}
            with z.open(WEIGHTS) as member, h5py.File(member, "r") as f:
                def visit(name, obj):
                    if not isinstance(obj, h5py.Dataset):
                        return
                    kind = obj.dtype.kind
                    if kind not in "biuf":
                        problems.append(Diagnostic(f"weight {name}: dtype {obj.dtype} is not "
                                                   f"numeric"))
                    out[name] = (tuple(obj.shape or ()), kind)
                f.visititems(visit)
    except ConversionError:
        raise
    except Exception as e:  # zipfile / HDF5 on damaged bytes: truncation, bad headers, ...
        raise ConversionError(f"cannot load Keras model {path}: its weights ({WEIGHTS}) are "
                              f"truncated or corrupt: {_one_line(e)}") from None
    if problems:
        raise ConversionError(f"cannot load Keras model {path}: bad weights", problems)
    return out


def _own_variables(layer) -> list:
    own = getattr(layer, "_trainable_variables", None)
    rest = getattr(layer, "_non_trainable_variables", None)
    if own is None or rest is None:
        return list(getattr(layer, "weights", []))
    return list(own) + list(rest)


def _snake_case(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _saved_layer_names(model) -> dict:
    """{name in the weights file: layer}: Keras saves a model's layers under their class
    name in snake case, numbered from the second of a class on (`re_lu`, `re_lu_1`)."""
    out, used = {}, {}
    for layer in getattr(model, "_layers", None) or getattr(model, "layers", []):
        name = _snake_case(type(layer).__name__)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        out[name] = layer
    return out


def _check_weights(path: Path, model, stored: dict) -> None:
    """Checks each top-level layer's variables (`layers/<name>/vars/<i>` in the archive)
    against the stored weights: the same number, shapes and dtype kinds (Keras casts an
    integer array into a float variable without a word). Every mismatch is listed."""
    per_layer: dict[str, dict[int, tuple]] = {}
    for key, meta in stored.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "layers" and parts[2] == "vars" and \
                parts[3].isdigit():
            per_layer.setdefault(parts[1], {})[int(parts[3])] = meta
    layers = _saved_layer_names(model)
    if not set(per_layer) <= set(layers):
        return      # another path scheme (nested containers): Keras matched the weights itself
    problems = []
    if per_layer:   # the file stores weights per layer: every layer with variables needs them
        for name, layer in layers.items():
            if name not in per_layer and _own_variables(layer):
                problems.append(Diagnostic(f"layer {layer.name!r} has {len(_own_variables(layer))} "
                                           f"variables but the file stores none for it"))
    for name, stored_vars in sorted(per_layer.items()):
        layer = layers.get(name)
        if layer is None:
            continue        # saved under another path scheme; Keras matched it itself
        variables = _own_variables(layer)
        name = layer.name
        if len(variables) != len(stored_vars):
            problems.append(Diagnostic(f"layer {name!r} has {len(variables)} variables, the "
                                       f"file stores {len(stored_vars)}"))
            continue
        for i, v in enumerate(variables):
            if i not in stored_vars:
                problems.append(Diagnostic(f"layer {name!r}: variable {i} is missing"))
                continue
            shape, kind = stored_vars[i]
            want_shape = tuple(int(d) for d in v.shape)
            dname = str(getattr(v.dtype, "name", v.dtype))
            want_kind = "f" if "float" in dname else "b" if dname == "bool" else "i"
            if shape != want_shape:
                problems.append(Diagnostic(f"layer {name!r} variable {i} ({v.name}): stored "
                                           f"shape {list(shape)}, declared {list(want_shape)}"))
            if (kind == "f") != (want_kind == "f") or (kind == "b") != (want_kind == "b"):
                problems.append(Diagnostic(f"layer {name!r} variable {i} ({v.name}): stored "
                                           f"dtype kind {kind!r}, declared {v.dtype}"))
    if problems:
        raise ConversionError(f"cannot load Keras model {path}: its weights do not match the "
                              f"model", problems)


# Packages whose Keras classes register themselves on import (`keras_hub>LlamaBackbone` in
# a saved config): imported, when installed, before a file that names them is loaded.
_REGISTERING_PACKAGES = ("keras_hub",)


def _register_packages_of(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            config = z.read("config.json").decode("utf-8", "replace")
    except (KeyError, OSError, zipfile.BadZipFile):
        return      # load_model reports what is wrong with the archive
    for package in _REGISTERING_PACKAGES:
        if f'"{package}' in config or f"{package}>" in config:
            try:
                __import__(package)
            except ImportError:
                pass    # load_model then names the class it cannot find


# -- signatures ------------------------------------------------------------------------------

def _input_layer_name(tensor, default: str) -> str:
    history = getattr(tensor, "_keras_history", None)
    op = getattr(history, "operation", None) if history is not None else None
    return getattr(op, "name", None) or getattr(tensor, "name", None) or default


def _model_inputs(model):
    """The model's symbolic inputs, or None (subclassed / unbuilt Sequential)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


def _signature(model, input_signature):
    """(TensorSpecs with a None batch, input names, dict keys or None)."""
    import tensorflow as tf

    struct = getattr(model, "_inputs_struct", None)
    keys = list(struct) if isinstance(struct, dict) else None
    inputs = _model_inputs(model)
    if input_signature is not None:
        specs = list(input_signature)
        if not all(isinstance(s, tf.TensorSpec) for s in specs):
            raise ConversionError("input_signature must be a list of tf.TensorSpec")
        if keys and len(keys) == len(specs):
            return specs, keys, keys
        if inputs and len(inputs) == len(specs):       # Keras' own names win
            names = [_input_layer_name(t, f"input_{i}") for i, t in enumerate(inputs)]
        else:
            names = [s.name or f"input_{i}" for i, s in enumerate(specs)]
        return specs, names, None
    if inputs is None:
        raise ConversionError(
            f"model '{model.name}' ({type(model).__name__}) has no known input shapes (a "
            f"subclassed or unbuilt model); pass input_signature=[tf.TensorSpec([None, ...], "
            f"dtype), ...]")
    if keys is not None:
        inputs = [struct[k] for k in keys]
    specs, names = [], []
    for i, t in enumerate(inputs):
        name = keys[i] if keys else _input_layer_name(t, f"input_{i}")
        shape = [None] + list(t.shape[1:])
        specs.append(tf.TensorSpec(shape, tf.as_dtype(t.dtype), name=name))
        names.append(name)
    return specs, names, keys


def with_input_shapes(specs: list, names: list[str], shapes: Mapping[str, Sequence]) -> list:
    """`specs` with the shapes of the inputs named in `shapes` replaced (a dim of None or -1
    keeps the model's own size, dynamic or not; the batch too may be fixed). Raises ConversionError listing every problem:
    an unknown input name, a wrong rank, a size that is not positive, a size the model fixes
    differently."""
    import tensorflow as tf

    problems = [Diagnostic(f"input_shapes names {k!r}, which is not an input (inputs: "
                           f"{', '.join(names)})") for k in shapes if k not in names]
    out = list(specs)
    for i, (spec, name) in enumerate(zip(specs, names)):
        if name not in shapes:
            continue
        dims = [None if d is None or d == -1 else d for d in shapes[name]]
        model_dims = spec.shape.as_list()
        if len(dims) != len(model_dims):
            problems.append(Diagnostic(f"input {name!r}: {len(dims)} dims given, the model's "
                                       f"input has {len(model_dims)} ({model_dims})"))
            continue
        for d, (want, have) in enumerate(zip(dims, model_dims)):
            if want is not None and (not isinstance(want, int) or want < 0):
                # 0 is a size: "no masks" decides a branch on the mask count (SAM).
                problems.append(Diagnostic(f"input {name!r}: dim {d} must be a size >= 0 "
                                           f"or None, got {want!r}"))
            elif want is not None and have is not None and want != have and d > 0:
                problems.append(Diagnostic(f"input {name!r}: dim {d} is {have} in the model, "
                                           f"not {want}"))
        # An unfixed dim keeps the model's own size (static, or dynamic where the model is).
        dims = [have if want is None else want for want, have in zip(dims, model_dims)]
        out[i] = tf.TensorSpec(dims, spec.dtype, name=spec.name)
    if problems:
        raise ConversionError("input_shapes does not fit the model's inputs", problems)
    return out


def _output_names(model, structured, n: int) -> list[str]:
    if isinstance(structured, dict):
        # tf.nest and JAX flatten dicts in sorted key order; a nested list or tuple under a
        # key (DETR-style hidden states per layer) gives `key_0`, `key_1`, ...
        names = _leaf_names(structured, "")
        if len(names) == n and len(set(names)) == n:
            return names
    names = getattr(model, "output_names", None)
    if not names and getattr(model, "_functional", None) is not None:
        names = getattr(model._functional, "output_names", None)   # Sequential
    names = list(names or [])
    if len(names) == n and len(set(names)) == n:
        return names
    return [f"output_{i}" for i in range(n)]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _keras_error_summary(e: BaseException) -> str:
    """Keras' "Exception encountered when calling X.call()." plus the message it wraps."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if lines[0].startswith("Exception encountered") and len(lines) > 1:
        inner = lines[1].split(". ")[0].rstrip(".")      # its first sentence
        return f"{lines[0]} {inner[:200]}."
    return lines[0]


def _python_control_flow(e: BaseException) -> bool:
    """True for the errors of Python `if` / `for` on a symbolic tensor under tracing."""
    import tensorflow as tf

    while e is not None:
        if isinstance(e, tf.errors.OperatorNotAllowedInGraphError) or (
                isinstance(e, TypeError) and "Tensor" in str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def _leaf_names(tree, prefix: str) -> list[str]:
    if isinstance(tree, dict):
        return [name for k in sorted(tree)
                for name in _leaf_names(tree[k], f"{prefix}_{k}" if prefix else str(k))]
    if isinstance(tree, (list, tuple)):
        return [name for i, x in enumerate(tree)
                for name in _leaf_names(x, f"{prefix}_{i}" if prefix else f"output_{i}")]
    return [prefix or "output_0"]


# -- scopes ----------------------------------------------------------------------------------

def _layer_tree(layer, depth: int = 0) -> dict:
    """{child layer name: its own tree}, for the layers Keras tracks under `layer`."""
    tree = {}
    if depth > 32:
        return tree
    try:
        children = layer._flatten_layers(include_self=False, recursive=False)
    except Exception:
        children = []
    for child in children:
        tree.setdefault(child.name, _layer_tree(child, depth + 1))
    return tree


def _match(component: str, names) -> str | None:
    # Prefer the name with Keras' `_N` suffix removed: `dense_1` is layer `dense`'s scope,
    # even when a layer named `dense_1` exists too (its scope would be `dense_1_1`/`_2`).
    m = _SUFFIX.match(component)
    if m and m.group(1) in names:
        return m.group(1)
    return component if component in names else None


def keras_scope_fn(model) -> Callable[[str], str]:
    """Maps a TF node name to its Keras layer path (`encoder_0/attention`, `block_3_expand`):
    the model's own scope and the trailing op name are dropped, and so are name scopes below
    the innermost layer (`moments`, `Tensordot`, ...)."""
    tree = _layer_tree(model)

    def scope(name: str) -> str:
        parts, out = _layer_path(name, model.name, tree)
        if not out and parts:
            # Not a tracked layer (an ad-hoc tf.name_scope): keep the raw name scope.
            return "/".join(parts)
        return "/".join(out)
    return scope


def _layer_path(name: str, top: str, tree: dict) -> tuple[list[str], list[str]]:
    """(the name scopes of TF node `name` below the layer `top`, the leading ones that are
    tracked layers in `tree`)."""
    parts = name.split("/")[:-1]
    if parts and (parts[0] == top or _match(parts[0], {top}) == top):
        parts = parts[1:]
    out, level = [], tree
    for comp in parts:
        hit = _match(comp, level)
        if hit is None:
            break
        out.append(hit)
        level = level[hit]
    return parts, out


def _layer_scope_fn(layer, prefix: str) -> Callable[[str], str]:
    """Scopes for a layer traced on its own: `prefix` (the layer's path in the model) plus
    the path of the tracked sub-layer a TF node was made in; name scopes that are not layers
    (`convolution`, `moments`) stay in the layer's scope, as in a whole-model trace."""
    tree = _layer_tree(layer)
    top = layer.name
    outside = prefix.rpartition("/")[0]

    def scope(name: str) -> str:
        first = name.split("/")[0] if "/" in name else ""
        if first != top and _match(first, {top}) != top:
            # Made outside the layer's name scope (Keras casting the inputs to its compute
            # dtype): the enclosing model's scope, as in a whole-model trace.
            return outside
        return "/".join([prefix] * bool(prefix) + _layer_path(name, top, tree)[1])
    return scope


# -- entry point -----------------------------------------------------------------------------

def _is_keras_model(obj) -> bool:
    try:
        import keras
    except ImportError:
        return False
    return isinstance(obj, keras.Model)


def from_keras(model_or_path, input_signature: Sequence | None = None, *,
               input_shapes: Mapping[str, Sequence] | None = None,
               safe_mode: bool = True, custom_objects: Mapping[str, object] | None = None
               ) -> Module:
    """Lifts a Keras model (Sequential, Functional or subclassed) or a `.keras` file into a
    Module. The batch dim is the symbol `batch`. A subclassed model without built input
    shapes needs `input_signature` (a list of tf.TensorSpec). `input_shapes` fixes the shapes
    of named inputs (`{"token_ids": (1, 128)}`; None or -1 leaves a dim as the model has it), for a static
    artifact. Raises ConversionError for unreadable files, untraceable models and unsupported
    ops (all of them at once)."""
    if isinstance(model_or_path, (str, os.PathLike)):
        model = load_keras_file(model_or_path, safe_mode=safe_mode,
                                custom_objects=custom_objects)
    else:
        model = model_or_path
    if not _is_keras_model(model):
        raise ConversionError(f"from_keras expects a keras.Model or a .keras path, got "
                              f"{type(model).__name__}")
    import tensorflow as tf

    specs, input_names, keys = _signature(model, input_signature)
    if input_shapes:
        specs = with_input_shapes(specs, input_names, input_shapes)
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return _lift_on_jax(model, specs, input_names, keys)
    if backend != "tensorflow":
        raise ConversionError(f"Keras runs on the {backend!r} backend; tensorforge lifts Keras "
                              f"models on the 'tensorflow' and 'jax' backends (set "
                              f"KERAS_BACKEND before importing keras)")
    functional = hasattr(model, "_inputs_struct") or type(model).__name__ == "Sequential"
    values = VariableValues()   # each variable read once, whichever way the model is lifted
    if functional and input_signature is None and _direct_enabled():
        struct = getattr(model, "_inputs_struct", None)
        keras_inputs = [struct[k] for k in keys] if keys is not None else _model_inputs(model)
        module = lift_direct(model, keras_inputs or [], specs, input_names,
                             lambda structured, n: _output_names(model, structured, n),
                             trace_layer=_trace_layer, values=values,
                             call_rules=call_rules())
        if module is not None:
            return module

    def call(*args):
        if keys is not None:
            x = dict(zip(keys, args))
        else:
            x = args[0] if len(args) == 1 else list(args)
        return model(x, training=False)

    try:
        # Layers Keras quantized trace their float call on their stored integer codes.
        with dequantized_tracing(model) as keras_quantization:
            try:
                concrete, variables = _trace(call, specs, functional, model)
            except Exception:
                # Code that needs the variables themselves while tracing (a GradientTape
                # taking gradients with respect to a weight in `call`): trace as TF does,
                # every read a ReadVariableOp of the captured variable.
                concrete, variables = tf_function_trace(call, specs), {}
    except ConversionError:
        raise
    except Exception as e:
        hint = ""
        if _python_control_flow(e):
            hint = (" (a layer loops or branches in Python on a value only known when the "
                    "model runs, such as a run-time size; fixing the input dims with "
                    "input_shapes= / --input-shape gives it a value)")
        raise ConversionError(f"tracing Keras model '{model.name}' failed: "
                              f"{type(e).__name__}: {_keras_error_summary(e)}{hint}") from None
    output_names = _output_names(model, concrete.structured_outputs, len(concrete.outputs))
    module = lift_concrete_function(concrete, input_names=input_names, output_names=output_names,
                                    scope_fn=keras_scope_fn(model), source="keras",
                                    metadata=keras_quantization.metadata(),
                                    variables=variables, variable_values=values)
    if keras_quantization.layers:
        fold_weight_transposes(module)
    return module


DIRECT_ENV = "TENSORFORGE_KERAS_DIRECT"     # "0": always trace the whole model


def _direct_enabled() -> bool:
    return os.environ.get(DIRECT_ENV, "1").strip() not in ("0", "false", "no")


def _trace_layer(ctx, layer, args, kwargs):
    """A layer direct lifting has no rule for (frontends/keras/direct.py), traced on its own:
    its call on placeholders traced into a FuncGraph (variable reads bound as in `_trace`),
    lifted by the TF lifter with the layer's scope, and inlined. Only where the result is
    what tracing the whole model would give: no masks (a layer that computes one would
    change what later layers do), no Keras quantization, inputs and outputs with static dims
    past the batch (symbolic dims of a separate lift would not be the model's)."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import func_graph as func_graph_module

    from ...ir.graph import Value
    from .direct import NoRule

    if (getattr(type(layer), "compute_mask", None) not in (None, keras.layers.Layer.compute_mask)
            or getattr(layer, "mask_zero", False) or getattr(layer, "quantization_mode", None)):
        raise NoRule(f"{type(layer).__name__} is not traced on its own")
    if _layer_tree(layer):
        # A layer made of layers (Bidirectional, a custom block): TF uniquifies its
        # sub-layers' name scopes per trace, so their scopes would not be the whole-model
        # trace's; the whole model is traced instead.
        raise NoRule(f"{type(layer).__name__} holds layers")
    flat = keras.tree.flatten((args, kwargs))
    values = [v for v in flat if isinstance(v, Value)]
    if any(not isinstance(x, (Value, str, int, float, bool, type(None))) for x in flat):
        raise NoRule("call arguments that are neither tensors nor Python scalars")
    for v in values:
        if any(not isinstance(d, int) for d in v.type.shape[1:]):
            raise NoRule("run-time dims past the batch")
    specs = [tf.TensorSpec([None if isinstance(v.type.shape[0], str) else v.type.shape[0],
                            *v.type.shape[1:]], v.type.dtype.np) for v in values]
    variables: dict = {}
    scope = _variable_binding_scope(variables)
    if getattr(layer, "_call_has_training_arg", False) and "training" not in kwargs:
        kwargs = {**kwargs, "training": False}

    def traced(*tensors):
        scope.graph = tf.compat.v1.get_default_graph()
        it = iter(tensors)
        call_args, call_kwargs = keras.tree.map_structure(
            lambda x: next(it) if isinstance(x, Value) else x, (args, kwargs))
        with scope:
            return layer(*call_args, **call_kwargs)

    try:
        graph = func_graph_module.func_graph_from_py_func(
            "layer", traced, None, None, signature=specs, add_control_dependencies=False)
        n_out = len(graph.outputs)
        sub = lift_concrete_function(
            _Traced(graph), input_names=[f"input_{i}" for i in range(len(values))],
            output_names=[f"output_{i}" for i in range(n_out)],
            scope_fn=_layer_scope_fn(layer, ctx.scope), source="keras", variables=variables,
            variable_values=ctx.values)
    except Exception as e:
        raise NoRule(f"tracing {layer.name} alone failed: {e}") from None
    for v in sub.main.outputs:
        dims = v.type.shape
        if not dims or any(not isinstance(d, int) for d in dims[1:]) or \
                not (isinstance(dims[0], int) or dims[0] == "batch"):
            raise NoRule(f"{layer.name} gives an output with run-time dims")
    for v in sub.main.outputs:
        v.name = None       # the layer's results are intermediates of the model
    mark = ctx.graph.last
    outs = ctx.graph.inline(sub.main, values)
    # One unit for a reorder (direct.py, `depth_first_order`): the lifter ordered its nodes.
    ctx.one_op(mark, values)
    return keras.tree.pack_sequence_as(graph.structured_outputs, outs)


class _Traced:
    """What the TF lifter reads of a ConcreteFunction, for a FuncGraph traced directly."""

    def __init__(self, graph):
        self.graph = graph
        self.inputs, self.outputs = list(graph.inputs), list(graph.outputs)
        self.structured_outputs = graph.structured_outputs


def _variable_binding_scope(variables: dict):
    """A Keras StatelessScope that, while the model is traced, hands each read of a
    variable in the function being traced a fresh placeholder of the variable's dtype and
    shape (named `ReadVariableOp`, in the name scope the read happens in, as the op it
    replaces) and records it in `variables` (placeholder name -> tf.Variable); the lifter
    binds it to the variable's value (`lift_concrete_function(variables=...)`).

    Capturing a variable's resource handle into the graph and reading it costs ~1.5 ms per
    read in TensorFlow's Python (a captured placeholder, a ReadVariableOp, automatic control
    dependencies on every stateful read); a bare placeholder costs a tenth of that. Reads
    anywhere else (a loop body, a nested function, eager code) get None, so Keras reads the
    variable as usual there, and an assignment made while tracing is seen by later reads
    (StatelessScope keeps it)."""
    import tensorflow as tf
    from keras.src.backend.common.stateless_scope import StatelessScope
    from tensorflow.core.framework import attr_value_pb2

    class Scope(StatelessScope):
        graph = None        # the function being traced; set when its body starts

        def get_current_value(self, variable):
            value = super().get_current_value(variable)
            if value is not None:
                return value
            tf_variable = getattr(variable, "_value", None)
            graph = tf.compat.v1.get_default_graph()
            if graph is not self.graph or not isinstance(tf_variable, tf.Variable):
                return None
            dtype = tf_variable.dtype
            op = graph._create_op_internal(
                "Placeholder", [], [dtype], name="ReadVariableOp",
                attrs={"dtype": attr_value_pb2.AttrValue(type=dtype.as_datatype_enum),
                       "shape": attr_value_pb2.AttrValue(
                           shape=tf_variable.shape.as_proto())})
            variables[op.name] = tf_variable
            return op.outputs[0]

    return Scope()


def tf_function_trace(call, specs):
    """`call` traced by `tf.function` with no variable binding (Keras reads variables as
    usual): the concrete function."""
    import tensorflow as tf

    return tf.function(call).get_concrete_function(*specs)


def _trace(call, specs, functional: bool, model=None):
    """(the traced function, {placeholder name: tf.Variable} of the variable reads bound to
    placeholders). Functional/Sequential models are traced straight into a FuncGraph: no
    AutoGraph (no Python control flow on tensors), no automatic control dependencies (the
    lifter follows data edges only) and no ConcreteFunction; subclassed models, which may
    need AutoGraph, through `tf.function`."""
    import tensorflow as tf

    variables: dict = {}
    scope = _variable_binding_scope(variables)

    def traced(*args):
        scope.graph = tf.compat.v1.get_default_graph()
        # Repeated transformer blocks are traced once and imported again (block_reuse.py).
        with scope, reuse_repeated_blocks(model, variables):
            return call(*args)

    if not functional:
        return tf.function(traced).get_concrete_function(*specs), variables
    from tensorflow.python.framework import func_graph as func_graph_module

    graph = func_graph_module.func_graph_from_py_func(
        "keras", traced, None, None, signature=list(specs), add_control_dependencies=False)
    return _Traced(graph), variables


def _lift_on_jax(model, specs, input_names: list[str], keys) -> Module:
    """Keras on the JAX backend: the model's stateless call, `fn(variables, *inputs)`, lifted
    by the JAX frontend. Variables become constants named by their Keras paths
    (`dense/kernel`), scopes come from the layers' JAX name scopes (the layer paths), dim 0 of
    every input is the symbol `batch` and any other run-time dim k the symbol `dim{k}`, shared
    by the inputs (token ids and their padding mask have one sequence length); inputs named
    `encoder_*` / `decoder_*` get `encoder_dim{k}` / `decoder_dim{k}`."""
    import jax

    # Constants are named by variable path; distinct variables sharing a path (T5's
    # per-layer relative attention biases) get `_1`, `_2`, ... suffixes.
    keys_of: dict[int, str] = {}
    taken: set[str] = set()
    for v in model.variables:
        key, n = v.path, 0
        while key in taken:
            n += 1
            key = f"{v.path}_{n}"
        taken.add(key)
        keys_of[id(v)] = key
    params = {keys_of[id(v)]: v.value for v in model.variables}
    trainable = [keys_of[id(v)] for v in model.trainable_variables]
    non_trainable = [keys_of[id(v)] for v in model.non_trainable_variables]

    def call(params, *xs):
        x = dict(zip(keys, xs)) if keys is not None else (xs[0] if len(xs) == 1 else list(xs))
        out, _ = model.stateless_call([params[p] for p in trainable],
                                      [params[p] for p in non_trainable], x, training=False)
        return out

    # Run-time dim k of an input is `dim{k}`, shared by the inputs of one sequence; an
    # encoder-decoder's encoder_* and decoder_* inputs have lengths of their own.
    dim_names = [[None if d is not None else "batch" if k == 0 else
                  f"{_sequence_group(name)}dim{k}" for k, d in enumerate(s.shape.as_list())]
                 for s, name in zip(specs, input_names)]
    names = ["batch"] + sorted({n for dims in dim_names for n in dims
                                if n is not None and n != "batch"})
    # JAX traces with symbolic sizes and refuses comparisons it cannot decide (`dim1 <= 32`
    # before slicing a position table of 32 rows). Such a comparison is a limit of the model
    # itself, so it becomes a constraint of the trace (reported in the module's metadata).
    constraints: list[str] = []
    for _ in range(_MAX_CONSTRAINTS + 1):
        symbols = dict(zip(names, jax.export.symbolic_shape(", ".join(names),
                                                            constraints=constraints)))
        args = [jax.ShapeDtypeStruct(
            tuple(symbols[n] if n is not None else d
                  for n, d in zip(dims, s.shape.as_list())), s.dtype.as_numpy_dtype)
            for s, dims in zip(specs, dim_names)]
        try:
            module = _trace_on_jax(model, call, params, args, input_names)
            break
        except _Inconclusive as e:
            if e.constraint is None or e.constraint in constraints or \
                    len(constraints) == _MAX_CONSTRAINTS:
                raise ConversionError(f"tracing Keras model '{model.name}' on JAX failed: "
                                      f"{e.message}") from None
            constraints.append(e.constraint)
    if constraints:
        module.metadata["assumptions"] = constraints
    module.metadata["source"] = "keras"
    return module


def _sequence_group(input_name: str) -> str:
    """`encoder_` / `decoder_` for KerasHub's encoder-decoder inputs, else ""."""
    for prefix in ("encoder_", "decoder_"):
        if input_name.startswith(prefix):
            return prefix
    return ""


_MAX_CONSTRAINTS = 8
_COMPARISON = re.compile(r"comparison '([^']+)' (<=|>=|<|>) '([^']+)' is inconclusive")


class _Inconclusive(Exception):
    """JAX could not decide a comparison of symbolic sizes; `constraint` is the assumption
    that decides it the way the model needs (None when it cannot be expressed)."""

    def __init__(self, message: str, constraint: str | None):
        super().__init__(message)
        self.message, self.constraint = message, constraint


def _inconclusive(e: BaseException) -> _Inconclusive | None:
    """The comparison in a JAX InconclusiveDimensionOperation (also wrapped by Keras or by
    from_jax's ConversionError, whose cause it is)."""
    while e is not None and "is inconclusive" not in str(e):
        e = e.__cause__
    if e is None:
        return None
    text = str(e)
    m = _COMPARISON.search(text)
    message = _one_line(e)
    if m is None:
        return _Inconclusive(message, None)
    a, op, b = m.groups()
    # The model compares to proceed when the comparison holds: assume it does.
    constraint = {"<=": f"{a} <= {b}", ">=": f"{a} >= {b}", "<": f"{a} <= {b} - 1",
                  ">": f"{a} >= {b} + 1"}[op]
    return _Inconclusive(message, constraint)


def _trace_on_jax(model, call, params, args, input_names):
    """from_jax on the stateless call; an inconclusive size comparison raises _Inconclusive."""
    import jax

    # The output structure names the outputs: a Functional model knows it; any other model is
    # traced once for it (from_jax traces again for the jaxpr).
    structured = getattr(model, "_outputs_struct", None)
    try:
        if structured is None:
            structured = jax.eval_shape(call, params, *args)
        n = len(jax.tree_util.tree_leaves(structured))
        return from_jax(call, args, params=params, names=input_names,
                        output_names=_output_names(model, structured, n))
    except ConversionError as e:
        found = _inconclusive(e)
        if found is not None:
            raise found from None
        raise
    except Exception as e:
        found = _inconclusive(e)
        if found is not None:
            raise found from None
        raise ConversionError(f"tracing Keras model '{model.name}' on JAX failed: "
                              f"{type(e).__name__}: {_one_line(e)}") from None

