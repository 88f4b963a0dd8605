"""Quantized training for Keras 3 models on the TensorFlow backend: every Dense / Conv2D
product runs on int8 operands, forward and backward.

`quantized_training_keras(model)` (public through `tensorforge.quantization.quantized_training`
given a Keras model) returns a NEW model in which

- `Dense` becomes `QuantizedTrainingDense`: its matmul is a `tf.custom_gradient` whose forward
  quantizes the inputs per row and the kernel per output unit (symmetric, scales from the
  current values, round to nearest) and multiplies the int8 codes with an int32 accumulator
  (`tf.linalg.matmul(int8, int8, output_type=int32)`); its backward computes
  `dL/dx = g . W^T` and `dL/dW = x^T . g` the same way, with the gradient g quantized by
  stochastic rounding (noise from `tf.random.stateless_uniform`, seeded by `seed` and the
  gradient's own bits, so a step is reproducible);
- `Conv2D` (channels_last, no groups) becomes `QuantizedTrainingConv2D`: `extract_patches`
  (im2col, float data movement) followed by the same int8 matmul, so the convolution's
  products, forward and backward, are int8 (the scatter-add of the patch gradient back to the
  input is float data movement);
- each model input gets an `ActivationRange` (identity; records the input's range), and each
  quantized layer records the EMA range of its output (and of the tensor before a
  non-fusable activation such as softmax) while training, as tfmot's MovingAverageQuantizer.

The float weights are copied. After `fit`, `to_qat_model(model)` returns the equivalent QAT
model (`qat/keras.py`: fake-quant kernels, the recorded ranges in its FakeQuant layers), which
`tensorforge.convert` turns into a full int8 artifact with no calibration data.
"""

from __future__ import annotations

import keras

from ..ir.errors import ConversionError
from .keras import _fusable

PACKAGE = "tensorforge"
EMA_DECAY = 0.99
_MIN_RANGE = 1e-6


def _tf():
    import tensorflow as tf
    return tf


# -- the int8 matmul ---------------------------------------------------------------------------

def _quantize(x, axis: int, bits: int, noise=None):
    """Symmetric codes of `x` ([M, K]) with one scale per slice along `axis` (kept)."""
    tf = _tf()
    qmax = float((1 << (bits - 1)) - 1)
    amax = tf.reduce_max(tf.abs(x), axis=axis, keepdims=True)
    scale = tf.where(amax > 0, amax / qmax, tf.ones_like(amax))
    v = x / scale
    r = tf.round(v) if noise is None else tf.floor(v + noise)
    return tf.cast(tf.clip_by_value(r, -qmax, qmax), tf.int8), scale


def _qmatmul(a, b, bits: int, a_noise=None):
    """a [M, K] . b [K, N] on int8 codes (a per row, b per column), int32 accumulation."""
    tf = _tf()
    qa, sa = _quantize(a, 1, bits, a_noise)
    qb, sb = _quantize(b, 0, bits)
    acc = tf.linalg.matmul(qa, qb, output_type=tf.int32)
    return tf.cast(acc, tf.float32) * sa * sb


def int8_matmul(x, w, *, bits: int = 8, grad_bits: int = 8, stochastic: bool = True,
                seed: int = 0):
    """x [M, K] . w [K, N] with int8 operands forward and in both gradient products (see the
    module doc). float32 in and out."""
    tf = _tf()

    @tf.custom_gradient
    def f(x, w):
        y = _qmatmul(x, w, bits)

        def grad(g):
            g = tf.cast(g, tf.float32)
            noise1 = noise2 = None
            if stochastic:
                salt = tf.bitcast(tf.reduce_sum(g), tf.int32)
                noise1 = tf.random.stateless_uniform(tf.shape(g), tf.stack([seed, salt]))
                noise2 = tf.random.stateless_uniform(tf.shape(g), tf.stack([seed + 1, salt]))
            dx = _qmatmul(g, tf.transpose(w), grad_bits, noise1)                 # [M, K]
            # x^T . g as (g^T . x)^T, so that g is the left operand (quantized per row = per
            # output unit, with stochastic rounding).
            dw = tf.transpose(_qmatmul(tf.transpose(g), x, grad_bits,
                                       None if noise2 is None else tf.transpose(noise2)))
            return dx, dw

        return y, grad

    return f(x, w)


