"""Repeated blocks traced once: while a Keras model is traced into a TF graph, the second and
later calls of a transformer block that is a copy of one already traced (same class and
configuration, sub-layers and weights of the same shapes, called on tensors of the same
types) get the first block's TF operations imported again under their own names, instead of
running Keras's Python again.

Why: a KerasHub backbone is a stack of N identical blocks, and tracing costs TensorFlow's
Python graph building per op (~0.25 ms an op; a tiny BERT's 326 ops are most of its
conversion). Importing a block's NodeDefs is one C++ call.

The copy is exactly what tracing the block would have created: the same ops with the block's
name scope in place of the first block's (every op a block's call creates sits in its scope,
or nothing is reused) and each sub-layer's name in place of its counterpart's (Keras numbers
unnamed sub-layers per process: one block's `softmax_1` is the next one's `softmax_2`; TF's
`_N` scope suffixes are kept), the first block's inputs replaced by the block's own, each
variable read (a placeholder of the variable binding scope, frontends/keras/lift.py) bound to
the block's own variable at the same position, and TF's registry of used names extended as
creating the ops would have. The lifter then sees the graph a full trace makes, so the
artifacts are byte for byte the same (tests/test_block_reuse.py compares them on KerasHub
BERT, RoBERTa, DistilBERT and GPT-2 backbones, at run-time and fixed shapes). Anything it
cannot copy exactly (an op outside the block's scope, a read of a tensor that is not an
input, a name already taken, TF refusing the import) makes that block traced as usual.

Only classes known to compute from their configuration, weights and inputs alone are reused
(`REUSABLE`): a layer keeping other per-instance state could trace differently with an equal
configuration. Blocks with a layer quantized by Keras are not (their weights are traced as
constants, frontends/keras/quantized.py). `TENSORFORGE_KERAS_BLOCK_REUSE=0` turns it off."""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

ENV = "TENSORFORGE_KERAS_BLOCK_REUSE"

# KerasHub's generic transformer blocks (class paths): their calls read only their
# configuration, their sub-layers and weights, and their arguments.
REUSABLE = frozenset({
    "keras_hub.src.layers.modeling.transformer_encoder.TransformerEncoder",
    "keras_hub.src.layers.modeling.transformer_decoder.TransformerDecoder",
})


def class_path(layer) -> str:
    """The dotted path of a layer's exact class (rules and allow-lists key on it)."""
    cls = type(layer)
    return f"{cls.__module__}.{cls.__qualname__}"


def _enabled() -> bool:
    return os.environ.get(ENV, "1").strip() not in ("0", "false", "no")


def _config_key(layer) -> Any:
    """The layer's configuration and its sub-layers', names left out, as a comparable value;
    None when a configuration cannot be read."""
    try:
        configs = []
        for sub in layer._flatten_layers(include_self=True, recursive=True):
            if getattr(sub, "quantization_mode", None):
                # Quantized by Keras: traced with its own dequantized weights built in as
                # constants (frontends/keras/quantized.py), which a copy would share.
                return None
            config = dict(sub.get_config())
            config.pop("name", None)
            configs.append((class_path(sub), repr(sorted(config.items(), key=lambda kv: kv[0]))))
        return tuple(configs)
    except Exception:
        return None


def _weights_key(layer) -> tuple:
    return tuple((tuple(w.shape), str(w.dtype)) for w in layer.weights)


class _Recorded:
    """What the first block's call created: its ops, its scope, its inputs and outputs."""

    def __init__(self, layer, scope, ops, inputs, outputs, reads):
        self.layer, self.scope, self.ops = layer, scope, ops
        self.inputs, self.outputs, self.reads = inputs, outputs, reads


def _tensors(tree) -> list:
    import tensorflow as tf

    return [t for t in tf.nest.flatten(tree) if isinstance(t, tf.Tensor)]


def _arg_key(args, kwargs) -> Any:
    """The call's structure, tensor types and other argument values, comparable."""
    import tensorflow as tf

    def key(x):
        if isinstance(x, tf.Tensor):
            return ("tensor", x.dtype.name, tuple(x.shape.as_list()))
        return ("value", repr(x))
    return repr((tf.nest.map_structure(key, list(args)), sorted(
        (k, tf.nest.map_structure(key, v)) for k, v in kwargs.items())))


@contextlib.contextmanager
def reuse_repeated_blocks(model, variables: dict):
    """While tracing `model` in this block, repeated REUSABLE blocks are imported from the
    first one's trace (see the module docstring). `variables` is the variable binding
    scope's {placeholder name: tf.Variable}, extended with the copies' reads."""
    if not _enabled():
        yield
        return
    groups: dict = {}
    try:
        layers = model._flatten_layers(include_self=False, recursive=True)
    except Exception:
        layers = []
    for layer in layers:
        if class_path(layer) not in REUSABLE:
            continue
        key = (class_path(layer), _config_key(layer), _weights_key(layer))
        if key[1] is not None:
            groups.setdefault(key, []).append(layer)
    patched = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first: dict = {}      # argument key -> _Recorded of the first call with it
        for layer in members:
            layer.call = _reusing_call(layer, layer.call, first, variables)
            patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.call      # back to the class's method


def _reusing_call(layer, original, first: dict, variables: dict):
    def call(*args, **kwargs):
        import tensorflow as tf

        graph = tf.compat.v1.get_default_graph()
        try:
            key = _arg_key(args, kwargs)
        except Exception:   # arguments this does not know how to compare: trace as usual
            return original(*args, **kwargs)
        recorded = first.get(key)
        if recorded is not None and recorded.layer is not layer:
            try:
                outputs = _import_copy(graph, recorded, layer, args, kwargs, variables)
            except Exception:   # TF refused the import (atomically): trace as usual
                outputs = None
            if outputs is not None:
                return outputs
        before = len(graph.get_operations())
        read_names = set(variables)
        scope = graph.get_name_scope()
        outputs = original(*args, **kwargs)
        if recorded is None:
            ops = graph.get_operations()[before:]
            reads = [(name, variables[name]) for name in variables if name not in read_names]
            first[key] = _Recorded(layer, scope, ops, _tensors((args, kwargs)), outputs,
                                   reads)
        return outputs
    return call


