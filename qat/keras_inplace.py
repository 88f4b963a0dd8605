"""Quantization-aware training for any Keras model, subclassed ones included, by intercepting
its layers' calls instead of rebuilding its graph; batch norms are folded into the conv/dense
before them, as tfmot does.

`apply_quantization_on_model` (qat/keras.py) rebuilds Sequential and Functional models; a
subclassed model has no graph to rebuild, so `quantize_in_place(model, ...)` changes the
model's own layer objects, and the model's own `call` still runs:

1. **Probe.** The model is traced once (a `tf.function`, nothing runs) with every leaf layer's
   `call` temporarily recorded: which layer ran on which tensor, and what it returned. Tensor
   identity gives the data flow between layers (not through ops the model's `call` applies
   itself, such as `tf.nn.relu`: those are invisible, and harmless, see below).
2. **Plan.** For each Conv2D / DepthwiseConv2D / Dense (exact classes) called once, the chain
   conv -> [BatchNormalization] -> [ReLU / relu Activation] is followed along single consumers:
   a batch norm on the channel axis whose input is the conv's output alone (and a conv without
   its own activation) is folded; a relu-family layer right after is fused. The chain's last
   layer owns the output fake-quant, so the tensor TFLite sees after the fused conv is the one
   whose range is learned. A conv whose input is not already fake-quantized (the model input,
   the output of a layer we do not quantize) gets an input fake-quant. Add and Concatenate get
   their output fake-quant as in the rebuilt models; pooling, reshape, flatten and dropout
   pass a quantized tensor on.
3. **Install.** Each chosen layer's class is swapped for its QAT subclass (the same classes as
   the rebuilt models: `QATConv2D`, ...; `QATFoldedBatchNormalization`, `QATReLU`,
   `QATActivation` for chain ends) and its fake-quant sub-layers are added. Variables are
   untouched: training continues from the float weights.

Folding (tfmot's scheme, with the moving statistics): the conv computes
`conv(x, fq(w * s)) + (b - mean) * s + beta`, `s = gamma / sqrt(var + eps)` per output channel,
and the folded batch norm passes its input on (plus the output fake-quant when it ends the
chain). In training the moving mean and variance are updated from the batch statistics of
the unfolded float output first (set the batch norm's `trainable=False` to freeze them).
The weights that are fake-quantized are the folded ones, so the int8 artifact (where the
frontend finds no batch norm at all) holds exactly the weights that were trained.

Saving: the swapped layers keep their Keras configs, so a subclassed model rebuilt from its
config has plain layers again; save and load the weights (`save_weights` / `load_weights`)
of a model that `apply_quantization_on_model` was applied to.
"""

from __future__ import annotations

import inspect

import keras

from ..ir.errors import ConversionError

PACKAGE = "tensorforge"
INPUT_OP_TYPE = "input"


# -- chain-end layers --------------------------------------------------------------------------

