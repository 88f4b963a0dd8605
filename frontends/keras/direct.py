"""Direct lifting: a Functional or Sequential Keras model (on the TensorFlow backend) becomes
IR layer by layer, each standard layer emitted straight from its config and weights, without
tracing TensorFlow.

Why: tracing costs TF's Python ~0.3 ms per op plus Keras's per-call machinery; on a
ResNet-sized model that was most of a conversion. A rule here emits a layer's IR nodes in
microseconds, with the same ops, scopes and constant names the traced path gives (the
canonicalizer then folds batch norms and biases the same way).

Exactness first: the IR is the traced path's, node for node, and so are the artifacts, byte
for byte. A rule emits the ops Keras's TF backend would create, in the order the TF lifter
lifts them (layers walked depth-first from the outputs, `_run_graph`), with constants folded
by the IR's own kernels as the lifter folds them (`_folded`). A rule covers one layer class
exactly (`type(layer) is Conv2D`: a subclass may override `call`) and only the
configurations it checks: float32 dtype policy and operands, channels last, no LoRA, no Keras
quantization, no call arguments beyond the tensors, no Keras mask. The rules for KerasHub's
text blocks (block_rules.py, `call_rules`) take keyword arguments (a padding mask) and
integer ids; their nodes cannot be emitted in the lifter's order, so a lift that used them
is put into it afterwards (`depth_first_order`). A layer without a rule, or outside what
its rule covers, is traced on its own (`_trace_layer` in lift.py: its TF graph lifted by the
TF lifter and inlined) when its inputs and outputs have static dims past the batch and it
makes no mask; anything else makes `lift_direct` return None and `from_keras` traces the
whole model. tests/test_keras_direct.py checks both paths against Keras and against each
other (TFLite bytes), tests/test_lifting_identity.py the recorded artifact hashes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ...ir.graph import Graph, Module, Value
from ...ir.ops import get_op
from ...ir.types import DType, TensorType
from ...version import package_version
from ..tf.lift import BATCH
from ..tf.variables import VariableValues
from .block_reuse import class_path


class NoRule(Exception):
    """The layer (or this use of it) is outside what direct lifting covers."""


class _Context:
    """The graph being built and where its nodes come from (scope = layer path)."""

    def __init__(self, graph: Graph, trace_layer: Callable | None,
                 values: VariableValues | None = None,
                 call_rules: dict[str, Callable] | None = None):
        self.graph = graph
        self.scope = ""
        self.loc = ""
        self.trace_layer = trace_layer
        self.op_rules = _op_rules()
        self.call_rules = call_rules or {}
        self.values = values if values is not None else VariableValues()
        # Set by a rule whose nodes are not emitted in the TF lifter's order (block_rules.py):
        # the graph is put into that order at the end (`depth_first_order`, which `units`
        # and `after` guide).
        self.reorder = False
        self.units: dict = {}   # Node -> ([nodes from one TF op], [that op's inputs])
        self.after: dict = {}   # Node -> [nodes the walk visits before its operands]

    def one_op(self, since, inputs: Sequence[Value]) -> None:
        """The nodes added after node `since` came from one TF op with `inputs` (in its
        order; `depth_first_order`)."""
        nodes = []
        node = self.graph.last
        while node is not None and node is not since:
            nodes.append(node)
            node = node.prev
        nodes.reverse()
        unit = (nodes, list(inputs))
        for n in nodes:
            self.units[n] = unit

    def forget_erased(self) -> None:
        """Drops what `units` and `after` say of nodes no longer in the graph."""
        self.units = {n: u for n, u in self.units.items() if n.graph is self.graph}
        self.after = {n: d for n, d in self.after.items() if n.graph is self.graph}

    def enter(self, layer, scope: str) -> None:
        """Nodes added next belong to `layer` at `scope` (their scope and location)."""
        self.scope, self.loc = scope, f"keras:{type(layer).__name__}:{scope}"

    def add(self, op: str, inputs: Sequence[Value], attrs: dict | None = None) -> Value:
        return self.graph.add(op, list(inputs), attrs or {}, scope=self.scope,
                              loc=self.loc).outputs[0]

    def const(self, array, name: str | None = None) -> Value:
        return self.graph.constant(array, name=f"{self.scope}/{name}" if name else None,
                                   scope=self.scope, loc=self.loc)

    def read(self, variable) -> np.ndarray:
        """A Keras variable's value, read without a copy (frontends/tf/variables.py: a
        read-only view of TF's read; those of `prefetch` read in one op)."""
        tf_variable = getattr(variable, "_value", None)
        if tf_variable is None or not hasattr(tf_variable, "handle"):
            raise NoRule("a variable that is not a TF resource variable")
        return self.values.get(tf_variable.handle, tf_variable.dtype.as_datatype_enum)

    def prefetch(self, variables) -> None:
        """Reads the TF resource variables among Keras `variables` in one op."""
        reads = []
        for variable in variables:
            tf_variable = getattr(variable, "_value", None)
            if tf_variable is not None and hasattr(tf_variable, "handle"):
                reads.append((tf_variable.handle, tf_variable.dtype.as_datatype_enum))
        self.values.prefetch(reads)

    def weight(self, variable) -> Value:
        """A Keras variable's value as a constant named `scope/name` (as the traced path
        names a variable read)."""
        return self.const(self.read(variable), variable.name)