_UNIQUIFIED = re.compile(r"_\d+$")


def _children(layer) -> list:
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except Exception:
        return []


def _renamer(first, layer, old: str, new: str):
    """Maps a name under the first block's scope `old` to the one tracing `layer` in scope
    `new` gives: each scope component that names a sub-layer of the first block (its name,
    plus any `_N` TF added to make the scope unique) becomes the name of `layer`'s sub-layer
    at the same place, with the same suffix (Keras numbers unnamed sub-layers per process:
    one block's `softmax_1` is the next one's `softmax_2`). None when the two blocks' trees
    of sub-layers differ."""
    # Each pair of sub-layer lists is walked once (a name renamed walks one pair per scope
    # component), and each name is renamed once (op names come back as input references).
    children_of: dict = {}
    renamed: dict = {}

    def pairs(a, b):
        key = (id(a), id(b))
        if key not in children_of:
            ca, cb = _children(a), _children(b)
            same = len(ca) == len(cb) and all(type(x) is type(y) for x, y in zip(ca, cb))
            children_of[key] = list(zip(ca, cb)) if same else None
        return children_of[key]

    if pairs(first, layer) is None:
        return None

    def rename(name: str) -> str:
        if name in renamed:
            return renamed[name]
        parts = name[len(old):].split("/")
        level = (first, layer)
        for k, part in enumerate(parts[:-1]):
            children = pairs(*level) if level is not None else None
            hit = None
            for a, b in children or []:
                if part == a.name or (part.startswith(a.name) and
                                      _UNIQUIFIED.fullmatch(part[len(a.name):])):
                    if hit is None or len(a.name) > len(hit[0].name):
                        hit = (a, b)
            if hit is None:
                level = None        # a plain name scope: nothing below it is a layer
                continue
            parts[k] = hit[1].name + part[len(hit[0].name):]
            level = hit
        renamed[name] = new + "/".join(parts)
        return renamed[name]
    return rename


def _import_copy(graph, recorded: _Recorded, layer, args, kwargs, variables: dict):
    """`layer`'s call as a renamed import of `recorded`'s ops, or None when it cannot be
    one exactly (then the layer is traced as usual)."""
    import tensorflow as tf

    scope = graph.get_name_scope()
    old = recorded.scope + "/"
    new = scope + "/"
    if not recorded.scope or not scope or old == new:
        return None
    ops = recorded.ops
    names = {op.name for op in ops}
    if not all(op.name.startswith(old) for op in ops):
        return None     # an op outside the block's scope: its name may depend on order
    rename = _renamer(recorded.layer, layer, old, new)
    if rename is None:
        return None
    # The block's variables at the positions of the first block's.
    position = {id(getattr(w, "_value", w)): i for i, w in enumerate(recorded.layer.weights)}
    mine = [getattr(w, "_value", w) for w in layer.weights]
    reads = []
    for name, variable in recorded.reads:
        i = position.get(id(variable))
        if i is None or not name.startswith(old):
            return None
        reads.append((rename(name), mine[i]))
    inputs = _tensors((args, kwargs))
    if len(inputs) != len(recorded.inputs):
        return None
    input_map = {t.name: mine_t for t, mine_t in zip(recorded.inputs, inputs)}
    graph_def = tf.compat.v1.GraphDef()
    for op in ops:
        node = graph_def.node.add()
        node.CopyFrom(op.node_def)
        node.name = rename(node.name)
        for k, ref in enumerate(node.input):
            control = ref.startswith("^")
            producer, colon, port = (ref[1:] if control else ref).partition(":")
            if producer in names:
                node.input[k] = ("^" if control else "") + rename(producer) + colon + port
            elif control or (ref if ":" in ref else ref + ":0") not in input_map:
                return None     # reads a tensor that is not one of the block's inputs
    flat_outputs = tf.nest.flatten(recorded.outputs)
    if not all(isinstance(t, tf.Tensor) and t.op.name in names for t in flat_outputs):
        return None
    wanted = [rename(t.op.name) + ":" + str(t.value_index) for t in flat_outputs]
    # TF's registry of used names (op names and name scopes, lower-cased, with use counts):
    # nothing may be registered under the block's scope yet (or a trace would have numbered
    # its names differently), and afterwards it holds what tracing the block would have
    # registered: the first block's entries under this block's scope.
    in_use = graph._names_in_use
    old_key, new_key = old.lower(), new.lower()
    if any(k.startswith(new_key) for k in in_use):
        return None
    with graph.name_scope(None):
        imported = tf.graph_util.import_graph_def(
            graph_def, input_map=input_map, return_elements=wanted, name="")
    op_names = {op.name.lower(): op.name for op in ops}

    def renamed_key(key: str) -> str:
        if key in op_names:     # an op: its last part is its own name, kept as it is
            return rename(op_names[key]).lower()
        # A name scope: every part may name a layer, so it is renamed as a name inside it.
        return rename(old + key[len(old_key):] + "/_")[:-len("/_")].lower()

    for key, count in list(in_use.items()):
        if key.startswith(old_key):
            in_use[renamed_key(key)] = count
    for name, variable in reads:
        variables[name] = variable
    return tf.nest.pack_sequence_as(recorded.outputs, imported)
