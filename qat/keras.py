"""Quantization-aware training (QAT) for Keras 3 models on the TensorFlow backend.

`apply_quantization_on_model(model, config_map)` returns a new Keras model in which

- Conv2D, DepthwiseConv2D, Dense and EinsumDense are replaced by QAT subclasses that
  fake-quantize their kernel every step (range from the kernel itself: symmetric, narrow range,
  per output channel by default, with TF's `fake_quant_with_min_max_vars_per_channel`) and
  fake-quantize their OUTPUT (after bias and fused activation) with an EMA range;
- every model input is followed by a `FakeQuant` layer, and Add / Concatenate (whose outputs
  are new values, not re-labelled inputs) get their own output fake-quant;
- a BatchNormalization that alone reads the output of a Conv2D/DepthwiseConv2D/Dense without
  an activation of its own is FOLDED into it, as in the in-place path (qat/keras_inplace.py):
  the conv computes `conv(x, fq(w * s)) + (b - mean) * s + beta` with the norm's moving
  statistics and the norm becomes a `QATFoldedBatchNormalization` that passes its input on
  (`fold_batch_norm=False` keeps it a separate float layer);
- every other layer is cloned unchanged (pooling, reshape, activation layers: in TFLite their
  outputs share their producer's params, which the quantization passes enforce).

The float weights are copied, so QAT starts from the trained float model; `fit` trains as
usual (straight-through estimator: TF's FakeQuant gradients). Activation ranges follow
tfmot's MovingAverageQuantizer: during training the batch min/max (always widened to include
0) update an exponential moving average, initialised from the first training batch, and the
op uses the updated EMA; at inference the stored range is used. Before any training batch the
range is tfmot's default [-6, 6].

Why subclasses and not a wrapper layer: the QAT layer keeps the original layer's name, class
config and variable layout, so the traced TF graph has the fake-quant ops in the layer's own
name scope (the IR scope is the layer path the quantization config addresses), and the float
weights copy over one to one. The output range variables live in a `FakeQuant` sub-layer
(so Keras saves them without touching the base layers' save/load code), but its op runs from
the parent's `call`, inside the parent's name scope.

Lifting a trained QAT model (`tensorforge.from_keras`) turns every FakeQuant TF op into an IR
`quantize` -> `dequantize` pair with TF's nudged params (see `frontends/tf/ops/quant.py`).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import keras

from ..ir.errors import ConversionError, Diagnostic
from . import keras_inplace

PACKAGE = "tensorforge"
EMA_DECAY = 0.999          # tfmot's MovingAverageQuantizer default
DEFAULT_RANGE = (-6.0, 6.0)  # tfmot's initial activation range, used before any training batch
_MIN_HALF_RANGE = 1e-8     # keeps an all-zero kernel channel's scale positive
_SUPPORTED_BITS = range(2, 17)  # what TF's FakeQuant ops accept


# -- quantization settings ---------------------------------------------------------------------

@dataclass(frozen=True)
class _QC:
    """A resolved quantization configuration (the attributes the config protocol promises)."""

    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_tensor"
    narrow_range: bool | None = None

    def to_config(self) -> dict:
        return {"bits": self.bits, "symmetric": self.symmetric,
                "granularity": self.granularity, "narrow_range": self.narrow_range}

    @property
    def narrow(self) -> bool:
        """narrow_range None means: narrow for symmetric weights only (TFLite's int8 spec)."""
        return bool(self.narrow_range)


def _qc_from(obj, *, weight: bool) -> _QC | None:
    """A `_QC` from a config object (duck-typed), a dict (a saved layer config) or None."""
    if obj is None:
        return None
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    symmetric = bool(get("symmetric", weight))
    narrow = get("narrow_range", None)
    if narrow is None:
        narrow = weight and symmetric
    return _QC(int(get("bits", 8)), symmetric, str(get("granularity", "per_tensor")),
               bool(narrow))


DEFAULT_WEIGHT = _QC(8, True, "per_channel", True)
DEFAULT_ACTIVATION = _QC(8, False, "per_tensor", False)


def _problems(qc: _QC | None, *, weight: bool) -> list[str]:
    if qc is None:
        return []
    out = []
    if qc.bits not in _SUPPORTED_BITS:
        out.append(f"{'weight' if weight else 'activation'} bits={qc.bits} is not supported "
                   f"by TF's FakeQuant ops (2..16)")
    if qc.granularity not in ("per_tensor", "per_channel"):
        out.append(f"granularity {qc.granularity!r} is not one of per_tensor, per_channel")
    elif qc.granularity == "per_channel" and not weight:
        out.append("per-channel activation quantization is not supported (activations are "
                   "quantized per tensor)")
    return out


# -- fake-quant math ---------------------------------------------------------------------------

def _tf():
    import tensorflow as tf
    return tf


def _fake_quant_range(x, lo, hi, qc: _QC):
    """TF fake-quant of x on [lo, hi] (scalars, or vectors over the last dim)."""
    tf = _tf()
    if len(lo.shape) == 0:
        return tf.quantization.fake_quant_with_min_max_vars(
            x, lo, hi, num_bits=qc.bits, narrow_range=qc.narrow)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, lo, hi, num_bits=qc.bits, narrow_range=qc.narrow)