# -- checks shared by the rules ----------------------------------------------------------------

def _require(cond: bool, why: str) -> None:
    if not cond:
        raise NoRule(why)


def _plain(layer) -> None:
    policy = getattr(layer, "dtype_policy", None)
    _require(getattr(policy, "name", "float32") == "float32", "a non-float32 dtype policy")
    _require(not getattr(layer, "quantization_mode", None), "a Keras-quantized layer")
    _require(not getattr(layer, "lora_enabled", False), "LoRA")
    _require(getattr(layer, "data_format", "channels_last") == "channels_last",
             "channels_first")


def _f32(*values: Value) -> None:
    for v in values:
        _require(isinstance(v, Value) and v.type.dtype == DType.f32, "a non-float32 operand")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)


def _padding(layer) -> str:
    p = str(layer.padding).lower()
    _require(p in ("valid", "same"), f"padding {p!r}")
    return p.upper()


def _activation(ctx: _Context, fn, x: Value) -> Value:
    """`fn` (a keras.activations function) applied to `x` as the traced path lifts it."""
    from keras import activations as A

    unary = {A.relu: "relu", A.relu6: "relu6", A.sigmoid: "sigmoid", A.tanh: "tanh",
             A.elu: "elu", A.softplus: "softplus"}
    if fn is None or fn is A.linear:
        return x
    if fn in unary:
        return ctx.add(unary[fn], [x])
    if fn is A.softmax:
        return ctx.add("softmax", [x], {"axis": -1})
    if fn is A.log_softmax:
        return ctx.add("log_softmax", [x], {"axis": -1})
    if fn in (A.silu, A.swish):
        return ctx.add("mul", [x, ctx.add("sigmoid", [x])])
    if fn is A.leaky_relu:
        return ctx.add("leaky_relu", [x], {"alpha": 0.2})
    # The ones Keras's TF backend computes in several ops: those ops, so that the
    # artifact is the traced path's.
    if fn in (A.hard_sigmoid, A.hard_silu, A.hard_swish):
        # relu6(x + 3) / 6, times x for hard_silu
        y = ctx.add("relu6", [ctx.add("add", [x, ctx.const(np.float32(3.0))])])
        y = ctx.add("div", [y, ctx.const(np.float32(6.0))])
        return y if fn is A.hard_sigmoid else ctx.add("mul", [x, y])
    if _is_gelu_approximate(fn):
        return _gelu_approximate(ctx, x)
    if fn is A.gelu:
        # tf.nn.gelu(approximate=False): 0.5 * x * erfc(-x / sqrt(2)), erfc as 1 - erf
        half = ctx.add("mul", [ctx.const(np.float32(0.5)), x])
        scaled = ctx.add("mul", [ctx.add("neg", [x]), ctx.const(np.float32(0.7071067811865476))])
        erfc = ctx.add("sub", [ctx.const(np.float32(1.0)), ctx.add("erf", [scaled])])
        return ctx.add("mul", [half, erfc])
    raise NoRule(f"activation {getattr(fn, '__name__', fn)!r}")


def _is_gelu_approximate(fn) -> bool:
    """KerasHub's `gelu_approximate` (its BERT-family feed-forward activation)."""
    return (getattr(fn, "__name__", None) == "gelu_approximate"
            and getattr(fn, "__module__", None) == "keras_hub.src.utils.keras_utils")