# -- range recording ---------------------------------------------------------------------------

class _Range:
    """Three non-trainable variables of a layer: an EMA min / max and an initialised flag."""

    def __init__(self, layer, prefix: str):
        const = keras.initializers.Constant
        self.min = layer.add_weight(name=f"{prefix}_min", shape=(), trainable=False,
                                    initializer=const(0.0))
        self.max = layer.add_weight(name=f"{prefix}_max", shape=(), trainable=False,
                                    initializer=const(1.0))
        self.initialized = layer.add_weight(name=f"{prefix}_initialized", shape=(),
                                            trainable=False, initializer=const(0.0))

    def update(self, x, decay: float):
        tf = _tf()
        x = tf.stop_gradient(tf.cast(x, tf.float32))
        lo = tf.minimum(tf.reduce_min(x), 0.0)
        hi = tf.maximum(tf.reduce_max(x), 0.0)
        first = tf.equal(tf.convert_to_tensor(self.initialized), 0.0)
        new_lo = tf.where(first, lo, decay * self.min + (1.0 - decay) * lo)
        new_hi = tf.where(first, hi, decay * self.max + (1.0 - decay) * hi)
        self.min.assign(new_lo)
        self.max.assign(tf.maximum(new_hi, new_lo + _MIN_RANGE))
        self.initialized.assign(1.0)

    def values(self):
        return (float(keras.ops.convert_to_numpy(self.min)),
                float(keras.ops.convert_to_numpy(self.max)),
                float(keras.ops.convert_to_numpy(self.initialized)))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActivationRange(keras.layers.Layer):
    """Identity that records the EMA range of its input while training (variables
    `range_min`, `range_max`, `range_initialized`)."""

    def __init__(self, ema_decay: float = EMA_DECAY, **kwargs):
        super().__init__(**kwargs)
        self.ema_decay = float(ema_decay)
        self.supports_masking = True

    def build(self, input_shape=None):
        """Creates the range variables."""
        self.range = _Range(self, "range")
        self.built = True

    def call(self, inputs, training=None):
        """`inputs`; in training also updates the range."""
        if training:
            self.range.update(inputs, self.ema_decay)
        return inputs

    def compute_output_shape(self, input_shape):
        """Same shape as the input."""
        return input_shape

    def get_config(self):
        """Serializable config."""
        return {**super().get_config(), "ema_decay": self.ema_decay}


class _QTMixin:
    """int8 forward/backward products, output (and pre-activation) range recording."""

    def __init__(self, *args, bits=8, grad_bits=8, rounding="stochastic", seed=0,
                 ema_decay=EMA_DECAY, **kwargs):
        super().__init__(*args, **kwargs)
        self.bits, self.grad_bits = int(bits), int(grad_bits)
        self.rounding, self.seed, self.ema_decay = str(rounding), int(seed), float(ema_decay)

    def build(self, input_shape):
        """Builds the base layer, then the range variables."""
        super().build(input_shape)
        self.output_range = _Range(self, "output_range")
        self.pre_activation_range = (None if _fusable(getattr(self, "activation", None))
                                     else _Range(self, "pre_activation_range"))

    def _matmul(self, x2d, kernel2d):
        return int8_matmul(x2d, kernel2d, bits=self.bits, grad_bits=self.grad_bits,
                           stochastic=self.rounding == "stochastic", seed=self.seed)

    def call(self, inputs, training=None):
        """The int8 product, bias, activation; records the ranges in training."""
        tf = _tf()
        y = self._product(tf.cast(inputs, tf.float32))
        if self.use_bias:
            y = y + self.bias
        if self.activation is not None:
            if training and self.pre_activation_range is not None:
                self.pre_activation_range.update(y, self.ema_decay)
            y = self.activation(y)
        if training:
            self.output_range.update(y, self.ema_decay)
        return y

    def get_config(self):
        """Base config plus the quantized-training settings."""
        return {**super().get_config(), "bits": self.bits, "grad_bits": self.grad_bits,
                "rounding": self.rounding, "seed": self.seed, "ema_decay": self.ema_decay}


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedTrainingDense(_QTMixin, keras.layers.Dense):
    """Dense whose matmul has int8 operands forward and backward."""

    def _product(self, x):
        tf = _tf()
        k = self.kernel
        flat = tf.reshape(x, [-1, k.shape[0]])
        y = self._matmul(flat, k)
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [k.shape[1]]], 0))


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedTrainingConv2D(_QTMixin, keras.layers.Conv2D):
    """Conv2D (channels_last, one group) as im2col + the int8 matmul."""

    def _product(self, x):
        tf = _tf()
        kh, kw, c, o = self.kernel.shape
        patches = tf.image.extract_patches(
            x, sizes=[1, kh, kw, 1], strides=[1, *self.strides, 1],
            rates=[1, *self.dilation_rate, 1], padding=self.padding.upper())
        shape = tf.shape(patches)
        y = self._matmul(tf.reshape(patches, [-1, kh * kw * c]),
                         tf.reshape(self.kernel, [kh * kw * c, o]))
        return tf.reshape(y, tf.concat([shape[:3], [o]], 0))