def fake_quantize_kernel(kernel, qc: _QC):
    """Fake-quantizes a kernel with a range taken from the kernel itself (no state).

    Per channel = per slice of the LAST kernel dim (the output channel of HWIO conv and [K, N]
    dense kernels; for a depthwise [H, W, C, M] kernel the caller reshapes to [H, W, 1, C*M]).
    The range is a constant to the gradient: a pure straight-through estimator on the kernel.
    """
    tf = _tf()
    axes = list(range(len(kernel.shape) - 1)) if qc.granularity == "per_channel" else None
    if qc.symmetric:
        hi = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), _MIN_HALF_RANGE)
        lo = -hi
    else:
        lo = tf.minimum(tf.reduce_min(kernel, axis=axes), 0.0)
        hi = tf.maximum(tf.maximum(tf.reduce_max(kernel, axis=axes), 0.0), lo + _MIN_HALF_RANGE)
    return _fake_quant_range(kernel, tf.stop_gradient(lo), tf.stop_gradient(hi), qc)


# -- layers ------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package=PACKAGE)
class FakeQuant(keras.layers.Layer):
    """Fake-quantizes a tensor per tensor with an EMA range (tfmot's MovingAverageQuantizer).

    Training: the batch range (widened to include 0) initialises the range on the first batch
    and updates its moving average after that; the op uses the updated range. Inference: the
    stored range. Used standalone after model inputs, and as the output quantizer inside the
    QAT layers (there its `fake_quant` runs in the parent layer's name scope).
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, narrow_range: bool = False,
                 ema_decay: float = EMA_DECAY, **kwargs):
        super().__init__(**kwargs)
        self.qc = _QC(int(bits), bool(symmetric), "per_tensor", bool(narrow_range))
        self.ema_decay = float(ema_decay)
        self.supports_masking = True

    def build(self, input_shape=None):
        """Creates the range variables (min, max, and whether a batch initialised them)."""
        if self.built:
            return
        zeros = keras.initializers.Zeros()
        self.range_min = self.add_weight(
            name="range_min", shape=(), trainable=False,
            initializer=keras.initializers.Constant(DEFAULT_RANGE[0]))
        self.range_max = self.add_weight(
            name="range_max", shape=(), trainable=False,
            initializer=keras.initializers.Constant(DEFAULT_RANGE[1]))
        self.range_initialized = self.add_weight(
            name="range_initialized", shape=(), trainable=False, initializer=zeros)
        self.built = True

    def fake_quant(self, x, training=None):
        """The fake-quantized x; in training also updates the range (see the class doc)."""
        tf = _tf()
        if not self.built:
            self.build(x.shape)
        x = tf.convert_to_tensor(x)
        if training:
            lo = tf.minimum(tf.reduce_min(x), 0.0)
            hi = tf.maximum(tf.reduce_max(x), 0.0)
            if self.qc.symmetric:
                hi = tf.maximum(-lo, hi)
                lo = -hi
            first = tf.equal(tf.convert_to_tensor(self.range_initialized), 0.0)
            d = self.ema_decay
            new_lo = tf.where(first, lo, d * self.range_min + (1.0 - d) * lo)
            new_hi = tf.where(first, hi, d * self.range_max + (1.0 - d) * hi)
            # A range must not collapse (an all-zero first batch): TF would divide by zero.
            new_hi = tf.maximum(new_hi, new_lo + _MIN_HALF_RANGE)
            new_lo, new_hi = tf.stop_gradient(new_lo), tf.stop_gradient(new_hi)
            self.range_min.assign(new_lo)
            self.range_max.assign(new_hi)
            self.range_initialized.assign(1.0)
            return _fake_quant_range(x, new_lo, new_hi, self.qc)
        return _fake_quant_range(x, tf.convert_to_tensor(self.range_min),
                                 tf.convert_to_tensor(self.range_max), self.qc)

    def call(self, inputs, training=None):
        """Fake-quantizes `inputs` (see `fake_quant`)."""
        return self.fake_quant(inputs, training)

    def compute_output_shape(self, input_shape):
        """Same shape as the input."""
        return input_shape

    def get_config(self):
        """Serializable config (bits, symmetric, narrow_range, ema_decay)."""
        return {**super().get_config(), "bits": self.qc.bits, "symmetric": self.qc.symmetric,
                "narrow_range": self.qc.narrow, "ema_decay": self.ema_decay}


class _QATMixin:
    """Output fake-quant (+ optional kernel fake-quant) for a Keras layer subclass.

    Subclasses implement `_forward(inputs, kernel)` = the base layer's call with the kernel
    given (None for kernel-less layers such as Add).
    """

    _has_kernel = True

    def __init__(self, *args, weight_quant=None, activation_quant=None, ema_decay=EMA_DECAY,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._init_qat(weight_quant, activation_quant, ema_decay)

    def build(self, input_shape):
        """Builds the base layer, then the range variables of its fake-quants."""
        super().build(input_shape)
        self._build_qat()

    def _init_qat(self, weight_quant, activation_quant, ema_decay):
        self.weight_quant = _qc_from(weight_quant, weight=True) if self._has_kernel else None
        self.activation_quant = _qc_from(activation_quant, weight=False)
        self.ema_decay = float(ema_decay)
        self.output_quant = None
        self.pre_activation_quant = None
        self._pre_activation = None
        if self.activation_quant is not None:
            a = self.activation_quant
            self.output_quant = FakeQuant(a.bits, a.symmetric, a.narrow, self.ema_decay,
                                          name=f"{self.name}_output_quant", dtype=self.dtype_policy)
            if not _fusable(getattr(self, "activation", None)):
                # TFLite fuses only relu-family activations into conv/FC: a softmax, sigmoid,
                # tanh or gelu runs as its own op, so the tensor before it needs a range too
                # (otherwise the conv/FC itself has to stay float).
                self.pre_activation_quant = FakeQuant(
                    a.bits, a.symmetric, a.narrow, self.ema_decay,
                    name=f"{self.name}_pre_activation_quant", dtype=self.dtype_policy)

    def _build_qat(self):
        if self.output_quant is not None:
            self.output_quant.build(None)
        if self.pre_activation_quant is not None:
            self.pre_activation_quant.build(None)

    def _quantized_kernel(self, kernel):
        if self.weight_quant is None:
            return kernel
        return fake_quantize_kernel(kernel, self.weight_quant)

    def call(self, inputs, training=None):
        """The base layer's computation with the fake-quantized kernel, then the output
        fake-quant. With a folded batch norm (`_folded_bn`, set by the in-place QAT of
        qat/keras_inplace.py, or by the `QATFoldedBatchNormalization` that reads this layer's
        output in a rebuilt model) the kernel and bias are folded with the norm's moving statistics
        first, so the kernel that is fake-quantized is the one the artifact holds."""
        input_quant = getattr(self, "input_quant", None)
        if input_quant is not None:
            inputs = input_quant.fake_quant(inputs, training)
        # Plain attributes (not tracked by Keras: the bias variable is already the layer's).
        object.__setattr__(self, "_bias_value", getattr(self, "bias", None))
        kernel = self._float_kernel() if self._has_kernel else None
        if getattr(self, "_folded_bn", None) is not None:
            kernel, bias = _fold_batch_norm(self, inputs, kernel, training)
            object.__setattr__(self, "_bias_value", bias)
        if kernel is not None:
            kernel = self._quantized_kernel(kernel)
        if self.pre_activation_quant is not None:
            self._pre_activation = lambda t: self.pre_activation_quant.fake_quant(t, training)
        try:
            y = self._forward(inputs, kernel)
        finally:
            self._pre_activation = None
        if self.output_quant is not None:
            y = self.output_quant.fake_quant(y, training)
        return y

    def get_config(self):
        """Base layer config plus the quantization settings."""
        cfg = super().get_config()
        cfg["weight_quant"] = self.weight_quant.to_config() if self.weight_quant else None
        cfg["activation_quant"] = (self.activation_quant.to_config()
                                   if self.activation_quant else None)
        cfg["ema_decay"] = self.ema_decay
        return cfg


def _apply_bias_activation(layer, x, bias_shape=None):
    from keras import ops

    bias = getattr(layer, "_bias_value", getattr(layer, "bias", None))
    if bias is not None:
        b = bias if bias_shape is None else ops.reshape(bias, bias_shape)
        x = ops.add(x, b)
    if getattr(layer, "activation", None) is not None:
        if getattr(layer, "_pre_activation", None) is not None:
            x = layer._pre_activation(x)
        x = layer.activation(x)
    return x


def _fold_batch_norm(layer, inputs, kernel, training):
    """(folded kernel, folded bias) of `layer` followed by its `_folded_bn`: tfmot's folding
    with the moving statistics, w' = w * s and b' = (b - mean) * s + beta with
    s = gamma / sqrt(var + eps) per output channel. In training the norm's moving mean and
    variance are first updated from the batch statistics of the unfolded float output (no
    gradient through them; skipped when the norm is frozen: `trainable=False`)."""
    tf = _tf()
    bn = layer._folded_bn
    if training and bn.trainable:
        y = layer._forward_linear(inputs, kernel)
        if getattr(layer, "bias", None) is not None:
            y = y + layer.bias
        y = tf.stop_gradient(y)
        axes = list(range(len(y.shape) - 1))
        mean, var = tf.nn.moments(y, axes=axes)
        m = float(bn.momentum)
        bn.moving_mean.assign(bn.moving_mean * m + mean * (1.0 - m))
        bn.moving_variance.assign(bn.moving_variance * m + var * (1.0 - m))
    mean = tf.convert_to_tensor(bn.moving_mean)
    var = tf.convert_to_tensor(bn.moving_variance)
    scale = tf.math.rsqrt(var + bn.epsilon)
    if bn.gamma is not None:
        scale = scale * bn.gamma
    bias = getattr(layer, "bias", None)
    folded_bias = ((bias if bias is not None else 0.0) - mean) * scale
    if bn.beta is not None:
        folded_bias = folded_bias + bn.beta
    kshape = list(kernel.shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):   # [H, W, C, M]: channel c*M + m
        s = tf.reshape(scale, [1] * (len(kshape) - 2) + kshape[-2:])
    else:                                                 # output channel = last kernel dim
        s = tf.reshape(scale, [1] * (len(kshape) - 1) + kshape[-1:])
    return kernel * s, folded_bias


def _fusable(activation) -> bool:
    """True for no activation or one TFLite fuses into conv/FC (linear, relu, relu6)."""
    if activation is None:
        return True
    name = getattr(activation, "__name__", type(activation).__name__).lower()
    return name in ("linear", "relu", "relu6")


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATConv2D(_QATMixin, keras.layers.Conv2D):
    """Conv2D with a fake-quantized kernel (per output channel) and output."""

    def _float_kernel(self):
        return self.kernel

    def _forward_linear(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)

    def _forward(self, inputs, kernel):
        y = self.convolution_op(inputs, kernel)
        shape = ((1,) * (self.rank + 1) + (self.filters,) if self.data_format == "channels_last"
                 else (1, self.filters) + (1,) * self.rank)
        return _apply_bias_activation(self, y, shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATDepthwiseConv2D(_QATMixin, keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D with a fake-quantized kernel (per output channel c*M+m) and output."""

    def _float_kernel(self):
        return self.kernel

    def _quantized_kernel(self, kernel):
        if self.weight_quant is None or self.weight_quant.granularity != "per_channel":
            return super()._quantized_kernel(kernel)
        tf = _tf()
        # TF's per-channel op works on the last dim; the output channels of a depthwise
        # [H, W, C, M] kernel are C*M, so quantize it as [H, W, 1, C*M] (TFLite's layout).
        h, w, c, m = kernel.shape
        flat = tf.reshape(kernel, [h, w, 1, c * m])
        return tf.reshape(fake_quantize_kernel(flat, self.weight_quant), [h, w, c, m])

    def _forward_linear(self, inputs, kernel):
        from keras import ops

        return ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                                  dilation_rate=self.dilation_rate, data_format=self.data_format)

    def _forward(self, inputs, kernel):
        channels = self._get_input_channel(inputs.shape) * self.depth_multiplier
        y = self._forward_linear(inputs, kernel)
        shape = ((1,) * (self.rank + 1) + (channels,) if self.data_format == "channels_last"
                 else (1, channels) + (1,) * self.rank)
        return _apply_bias_activation(self, y, shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATDense(_QATMixin, keras.layers.Dense):
    """Dense with a fake-quantized kernel (per output unit) and output."""

    def _float_kernel(self):
        return self.kernel

    def _forward_linear(self, inputs, kernel):
        from keras import ops

        return ops.matmul(inputs, kernel)

    def _forward(self, inputs, kernel):
        return _apply_bias_activation(self, self._forward_linear(inputs, kernel))


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATEinsumDense(_QATMixin, keras.layers.EinsumDense):
    """EinsumDense with a fake-quantized kernel (per slice of its last dim) and output."""

    def _float_kernel(self):
        return self.kernel

    def _forward(self, inputs, kernel):
        from keras import ops

        return _apply_bias_activation(self, ops.einsum(self.equation, inputs, kernel))


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATAdd(_QATMixin, keras.layers.Add):
    """Add whose sum gets its own output fake-quant."""

    _has_kernel = False

    def _forward(self, inputs, kernel):
        return keras.layers.Add.call(self, inputs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QATConcatenate(_QATMixin, keras.layers.Concatenate):
    """Concatenate whose result gets its own output fake-quant."""

    _has_kernel = False

    def _forward(self, inputs, kernel):
        return keras.layers.Concatenate.call(self, inputs)


# Keras layer class -> (QAT class, the IR op type the config map is asked about). Exact
# classes only: a user subclass of Dense may compute something else.
_QAT_CLASSES = {
    keras.layers.Conv2D: (QATConv2D, "conv2d"),
    keras.layers.DepthwiseConv2D: (QATDepthwiseConv2D, "depthwise_conv2d"),
    keras.layers.Dense: (QATDense, "matmul"),
    keras.layers.EinsumDense: (QATEinsumDense, "matmul"),
    keras.layers.Add: (QATAdd, "add"),
    keras.layers.Concatenate: (QATConcatenate, "concat"),
}
INPUT_OP_TYPE = "input"

CUSTOM_OBJECTS = {f"{PACKAGE}>{cls.__name__}": cls for cls in
                  (FakeQuant, QATConv2D, QATDepthwiseConv2D, QATDense, QATEinsumDense, QATAdd,
                   QATConcatenate)}
CUSTOM_OBJECTS.update({cls.__name__: cls for cls in list(CUSTOM_OBJECTS.values())})
CUSTOM_OBJECTS.update(keras_inplace.CUSTOM_OBJECTS)

_SCOPED_MAP: contextvars.ContextVar = contextvars.ContextVar("tensorforge_qat_config_map",
                                                             default=None)


@contextlib.contextmanager
def scope(config_map=None, custom_objects=None):
    """The quantization scope, as in the TF Quantization API preview and tfmot's
    quantize_scope: `with tq.scope(config_map): ...` around training, saving, loading and
    export.

    Inside it `keras.models.load_model` restores the QAT layers (and any `custom_objects` of
    your own), and `apply_quantization_on_model(model)` without a map uses `config_map`. The
    QAT layers carry their resolved settings in their configs, so loading does not need the
    map. (The layers are also registered globally under the package name `tensorforge`; the
    scope makes loading independent of registration order and of the class names used at
    save time.) Yields `config_map`."""
    token = _SCOPED_MAP.set(config_map)
    try:
        with keras.saving.custom_object_scope({**CUSTOM_OBJECTS, **(custom_objects or {})}):
            yield config_map
    finally:
        _SCOPED_MAP.reset(token)


# -- model transformation ----------------------------------------------------------------------

class _Resolver:
    """Asks the config map (or the int8 defaults) for each layer's settings; collects problems."""

    def __init__(self, config_map):
        self.config_map = config_map
        self.problems: list[Diagnostic] = []

    def resolve(self, path: str, op_type: str, *, has_weights: bool):
        if self.config_map is None:
            w, a = (DEFAULT_WEIGHT if has_weights else None), DEFAULT_ACTIVATION
        else:
            try:
                w, a = self.config_map.layer_configuration(path, op_type)
            except Exception as e:  # a bad key in the user's config: report, keep going
                self.problems.append(Diagnostic(f"configuration lookup failed: {e}",
                                                scope=path))
                return None, None
            w = _qc_from(w, weight=True) if has_weights else None
            a = _qc_from(a, weight=False)
        for p in _problems(w, weight=True) + _problems(a, weight=False):
            self.problems.append(Diagnostic(p, scope=path))
        return w, a


_FOLD_INTO = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


class _Folds:
    """Batch norms to fold while rebuilding one model: `pairs` maps a batch norm's name to the
    conv/dense whose output it alone reads; `quantized` holds the names of the layers that
    became QAT layers (cloned before the norms after them)."""

    def __init__(self, pairs: dict[str, str]):
        self.pairs = pairs
        self.quantized: set[str] = set()


def _foldable(conv, bn) -> bool:
    return (type(conv) in _FOLD_INTO and conv.built
            and keras_inplace._foldable_bn(conv, bn))


def _fold_pairs(model) -> dict[str, str]:
    """{batch norm name: conv/dense name} for each foldable pair of a Sequential/Functional
    model: a BatchNormalization (exact class, channel axis) called once, on the output of a
    Conv2D/DepthwiseConv2D/Dense (exact classes, called once, no activation of its own) that
    has no other consumer and is not a model output."""
    if isinstance(model, keras.Sequential):
        layers = model.layers
        return {bn.name: conv.name for conv, bn in zip(layers, layers[1:])
                if _foldable(conv, bn)}
    consumers: dict[int, int] = {}
    for op in model.operations:
        for node in op._inbound_nodes:
            for t in node.input_tensors:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
    outputs = {id(t) for t in keras.tree.flatten(model.outputs)}
    pairs = {}
    for bn in model.operations:
        if type(bn) is not keras.layers.BatchNormalization or len(bn._inbound_nodes) != 1:
            continue
        ins = bn._inbound_nodes[0].input_tensors
        if len(ins) != 1:
            continue
        t = ins[0]
        conv = getattr(getattr(t, "_keras_history", None), "operation", None)
        if (type(conv) in _FOLD_INTO and len(conv._inbound_nodes) == 1
                and consumers.get(id(t)) == 1 and id(t) not in outputs
                and _foldable(conv, bn)):
            pairs[bn.name] = conv.name
    return pairs


def _clone_layer(layer, resolver: _Resolver, prefix: str, ema_decay: float,
                 folds: _Folds | None = None):
    path = f"{prefix}{layer.name}"
    if isinstance(layer, keras.Model):
        return _quantize_model(layer, resolver, f"{path}/", ema_decay, quantize_inputs=False,
                               fold_batch_norm=folds is not None)
    conv_name = folds.pairs.get(layer.name) if folds is not None else None
    if conv_name is not None and conv_name in folds.quantized:
        return keras_inplace.QATFoldedBatchNormalization.from_config(
            {**layer.get_config(), "folded_into": conv_name})
    entry = _QAT_CLASSES.get(type(layer))
    if entry is None:
        return layer.__class__.from_config(layer.get_config())
    cls, op_type = entry
    w, a = resolver.resolve(path, op_type, has_weights=cls._has_kernel)
    if w is None and a is None:
        return layer.__class__.from_config(layer.get_config())
    cfg = layer.get_config()
    cfg.update(weight_quant=w.to_config() if w else None,
               activation_quant=a.to_config() if a else None, ema_decay=ema_decay)
    if folds is not None:
        folds.quantized.add(layer.name)
    return cls.from_config(cfg)


def _input_quant(name: str, resolver: _Resolver, prefix: str, ema_decay: float):
    _, a = resolver.resolve(f"{prefix}{name}", INPUT_OP_TYPE, has_weights=False)
    if a is None:
        return None
    return FakeQuant(a.bits, a.symmetric, a.narrow, ema_decay, name=f"{name}_quant")


def _is_graph_model(model) -> bool:
    return (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)
            or hasattr(model, "_run_through_graph"))


def _quantize_model(model, resolver, prefix, ema_decay, *, quantize_inputs: bool,
                    fold_batch_norm: bool = True):
    if _is_graph_model(model):
        folds = _Folds(_fold_pairs(model)) if fold_batch_norm else None
        if isinstance(model, keras.Sequential):
            return _quantize_sequential(model, resolver, prefix, ema_decay, quantize_inputs,
                                        folds)
        return _quantize_functional(model, resolver, prefix, ema_decay, quantize_inputs, folds)
    raise ConversionError(
        f"cannot apply quantization to model '{model.name}' ({type(model).__name__}) nested "
        f"in a Sequential or Functional model: only Sequential and Functional models can be "
        f"rebuilt with QAT layers (a subclassed model is quantized in place when it is the "
        f"model given to apply_quantization_on_model)")


def _quantize_sequential(model, resolver, prefix, ema_decay, quantize_inputs, folds=None):
    first = model._layers[0] if model._layers else None
    if isinstance(first, keras.layers.InputLayer):
        batch_shape, dtype, name = first.batch_shape, first.dtype, first.name
    else:
        try:
            t = model.inputs[0]
        except Exception:
            raise ConversionError(
                f"Sequential model '{model.name}' has no known input shape; give it an "
                f"Input(shape=...) layer or build it before applying quantization") from None
        batch_shape, dtype, name = t.shape, t.dtype, f"{model.name}_input"
    layers = [keras.Input(batch_shape=batch_shape, dtype=dtype, name=name)]
    if quantize_inputs:
        fq = _input_quant(name, resolver, prefix, ema_decay)
        if fq is not None:
            layers.append(fq)
    layers += [_clone_layer(layer, resolver, prefix, ema_decay, folds) for layer in model.layers]
    return keras.Sequential(layers, name=model.name, trainable=model.trainable)


def _quantize_functional(model, resolver, prefix, ema_decay, quantize_inputs, folds=None):
    fqs = {}

    def clone_function(layer):
        return _clone_layer(layer, resolver, prefix, ema_decay, folds)

    def call_function(layer, *args, **kwargs):
        # Route each use of a model input through that input's FakeQuant (one per input).
        def swap(t):
            return fqs.get(id(t), t) if isinstance(t, keras.KerasTensor) else t

        args, kwargs = keras.tree.map_structure(swap, (args, kwargs))
        return layer(*args, **kwargs)

    new_inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_input_name(t))
                  for t in model.inputs]
    if quantize_inputs:
        for t in new_inputs:
            fq = _input_quant(_input_name(t), resolver, prefix, ema_decay)
            if fq is not None:
                fqs[id(t)] = fq(t)
    structured = keras.tree.pack_sequence_as(model._inputs_struct, new_inputs) \
        if hasattr(model, "_inputs_struct") else new_inputs
    return keras.models.clone_model(model, input_tensors=structured,
                                    clone_function=clone_function,
                                    call_function=call_function if fqs else None)