def _gelu_approximate(ctx: _Context, x: Value) -> Value:
    """tf.nn.gelu(x, approximate=True) as TF builds it:
    0.5 * x * (1 + tanh(0.7978845608 * (x + 0.044715 * x^3)))."""
    half = ctx.add("mul", [ctx.const(np.float32(0.5)), x])
    cube = ctx.add("pow", [x, ctx.const(np.float32(3.0))])
    inner = ctx.add("add", [x, ctx.add("mul", [ctx.const(np.float32(0.044715)), cube])])
    inner = ctx.add("mul", [ctx.const(np.float32(0.7978845608028654)), inner])
    return ctx.add("mul", [half, ctx.add("add", [ctx.const(np.float32(1.0)),
                                                  ctx.add("tanh", [inner])])])


def _folded(op: str, *arrays) -> np.ndarray:
    """`op` on constant operands through the IR's reference kernel: what the TF lifter's
    constant folding computes for the traced graph, so that the constants a rule emits are
    the traced path's bit for bit (and the artifacts byte for byte)."""
    opdef = get_op(op)
    with np.errstate(all="ignore"):
        return np.asarray(opdef.kernel([np.asarray(a) for a in arrays],
                                       opdef.complete_attrs({}))[0])


def _bias_and_activation(ctx: _Context, layer, y: Value, *, reshaped: bool = False) -> Value:
    """The bias add and activation of a conv or dense layer. A conv's bias is reshaped to
    [1, ..., C] and Keras's TF backend squeezes it back into a BiasAdd, so the traced graph
    holds an unnamed [C] constant (a [1, ..., 1] one when C is 1: no BiasAdd then); Dense
    adds the variable itself (named)."""
    if getattr(layer, "use_bias", False):
        if reshaped:
            bias = ctx.read(layer.bias)
            if bias.size == 1:
                bias = bias.reshape((1,) * y.type.rank)
            y = ctx.add("add", [y, ctx.const(bias)])
        else:
            y = ctx.add("add", [y, ctx.weight(layer.bias)])
    return _activation(ctx, getattr(layer, "activation", None), y)


# -- rules: (ctx, layer, inputs) -> outputs ------------------------------------------------------

def _conv2d(ctx, layer, x):
    _f32(x)
    _require(x.type.rank == 4, "a non-4-D input")
    c = x.type.shape[3]
    _require(isinstance(c, int) and c % layer.groups == 0, "unknown or uneven channels")
    y = ctx.add("conv2d", [x, ctx.weight(layer.kernel)], {
        "strides": _pair(layer.strides), "dilations": _pair(layer.dilation_rate),
        "padding": _padding(layer), "groups": int(layer.groups)})
    return _bias_and_activation(ctx, layer, y, reshaped=True)


def _depthwise(ctx, layer, x, kernel) -> Value:
    _f32(x)
    _require(x.type.rank == 4, "a non-4-D input")
    return ctx.add("depthwise_conv2d", [x, ctx.weight(kernel)], {
        "strides": _pair(layer.strides), "dilations": _pair(layer.dilation_rate),
        "padding": _padding(layer)})


def _depthwise_conv2d(ctx, layer, x):
    return _bias_and_activation(ctx, layer, _depthwise(ctx, layer, x, layer.kernel),
                                reshaped=True)


def _separable_conv2d(ctx, layer, x):
    y = _depthwise(ctx, layer, x, layer.depthwise_kernel)
    y = ctx.add("conv2d", [y, ctx.weight(layer.pointwise_kernel)], {"padding": "VALID"})
    return _bias_and_activation(ctx, layer, y, reshaped=True)


def _dense(ctx, layer, x):
    _f32(x)
    _require(x.type.rank >= 2, "a rank-1 input")
    y = ctx.add("matmul", [x, ctx.weight(layer.kernel)])
    return _bias_and_activation(ctx, layer, y)