_CLASSES = {keras.layers.Dense: QuantizedTrainingDense,
            keras.layers.Conv2D: QuantizedTrainingConv2D}
_BACK = {QuantizedTrainingDense: keras.layers.Dense,
         QuantizedTrainingConv2D: keras.layers.Conv2D}
_QT_KEYS = ("bits", "grad_bits", "rounding", "seed", "ema_decay")


def _swappable(layer) -> bool:
    cls = _CLASSES.get(type(layer))
    if cls is None:
        return False
    if cls is QuantizedTrainingConv2D:
        return layer.data_format == "channels_last" and layer.groups == 1
    return True


# -- model transformation ----------------------------------------------------------------------

def _rebuild(model, clone_layer, input_layer):
    """A copy of a Sequential / Functional `model`: each layer through `clone_layer` (None
    drops it from a Sequential model), each input followed by `input_layer(name)` (or nothing
    when it returns None)."""
    if isinstance(model, keras.Sequential):
        first = model._layers[0] if model._layers else None
        if isinstance(first, keras.layers.InputLayer):
            batch_shape, dtype, name = first.batch_shape, first.dtype, first.name
        else:
            t = model.inputs[0]
            batch_shape, dtype, name = t.shape, t.dtype, f"{model.name}_input"
        layers = [keras.Input(batch_shape=batch_shape, dtype=dtype, name=name)]
        extra = input_layer(name)
        if extra is not None:
            layers.append(extra)
        layers += [c for c in map(clone_layer, model.layers) if c is not None]
        return keras.Sequential(layers, name=model.name)
    if not (getattr(model, "_is_graph_network", False) or hasattr(model, "_run_through_graph")):
        raise ConversionError(
            f"quantized training: model '{model.name}' ({type(model).__name__}) is subclassed; "
            f"only Sequential and Functional models can be rebuilt")
    from .keras import _input_name

    swaps = {}
    new_inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_input_name(t))
                  for t in model.inputs]
    for t in new_inputs:
        extra = input_layer(_input_name(t))
        if extra is not None:
            swaps[id(t)] = extra(t)

    def call_function(layer, *args, **kwargs):
        def swap(t):
            return swaps.get(id(t), t) if isinstance(t, keras.KerasTensor) else t
        args, kwargs = keras.tree.map_structure(swap, (args, kwargs))
        return layer(*args, **kwargs)

    structured = (keras.tree.pack_sequence_as(model._inputs_struct, new_inputs)
                  if hasattr(model, "_inputs_struct") else new_inputs)
    return keras.models.clone_model(model, input_tensors=structured, clone_function=clone_layer,
                                    call_function=call_function if swaps else None)


def _copy_float_weights(src, dst) -> None:
    by_name = {layer.name: layer for layer in dst.layers}
    for layer in src.layers:
        new = by_name.get(layer.name)
        if new is None or not layer.weights:
            continue
        for s, d in zip(layer.weights, new.weights):   # the range variables come last
            d.assign(s)