def _input_name(t) -> str:
    history = getattr(t, "_keras_history", None)
    op = getattr(history, "operation", None)
    return getattr(op, "name", None) or t.name


def _copy_weights(src_model, dst_model) -> None:
    """Copies every float weight of src into the same-named layer of dst (the QAT layers hold
    the base layer's variables first, then their range variables)."""
    dst_layers = {layer.name: layer for layer in dst_model.layers}
    for layer in src_model.layers:
        new = dst_layers.get(layer.name)
        if new is None:
            continue
        if isinstance(layer, keras.Model):
            _copy_weights(layer, new)
            continue
        src_w = layer.weights
        dst_w = new.weights[:len(src_w)]
        for s, d in zip(src_w, dst_w):
            if tuple(s.shape) != tuple(d.shape):
                raise ConversionError(f"weight {s.path} of layer '{layer.name}' has shape "
                                      f"{tuple(s.shape)} but its QAT copy expects "
                                      f"{tuple(d.shape)}")
            d.assign(s)


def apply_quantization_on_model(keras_model, config_map=None, *, ema_decay: float = EMA_DECAY,
                                fold_batch_norm: bool = True, sample_inputs=None):
    """Returns a Keras model set up for quantization-aware training (see module doc): a NEW
    model for Sequential and Functional models (rebuilt with QAT layers), and for any other
    (subclassed) model the SAME model, whose layers are quantized in place
    (qat/keras_inplace.py; `sample_inputs` gives the input shapes of a model never called).
    In both, batch norms are folded into the conv/dense before them (`fold_batch_norm=False`
    keeps them separate).

    `config_map` is duck-typed: `config_map.layer_configuration(layer_path, op_type)` returns
    `(weight_config, activation_config)`, each None (stay float) or an object with `bits`,
    `symmetric`, `granularity` ("per_tensor" | "per_channel") and `narrow_range`. op_type is
    the IR op the layer becomes: conv2d, depthwise_conv2d, matmul (Dense, EinsumDense), add,
    concat, or "input" for a model input (in a subclassed model: the input of a conv/dense
    whose input is not already fake-quantized). config_map None = the map of the enclosing
    `scope(config_map)`, else int8: weights 8-bit symmetric per-channel narrow-range,
    activations 8-bit asymmetric per-tensor. Sequential/Functional: the float weights are
    copied and the input model is not modified. Raises ConversionError listing every problem
    (non-TF backend, a subclassed model nested in a graph model, unsupported settings)."""
    if keras.config.backend() != "tensorflow":
        raise ConversionError(f"QAT needs the Keras TensorFlow backend (TF's FakeQuant ops), "
                              f"but keras.config.backend() is {keras.config.backend()!r}")
    if not isinstance(keras_model, keras.Model):
        raise ConversionError(f"apply_quantization_on_model expects a keras.Model, got "
                              f"{type(keras_model).__name__}")
    if config_map is None:
        config_map = _SCOPED_MAP.get()
    resolver = _Resolver(config_map)
    if not _is_graph_model(keras_model):
        keras_inplace.quantize_in_place(
            keras_model, resolver, float(ema_decay), qat_classes=_QAT_CLASSES,
            fake_quant_cls=FakeQuant, fold_batch_norm=fold_batch_norm,
            sample_inputs=sample_inputs)
        if resolver.problems:
            raise ConversionError(f"cannot apply quantization to model '{keras_model.name}'",
                                  resolver.problems)
        if keras_model.compiled:     # the trainable state changed: compile again
            keras_model.compile_from_config(keras_model.get_compile_config())
        return keras_model
    qat = _quantize_model(keras_model, resolver, "", float(ema_decay), quantize_inputs=True,
                          fold_batch_norm=fold_batch_norm)
    if resolver.problems:
        raise ConversionError(f"cannot apply quantization to model '{keras_model.name}'",
                              resolver.problems)
    _copy_weights(keras_model, qat)
    if keras_model.compiled:
        qat.compile_from_config(keras_model.get_compile_config())
    return qat