def _batch_norm(ctx, layer, x):
    """Keras's TF backend computes `tf.nn.batch_normalization`: x * inv + (beta - mean * inv)
    with inv = rsqrt(var + eps) * gamma, every factor a constant the traced path folds (the
    statistics reshaped to the channel axis first when `axis` is not -1)."""
    _f32(x)
    axis = layer.axis if isinstance(layer.axis, int) else None
    rank = x.type.rank
    _require(axis is not None and -rank <= axis < rank, "a batch norm over several axes")
    _require(not getattr(layer, "renorm", False), "batch renormalization")

    def stat(variable):
        array = ctx.read(variable)
        if axis != -1:
            shape = [1] * rank
            shape[axis] = array.shape[0]
            array = array.reshape(shape)
        return array

    mean, var = stat(layer.moving_mean), stat(layer.moving_variance)
    inv = _folded("rsqrt", _folded("add", var, np.float32(layer.epsilon)))
    if layer.scale:
        inv = _folded("mul", inv, stat(layer.gamma))
    if layer.center:
        shift = _folded("sub", stat(layer.beta), _folded("mul", mean, inv))
    else:
        shift = _folded("mul", _folded("neg", mean), inv)
    y = ctx.add("mul", [x, ctx.const(inv)])
    return ctx.add("add", [y, ctx.const(shift)])


def _layer_norm(ctx, layer, x):
    """The ops Keras's TF backend gives (tf.nn.moments, then tf.nn.batch_normalization's
    formula), in the traced path's order, so the quantization passes see the same graph and
    the artifact is the same: mean and variance over the last axis, then
    x * inv + (-mean * inv + beta) with inv = rsqrt(var + eps) * gamma."""
    _f32(x)
    _require(not getattr(layer, "rms_scaling", False), "RMS scaling")
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = x.type.rank
    _require(sorted(a % rank for a in axes) == [rank - 1],
             "layer norm over axes other than the last")
    c = x.type.shape[-1]
    _require(isinstance(c, int), "a run-time normalized dim")
    stats = {"axes": (-1,), "keepdims": True}
    per_channel = (1,) * (rank - 1) + (c,)
    mean = ctx.add("reduce_mean", [x], stats)
    centered = ctx.add("sub", [x, mean])
    var = ctx.add("reduce_mean", [ctx.add("mul", [centered, centered])], stats)
    inv = ctx.add("rsqrt", [ctx.add("add", [var, ctx.const(np.float32(layer.epsilon))])])
    if layer.scale:
        inv = ctx.add("mul", [inv, ctx.const(ctx.read(layer.gamma).reshape(per_channel))])
    scaled = ctx.add("mul", [x, inv])
    shift = ctx.add("mul", [ctx.add("neg", [mean]), inv])
    if layer.center:
        shift = ctx.add("add", [shift, ctx.const(ctx.read(layer.beta).reshape(per_channel))])
    return ctx.add("add", [scaled, shift])


def _activation_layer(ctx, layer, x):
    _f32(x)
    return _activation(ctx, layer.activation, x)


def _relu(ctx, layer, x):
    _f32(x)
    slope, top, threshold = (float(layer.negative_slope), layer.max_value,
                             float(layer.threshold))
    _require(slope == 0.0 and threshold == 0.0, "a leaky or thresholded ReLU")
    if top is None:
        return ctx.add("relu", [x])
    _require(float(top) == 6.0, f"ReLU max_value {top}")
    return ctx.add("relu6", [x])


def _softmax(ctx, layer, x):
    _f32(x)
    axis = layer.axis if isinstance(layer.axis, int) else None
    _require(axis is not None, "softmax over several axes")
    return ctx.add("softmax", [x], {"axis": axis})


def _merge(op):
    def rule(ctx, layer, *xs):
        _f32(*xs)
        # Keras merges tensors of one rank, broadcasting (a squeeze-excite scale).
        _require(len({v.type.rank for v in xs}) == 1, "merging tensors of different ranks")
        y = xs[0]
        for x in xs[1:]:
            y = ctx.add(op, [y, x])
        return y
    return rule


def _concatenate(ctx, layer, *xs):
    _f32(*xs)
    return ctx.add("concat", list(xs), {"axis": int(layer.axis)})


def _zero_padding2d(ctx, layer, x):
    _f32(x)
    (t, b), (left, r) = layer.padding
    return ctx.add("pad", [x], {"pads": ((0, 0), (int(t), int(b)), (int(left), int(r)),
                                         (0, 0))})


def _pool(op):
    def rule(ctx, layer, x):
        _f32(x)
        _require(x.type.rank == 4, "a non-4-D input")
        return ctx.add(op, [x], {"ksize": _pair(layer.pool_size),
                                 "strides": _pair(layer.strides), "padding": _padding(layer)})
    return rule