class _OutputQuantMixin:
    """A layer whose result gets the output fake-quant of the conv/dense chain it ends."""

    output_quant = None

    def _base_call(self, inputs, **kwargs):
        raise NotImplementedError

    def call(self, inputs, training=None):
        """The base layer's result, fake-quantized when this layer ends a quantized chain."""
        y = self._base_call(inputs)
        q = self.output_quant
        return y if q is None else q.fake_quant(y, training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATFoldedBatchNormalization(_OutputQuantMixin, keras.layers.BatchNormalization):
    """A batch norm folded into the conv/dense before it: passes its input on (that layer
    already applied the norm, with its moving statistics, to its folded weights).

    In a rebuilt Sequential/Functional model (qat/keras.py) the norm is created with
    `folded_into` = the name of the conv/dense whose output it reads; calling it on that
    layer's (symbolic) output links the two (`_folded_bn`), so the link is remade whenever the
    model's graph is built, loading a saved model included."""

    folded_into = None

    def __init__(self, *args, folded_into=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.folded_into = folded_into

    def __call__(self, inputs, *args, **kwargs):
        if self.folded_into is not None and isinstance(inputs, keras.KerasTensor):
            history = getattr(inputs, "_keras_history", None)
            producer = getattr(history, "operation", None)
            if (producer is None or producer.name != self.folded_into
                    or not hasattr(producer, "_init_qat")):
                raise ConversionError(
                    f"batch norm '{self.name}' is folded into layer '{self.folded_into}' but "
                    f"is called on the output of "
                    f"'{getattr(producer, 'name', None)}'; it must read that layer's output")
            object.__setattr__(producer, "_folded_bn", self)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        """The input, fake-quantized when this norm ends a quantized chain (`mask`, which
        Keras passes on to a batch norm in a graph model, changes nothing: the moving
        statistics are updated by the conv's folded call)."""
        return _OutputQuantMixin.call(self, inputs, training)

    def _base_call(self, inputs, **kwargs):
        return inputs

    def get_config(self):
        """The batch norm's config, plus `folded_into` when set."""
        cfg = super().get_config()
        if self.folded_into is not None:
            cfg["folded_into"] = self.folded_into
        return cfg


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATReLU(_OutputQuantMixin, keras.layers.ReLU):
    """ReLU fused into the conv/dense chain before it: its result gets the output fake-quant."""

    def _base_call(self, inputs, **kwargs):
        return keras.layers.ReLU.call(self, inputs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATActivation(_OutputQuantMixin, keras.layers.Activation):
    """A relu/relu6 Activation fused into the conv/dense chain before it."""

    def _base_call(self, inputs, **kwargs):
        return keras.layers.Activation.call(self, inputs)


_TRANSPARENT = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
                keras.layers.AveragePooling2D, keras.layers.Flatten, keras.layers.Reshape,
                keras.layers.Dropout, keras.layers.ZeroPadding2D, keras.layers.Permute)


def _is_relu_layer(layer) -> bool:
    if type(layer) is keras.layers.ReLU:
        return (float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
                and layer.max_value in (None, 6, 6.0))
    if type(layer) is keras.layers.Activation:
        name = getattr(layer.activation, "__name__", "")
        return name in ("relu", "relu6")
    return False


def _linear(activation) -> bool:
    return activation is None or getattr(activation, "__name__", "") == "linear"


def _foldable_bn(conv, bn) -> bool:
    if type(bn) is not keras.layers.BatchNormalization or not _linear(conv.activation):
        return False
    if getattr(conv, "data_format", "channels_last") != "channels_last":
        return False
    axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    rank = len(conv.kernel.shape)       # conv2d/depthwise: 4, dense: 2 (input rank varies)
    return len(axis) == 1 and (axis[0] == -1 or (rank == 4 and axis[0] == 3))


# -- probing -----------------------------------------------------------------------------------

class _Call:
    __slots__ = ("layer", "inputs", "output")

    def __init__(self, layer, inputs, output):
        self.layer, self.inputs, self.output = layer, inputs, output


def _leaves(model):
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not list(layer._flatten_layers(include_self=False, recursive=False)):
            out.append(layer)
    return out


def _input_specs(model, sample_inputs):
    import tensorflow as tf

    if sample_inputs is not None:
        samples = sample_inputs if isinstance(sample_inputs, (list, tuple)) else [sample_inputs]
        return [tf.TensorSpec([None] + list(s.shape[1:]), tf.as_dtype(s.dtype))
                for s in samples]
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes:
        raise ConversionError(
            f"model '{model.name}' ({type(model).__name__}) has not been called yet, so its "
            f"input shapes are unknown; call it once on a batch (or build it) before applying "
            f"quantization, or pass sample_inputs=")
    return [tf.TensorSpec([None] + list(shape[1:]), tf.float32) for shape in shapes.values()]


def _probe(model, sample_inputs) -> list[_Call]:
    """The model's leaf-layer calls, in order, from one trace of `model(x, training=False)`."""
    import tensorflow as tf

    specs = _input_specs(model, sample_inputs)
    records: list[_Call] = []

    def recorder(layer, original):
        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            x = args[0] if args else kwargs.get("inputs")
            records.append(_Call(layer, x, out))
            return out
        return call

    leaves = _leaves(model)
    for layer in leaves:
        object.__setattr__(layer, "call", recorder(layer, layer.call))
    try:
        fn = tf.function(lambda *xs: model(*xs, training=False), autograph=False)
        fn.get_concrete_function(*specs)
    finally:
        for layer in leaves:
            layer.__dict__.pop("call", None)
    return records


# -- installing --------------------------------------------------------------------------------

def _swap_class(layer, cls) -> None:
    """Turns `layer` into an instance of `cls` (a subclass of its class) and lets Keras pass
    `training` to the new `call`."""
    layer.__class__ = cls
    sig = inspect.signature(layer.call)
    params = [p.name for p in sig.parameters.values()]
    object.__setattr__(layer, "_call_signature", sig)
    object.__setattr__(layer, "call_signature_parameters", params)
    object.__setattr__(layer, "_call_has_training_arg", "training" in params)
    object.__setattr__(layer, "_call_has_mask_arg", "mask" in params)
    object.__setattr__(layer, "_call_has_context_arg",
                       {a: a in params for a in layer._call_context_args})


def _add_sublayer(layer, name: str, value) -> None:
    """Sets a (tracked) sub-layer on an already-built layer."""
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        setattr(layer, name, value)
    finally:
        if locked:
            tracker.lock()


def _fake_quant(fq_cls, a, ema_decay, name, dtype_policy):
    fq = fq_cls(a.bits, a.symmetric, a.narrow, ema_decay, name=name, dtype=dtype_policy)
    fq.build(None)
    return fq


_CHAIN_END = {keras.layers.BatchNormalization: QATFoldedBatchNormalization,
              keras.layers.ReLU: QATReLU, keras.layers.Activation: QATActivation}


def _install_qat_layer(layer, qat_cls, w, a, ema_decay) -> None:
    """Swaps a Conv2D/Dense/... (or Add/Concatenate) for its QAT class, with its fake-quants."""
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        _swap_class(layer, qat_cls)
        layer._init_qat(w.to_config() if w else None, a.to_config() if a else None, ema_decay)
        layer._build_qat()
        layer.input_quant = None
    finally:
        if locked:
            tracker.lock()


def _install_chain_end(layer, fq_cls, a, ema_decay) -> None:
    _swap_class(layer, _CHAIN_END[type(layer)])
    fq = None if a is None else _fake_quant(fq_cls, a, ema_decay, f"{layer.name}_output_quant",
                                            layer.dtype_policy)
    _add_sublayer(layer, "output_quant", fq)


# -- planning ----------------------------------------------------------------------------------

def _flat(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def layer_path(model, layer) -> str:
    """The layer's Keras path without the model's name (the scope the config map matches)."""
    path = getattr(layer, "path", None) or layer.name
    prefix = f"{model.name}/"
    return path[len(prefix):] if path.startswith(prefix) else path


def quantize_in_place(model, resolver, ema_decay: float, *, qat_classes, fake_quant_cls,
                      fold_batch_norm: bool = True, sample_inputs=None):
    """Installs QAT on `model`'s own layers (see the module doc) and returns `model`.
    `resolver.resolve(path, op_type, has_weights=...)` gives each layer's (weight, activation)
    settings; problems are collected on `resolver.problems`, and nothing is changed when
    there are any. `qat_classes` maps a Keras layer class to (its QAT subclass, IR op type)
    and `fake_quant_cls` is the FakeQuant layer (both from qat/keras.py, which imports this
    module)."""
    if sample_inputs is not None and not model.built:
        model(sample_inputs, training=False)      # builds the variables, eagerly
    records = _probe(model, sample_inputs)
    calls_per_layer: dict[int, int] = {}
    consumers: dict[int, list[_Call]] = {}
    for r in records:
        calls_per_layer[id(r.layer)] = calls_per_layer.get(id(r.layer), 0) + 1
        for t in _flat(r.inputs):
            consumers.setdefault(id(t), []).append(r)

    def only_consumer(t):
        users = consumers.get(id(t), [])
        return users[0] if len(users) == 1 and calls_per_layer[id(users[0].layer)] == 1 else None

    quantized: set[int] = set()     # ids of tensors that are fake-quantized
    installs = []                   # deferred, so a bad config changes nothing
    claimed: set[int] = set()       # layers that are part of a chain
    for r in records:
        layer = r.layer
        if id(layer) in claimed or calls_per_layer[id(layer)] != 1:
            continue
        entry = qat_classes.get(type(layer))
        if entry is None:
            if isinstance(layer, _TRANSPARENT) or _is_relu_layer(layer):
                if all(id(t) in quantized for t in _flat(r.inputs)):
                    quantized.add(id(r.output))
            continue
        qat_cls, op_type = entry
        path = layer_path(model, layer)
        w, a = resolver.resolve(path, op_type, has_weights=qat_cls._has_kernel)
        if w is None and a is None:
            continue
        end, out, bn = layer, r.output, None
        if qat_cls._has_kernel and type(layer) is not keras.layers.EinsumDense:
            nxt = only_consumer(out)
            if fold_batch_norm and nxt is not None and _foldable_bn(layer, nxt.layer):
                bn, end, out = nxt.layer, nxt.layer, nxt.output
                nxt = only_consumer(out)
            if nxt is not None and _linear(layer.activation) and _is_relu_layer(nxt.layer):
                end, out = nxt.layer, nxt.output
        needs_input_quant = (a is not None and qat_cls._has_kernel
                             and not all(id(t) in quantized for t in _flat(r.inputs)))
        if needs_input_quant:
            _, ia = resolver.resolve(path, INPUT_OP_TYPE, has_weights=False)
        else:
            ia = None
        installs.append((layer, qat_cls, w, a, ia, bn, end))
        claimed.update({id(bn), id(end)} - {id(None)})
        if a is not None:
            quantized.add(id(out))
    if resolver.problems:
        return model
    for layer, qat_cls, w, a, ia, bn, end in installs:
        # A chain that goes on past the layer (only when it has no activation of its own)
        # moves the output fake-quant to the chain's end.
        _install_qat_layer(layer, qat_cls, w, a if end is layer else None, ema_decay)
        if ia is not None:
            _add_sublayer(layer, "input_quant",
                          _fake_quant(fake_quant_cls, ia, ema_decay,
                                      f"{layer.name}_input_quant", layer.dtype_policy))
        if bn is not None:
            object.__setattr__(layer, "_folded_bn", bn)   # tracked by the model already
        if end is not layer:
            if bn is not None and end is not bn:
                _install_chain_end(bn, fake_quant_cls, None, ema_decay)
            _install_chain_end(end, fake_quant_cls, a, ema_decay)
    return model


CUSTOM_OBJECTS = {f"{PACKAGE}>{cls.__name__}": cls for cls in
                  (QATFoldedBatchNormalization, QATReLU, QATActivation)}
CUSTOM_OBJECTS.update({cls.__name__: cls for cls in list(CUSTOM_OBJECTS.values())})

__all__ = ["quantize_in_place", "QATFoldedBatchNormalization", "QATReLU", "QATActivation",
           "layer_path"]