def _n_range_weights(layer) -> int:
    return 3 * (1 + (layer.pre_activation_range is not None))


def quantized_training_keras(model, *, bits: int = 8, grad_bits: int = 8,
                             rounding: str = "stochastic", seed: int = 0,
                             ema_decay: float = EMA_DECAY):
    """A NEW Keras model for quantized training (see the module doc); the float weights are
    copied and the input model is unchanged. Keras TensorFlow backend only."""
    if keras.config.backend() != "tensorflow":
        raise ConversionError(f"quantized training for Keras needs the TensorFlow backend, but "
                              f"keras.config.backend() is {keras.config.backend()!r}")
    if not isinstance(model, keras.Model):
        raise ConversionError(f"quantized_training expects a keras.Model, got "
                              f"{type(model).__name__}")
    for name, v in (("bits", bits), ("grad_bits", grad_bits)):
        if not isinstance(v, int) or not 2 <= v <= 8:
            raise ValueError(f"quantized_training: {name} must be an int in [2, 8], got {v!r}")
    if rounding not in ("stochastic", "nearest"):
        raise ValueError(f"quantized_training: rounding must be 'stochastic' or 'nearest', got "
                         f"{rounding!r}")
    settings = dict(bits=bits, grad_bits=grad_bits, rounding=rounding, seed=seed,
                    ema_decay=ema_decay)

    def clone_layer(layer):
        if _swappable(layer):
            return _CLASSES[type(layer)].from_config({**layer.get_config(), **settings})
        return layer.__class__.from_config(layer.get_config())

    out = _rebuild(model, clone_layer,
                   lambda name: ActivationRange(ema_decay, name=f"{name}_range"))
    _copy_float_weights(model, out)
    if model.compiled:
        out.compile_from_config(model.get_compile_config())
    return out


def to_qat_model(model):
    """The QAT model (`qat/keras.py`) equivalent to a quantized-training model, with its
    weights and the recorded ranges: it converts to a full int8 artifact without calibration
    (`tensorforge.convert(to_qat_model(model), target="tflite")`). Every range must have been
    recorded (at least one training batch)."""
    from .keras import apply_quantization_on_model

    def clone_layer(layer):
        back = _BACK.get(type(layer))
        if back is not None:
            cfg = {k: v for k, v in layer.get_config().items() if k not in _QT_KEYS}
            return back.from_config(cfg)
        if isinstance(layer, ActivationRange):   # dropped from a Sequential model
            return None if sequential else keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    sequential = isinstance(model, keras.Sequential)
    ranges = {layer.name: layer for layer in model.layers if isinstance(layer, ActivationRange)}
    float_model = _rebuild(model, clone_layer, lambda name: None)
    qat = apply_quantization_on_model(float_model)
    missing = []
    by_name = {layer.name: layer for layer in qat.layers}
    for layer in model.layers:
        new = by_name.get(layer.name)
        if isinstance(layer, tuple(_BACK)):
            n = len(layer.weights) - _n_range_weights(layer)
            for s, d in zip(layer.weights[:n], new.weights):
                d.assign(s)
            pairs = [(layer.output_range, new.output_quant)]
            if layer.pre_activation_range is not None:
                pairs.append((layer.pre_activation_range, new.pre_activation_quant))
            for rec, fq in pairs:
                lo, hi, seen = rec.values()
                if not seen:
                    missing.append(layer.name)
                fq.range_min.assign(lo)
                fq.range_max.assign(hi)
                fq.range_initialized.assign(1.0)
        elif layer.weights and new is not None and not isinstance(layer, ActivationRange):
            for s, d in zip(layer.weights, new.weights):
                d.assign(s)
    for name, rec in ranges.items():
        fq = by_name.get(name[:-len("_range")] + "_quant")
        lo, hi, seen = rec.range.values()
        if fq is None or not seen:
            missing.append(name)
            continue
        fq.range_min.assign(lo)
        fq.range_max.assign(hi)
        fq.range_initialized.assign(1.0)
    if missing:
        raise ConversionError(f"to_qat_model: no recorded range for {sorted(set(missing))}: "
                              f"train the model (fit) before exporting it")
    return qat