def _global_pool(op):
    def rule(ctx, layer, x):
        _f32(x)
        _require(x.type.rank == 4, "a non-4-D input")
        return ctx.add(op, [x], {"axes": (1, 2), "keepdims": bool(layer.keepdims)})
    return rule


def _static_tail(x: Value) -> tuple[int, ...]:
    tail = x.type.shape[1:]
    _require(all(isinstance(d, int) for d in tail), "run-time dims past the batch")
    return tuple(tail)


def _flatten(ctx, layer, x):
    tail = _static_tail(x)
    return ctx.add("reshape", [x], {"shape": (-1, int(np.prod(tail, dtype=np.int64)))})


def _reshape(ctx, layer, x):
    tail = _static_tail(x)
    target = tuple(int(d) for d in layer.target_shape)
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
        _require(known > 0, "an empty reshape")
        target = tuple(int(np.prod(tail, dtype=np.int64)) // known if d == -1 else d
                       for d in target)
    _require(int(np.prod(target, dtype=np.int64)) == int(np.prod(tail, dtype=np.int64)),
             "a reshape that changes the element count")
    return ctx.add("reshape", [x], {"shape": (-1, *target)})


def _identity(ctx, layer, x):
    return x


def _rescaling(ctx, layer, x):
    _f32(x)
    scale = np.asarray(layer.scale, np.float32)
    offset = np.asarray(layer.offset, np.float32)
    return ctx.add("add", [ctx.add("mul", [x, ctx.const(scale)]), ctx.const(offset)])


def _binary_op(op):
    """A Keras op in a Functional graph (`x + y`, `keras.ops.multiply(x, 3.0)`): two float32
    tensors, or one and a Python number."""
    def rule(ctx, layer, args, kwargs):
        _require(not kwargs and len(args) == 2, "call arguments")
        _require(any(isinstance(a, Value) for a in args), "no tensor operand")
        operands = []
        for a in args:
            if isinstance(a, Value):
                _f32(a)
                operands.append(a)
            else:
                _require(isinstance(a, (int, float)) and not isinstance(a, bool),
                         "a non-number operand")
                operands.append(ctx.const(np.float32(a)))
        return ctx.add(op, operands)
    return rule


def _index(ctx, op, args, kwargs):
    """`x[key]` in a Functional graph (Keras's GetItem op) as TF's `_slice_helper` builds its
    StridedSlice: one spec entry per key item (a slice: its bounds, a missing one set in the
    begin/end mask; an int: [i, i + 1) with the shrink bit; Ellipsis and None: their mask
    bits). Keys of ints, int-or-None slices, Ellipsis and None only."""
    _require(not kwargs and len(args) == 2 and isinstance(args[0], Value), "call arguments")
    x, key = args
    key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    begin, end, strides = [], [], []
    masks = dict.fromkeys(("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                           "shrink_axis_mask"), 0)

    def whole(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    for i, item in enumerate(key):
        bit = 1 << i
        if isinstance(item, slice):
            for bound, values, mask in ((item.start, begin, "begin_mask"),
                                        (item.stop, end, "end_mask")):
                _require(bound is None or whole(bound), "a slice bound that is not an int")
                values.append(0 if bound is None else int(bound))
                if bound is None:
                    masks[mask] |= bit
            _require(item.step is None or (whole(item.step) and item.step != 0),
                     "a slice step that is not a nonzero int")
            strides.append(1 if item.step is None else int(item.step))
        elif item is Ellipsis or item is None:
            begin.append(0), end.append(0), strides.append(1)
            masks["ellipsis_mask" if item is Ellipsis else "new_axis_mask"] |= bit
        else:
            _require(whole(item), f"an index {item!r}")
            begin.append(int(item)), end.append(int(item) + 1), strides.append(1)
            masks["shrink_axis_mask"] |= bit
    _require(bin(masks["ellipsis_mask"]).count("1") <= 1, "two ellipses")
    return ctx.add("strided_slice", [x], {**masks, "begin": tuple(begin), "end": tuple(end),
                                          "strides": tuple(strides)})


def _op_rules() -> dict[type, Callable]:
    """Rules for Keras ops (not layers) recorded in Functional graphs: (ctx, op, args,
    kwargs) -> outputs."""
    from keras.src.ops import numpy as N

    return {N.Add: _binary_op("add"), N.Subtract: _binary_op("sub"),
            N.Multiply: _binary_op("mul"), N.Maximum: _binary_op("maximum"),
            N.Minimum: _binary_op("minimum"), N.GetItem: _index}


def _rules() -> dict[type, Callable]:
    from keras import layers as L

    rules = {
        L.Conv2D: _conv2d, L.DepthwiseConv2D: _depthwise_conv2d,
        L.SeparableConv2D: _separable_conv2d, L.Dense: _dense,
        L.BatchNormalization: _batch_norm, L.LayerNormalization: _layer_norm,
        L.Activation: _activation_layer, L.ReLU: _relu, L.Softmax: _softmax,
        L.Add: _merge("add"), L.Subtract: _merge("sub"), L.Multiply: _merge("mul"),
        L.Maximum: _merge("maximum"), L.Minimum: _merge("minimum"),
        L.Concatenate: _concatenate, L.ZeroPadding2D: _zero_padding2d,
        L.MaxPooling2D: _pool("max_pool2d"), L.AveragePooling2D: _pool("avg_pool2d"),
        L.GlobalAveragePooling2D: _global_pool("reduce_mean"),
        L.GlobalMaxPooling2D: _global_pool("reduce_max"),
        L.Flatten: _flatten, L.Reshape: _reshape, L.Rescaling: _rescaling,
        L.Dropout: _identity, L.SpatialDropout2D: _identity, L.GaussianNoise: _identity,
        L.GaussianDropout: _identity, L.AlphaDropout: _identity, L.Identity: _identity,
        L.ActivityRegularization: _identity,
    }
    return rules


# -- the walk ----------------------------------------------------------------------------------

def _call_args(args, kwargs) -> list[Value]:
    """The tensors a node passes to its layer: positional IR Values, or one list of them (a
    layer called with other arguments, such as a mask, is not covered by a rule)."""
    # Keras records `mask=None` (and callers may pass `training`): inference either way.
    _require(all(v is None or (k == "training" and v is False) for k, v in kwargs.items()),
             "call arguments")
    flat = []
    for a in args:
        if isinstance(a, (list, tuple)):
            flat.extend(a)
        else:
            flat.append(a)
    _require(all(isinstance(v, Value) for v in flat), "non-tensor call arguments")
    return flat


def _graph_model(layer):
    """The Functional graph that runs `layer` (a Sequential's own), or None."""
    if hasattr(layer, "_nodes_by_depth") and hasattr(layer, "_run_through_graph"):
        return layer
    inner = getattr(layer, "_functional", None)
    if inner is not None and hasattr(inner, "_run_through_graph"):
        return inner
    return None


def _erase_after(graph: Graph, mark) -> None:
    """Erases the nodes added after node `mark` (None: all of them), newest first."""
    while graph.last is not None and graph.last is not mark:
        graph.erase(graph.last)


def _lift_layers(ctx: _Context, model, inputs: list[Value], prefix: str, rules):
    """Runs `model`'s graph of layers on `inputs` (IR Values in `model.inputs` order), each
    layer through its rule (a nested Functional/Sequential model recursively, a layer
    without a rule through `ctx.trace_layer`); returns the outputs in the model's output
    structure."""
    import keras

    def operation_fn(layer):
        def call(*args, **kwargs):
            scope = f"{prefix}{layer.name}"
            inner = _graph_model(layer)
            if inner is not None:
                xs = _call_args(args, kwargs)
                _require(not isinstance(getattr(inner, "_inputs_struct", None), dict),
                         "a nested model with dict inputs")
                return _lift_layers(ctx, inner, xs, scope + "/", rules)
            rule = rules.get(type(layer))
            operands = [v for v in keras.tree.flatten((args, kwargs)) if isinstance(v, Value)]
            # The TF lifter folds an op whose operands are all constants (a fixed-batch
            # PositionEmbedding's output is one); the rules do not.
            _require(not operands or any(v.producer is None or v.producer.op != "constant"
                                         for v in operands), "constant operands only")
            saved = ctx.scope, ctx.loc
            ctx.enter(layer, scope)
            try:
                op_rule = ctx.op_rules.get(type(layer))
                if op_rule is not None:
                    # A Keras op is not a layer: its nodes sit in the enclosing model's
                    # scope, as the traced path's scope function puts them.
                    ctx.scope = prefix.rstrip("/")
                    return op_rule(ctx, layer, args, kwargs)
                call_rule = ctx.call_rules.get(class_path(layer)) if ctx.call_rules else None
                if call_rule is not None:
                    mark, reorder = ctx.graph.last, ctx.reorder
                    try:
                        return call_rule(ctx, layer, args, kwargs)
                    except NoRule:
                        # Nothing of the attempt stays: its nodes, their order notes, the
                        # reorder it asked for.
                        _erase_after(ctx.graph, mark)
                        ctx.forget_erased()
                        ctx.reorder = reorder
                        ctx.enter(layer, scope)
                if rule is not None:
                    mark = ctx.graph.last
                    try:
                        _plain(layer)
                        # Keras casts a float input to the layer's compute dtype in
                        # `__call__`: float32 operands only, or no cast is needed.
                        xs = _call_args(args, kwargs)
                        _f32(*xs)
                        return rule(ctx, layer, *xs)
                    except NoRule:
                        # A configuration the rule does not cover (an activation it does
                        # not know, a float16 operand): drop what it emitted, trace it.
                        _erase_after(ctx.graph, mark)
                _require(ctx.trace_layer is not None, f"no rule for {type(layer).__name__}")
                return ctx.trace_layer(ctx, layer, args, kwargs)
            finally:
                ctx.scope, ctx.loc = saved
        return call

    _require(len(model.inputs) == len(inputs), "an input count mismatch")
    return _run_graph(model, inputs, operation_fn)


def _run_graph(model, inputs: list[Value], operation_fn):
    """`model`'s layers run on `inputs` in the order the traced path lifts their ops: a
    depth-first walk from the outputs, each layer after the layers its inputs come from (in
    argument order). (Keras's own `_run_through_graph` goes by depth, a different order of
    independent branches: the nodes, and so the artifact's tensors, would be numbered
    differently.) Returns the outputs in the model's output structure."""
    import keras

    values = {id(x): v for x, v in zip(model.inputs, inputs)}

    def producer(tensor):
        history = getattr(tensor, "_keras_history", None)
        _require(history is not None, "a tensor without a producing layer")
        operation, node_index, _ = history
        return operation._inbound_nodes[node_index]

    def pending_inputs(node):
        return iter([t for t in node.input_tensors if id(t) not in values])

    done: set[int] = set()
    for root in model.outputs:
        if id(root) in values:
            continue
        first = producer(root)
        stack = [(first, pending_inputs(first))]
        while stack:
            node, it = stack[-1]
            for tensor in it:
                if id(tensor) in values:
                    continue
                dep = producer(tensor)
                if id(dep) not in done:
                    _require(all(n is not dep for n, _ in stack), "a cycle")
                    stack.append((dep, pending_inputs(dep)))
                    break
            else:
                stack.pop()
                if id(node) in done:
                    continue
                done.add(id(node))
                # A Keras mask changes what a layer computes (attention, merges); the rules
                # do not read masks, so a masked model is traced.
                _require(all(getattr(t, "_keras_mask", None) is None
                             for t in node.input_tensors), "a Keras mask")
                args, kwargs = node.arguments.fill_in(values)
                outputs = operation_fn(node.operation)(*args, **kwargs)
                for x, y in zip(node.outputs, keras.tree.flatten(outputs)):
                    values[id(x)] = y
    _require(all(id(x) in values for x in model.outputs), "an output not reached")
    return keras.tree.pack_sequence_as(model._outputs_struct,
                                       [values[id(x)] for x in model.outputs])


def depth_first_order(graph: Graph, units: dict | None = None,
                      after: dict | None = None) -> None:
    """Puts `graph`'s nodes in the order the TF lifter lifts a traced graph in: producers
    first, by a depth-first walk over TF ops from the outputs in order, following each op's
    inputs in order; a constant placed just before its first user (the lifter creates a
    folded constant when an op first uses it). `units` ({node: ([nodes], [inputs])}) names
    nodes lifted from one TF op with those inputs (an einsum's transposes and matmul): the
    walk visits the op's inputs, then places the nodes in their own order. `after` ({node:
    [nodes]}) adds inputs the TF op had that the IR node lost (`tf.ones_like(x)` folded to a
    constant still sent the walk through x first). Nodes no output depends on keep their
    order after the others."""
    units = units or {}
    after = after or {}
    order: list = []
    placed: set[int] = set()

    def members(node):
        unit = units.get(node)
        return [node] if unit is None else unit[0]

    def inputs(node):
        unit = units.get(node)
        values = node.inputs if unit is None else unit[1]
        deps = [d for n in members(node) for d in after.get(n, [])]
        deps += [v.producer for v in values
                 if v.producer is not None and v.producer.op != "constant"]
        return iter(deps)

    def place(node):
        for member in members(node):
            for v in member.inputs:
                c = v.producer
                if c is not None and c.op == "constant" and id(c) not in placed:
                    placed.add(id(c))
                    order.append(c)
            placed.add(id(member))
            order.append(member)

    def visit(root):
        for n in members(root):
            placed.add(id(n))
        stack = [(root, inputs(root))]
        while stack:
            node, pending = stack[-1]
            for dep in pending:
                if id(dep) not in placed:
                    for n in members(dep):
                        placed.add(id(n))
                    stack.append((dep, inputs(dep)))
                    break
            else:
                stack.pop()
                place(node)

    for out in graph.outputs:
        root = out.producer
        if root is None or id(root) in placed:
            continue
        if root.op == "constant":
            placed.add(id(root))
            order.append(root)
        else:
            visit(root)
    order += [n for n in graph if id(n) not in placed]
    graph.reorder(order)


def _input_type(spec) -> TensorType:
    dims = spec.shape.as_list()
    _require(len(dims) >= 1, "a scalar input")
    _require(all(d is not None for d in dims[1:]), "run-time dims past the batch")
    dtype = DType.from_numpy(np.dtype(spec.dtype.as_numpy_dtype))
    return TensorType(dtype, (BATCH if dims[0] is None else dims[0], *dims[1:]))


def lift_direct(model, keras_inputs, specs, input_names: list[str],
                output_names: Callable, trace_layer: Callable | None = None,
                values: VariableValues | None = None,
                call_rules: dict[str, Callable] | None = None) -> Module | None:
    """The Module of a Functional/Sequential `model` lifted layer by layer, or None when some
    layer (or its use) has no rule and cannot be traced on its own: the caller then traces
    the whole model. `keras_inputs` are the model's symbolic inputs in the order of `specs`
    (their TensorSpecs: a None batch, other dims static) and `input_names`;
    `output_names(structure, n)` names the n flat outputs; `trace_layer(ctx, layer, args,
    kwargs)` lifts a layer without a rule (or raises NoRule); `values` keeps the variables
    read (all of the model's in one op, tf/variables.py) for a trace that may follow;
    `call_rules` ({class path: rule(ctx, layer, args, kwargs)}) cover layers called with
    more than float32 tensors (block_rules.py)."""
    import keras

    graph_model = _graph_model(model)
    if graph_model is None:
        return None
    graph = Graph("main")
    ctx = _Context(graph, trace_layer, values, call_rules)
    try:
        ctx.prefetch(model.weights)
        inputs = [graph.add_input(_input_type(s), name) for s, name in zip(specs, input_names)]
        by_tensor = {id(t): v for t, v in zip(keras_inputs, inputs)}
        _require(all(id(t) in by_tensor for t in graph_model.inputs), "unmatched inputs")
        structured = _lift_layers(ctx, graph_model, [by_tensor[id(t)] for t in
                                                     graph_model.inputs], "", _rules())
        outputs = keras.tree.flatten(structured)
        _require(all(isinstance(v, Value) for v in outputs), "a non-tensor output")
    except NoRule:
        return None
    except Exception:   # a rule meeting a layer state it does not expect: trace instead
        return None
    names = output_names(structured, len(outputs))
    seen: set[int] = set()
    final = []
    for v, name in zip(outputs, names):
        if v.producer is None or id(v) in seen:
            # An input returned as is, or one value returned twice: an identity gives each
            # output its own name.
            v = graph.add("identity", [v], scope="", loc="keras:output").outputs[0]
        seen.add(id(v))
        if v.producer.op != "constant":
            v.name = name
        final.append(v)
    graph.set_outputs(final)
    if ctx.reorder:
        try:
            depth_first_order(graph, ctx.units, ctx.after)
        except ValueError:     # not an order of this graph: trace instead
            return None
    meta = {"source": "keras", "producer": f"tensorforge {package_version()}",
            "input_names": list(input_names), "output_names": list(names)}
    return Module([graph], meta)
