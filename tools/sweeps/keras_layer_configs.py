"""Tiny configurations of every layer class in `keras.layers` and every function in `keras.ops`
(Keras 3.15), for the Keras conformance sweep (`keras_layers.py`).

A layer case is the constructor, as code (`layers.Dense(4)`), the inputs it is applied to and,
when it is not `layer(x)` (one input) or `layer([x, y, ...])` (several), how it is called.
An op case is an expression over the inputs (`ops.take_along_axis(x, y, axis=1)`), evaluated in
the `call` of a small custom layer. Both are plain strings: the table shows them as they are,
and they are evaluated with `keras`, `layers`, `ops`, `np`, the inputs (`x`, `y`, `z`, `u`,
`v` in order), `layer` (the layer, in a call expression) and `const(*shape)` (a deterministic
random float32 array: a fixed kernel or weight for the functional ops) in scope.

An input is `F(*dims)` (float32, standard normal, or uniform in [lo, hi)), `I(*dims)` (integer
ids in [lo, hi)) or `B(*dims)` (bool), without the batch dim; `gen` names a structured
generator of GENERATORS (SPD matrices, NaN-holding arrays, ...). The batch is dynamic
(verified at 2 and 3) unless a case gives `batch=N`: ops that work on whole 1-D or 2-D arrays
(`ops.diag`, `ops.lstsq`) take the batch dim as their first array dim.

A value that is a string instead of a case excludes the item, and the string says why; it
appears in the table with that reason and is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class In:
    """One model input: its dims without the batch, dtype and how its values are drawn."""

    dims: tuple
    dtype: str = "float32"
    lo: float | None = None     # floats: uniform in [lo, hi) (default: standard normal)
    hi: float | None = None     # ints: in [lo, hi)
    gen: str = ""               # a key of GENERATORS, for structured values

    def describe(self) -> str:
        short = {"float32": "f32", "int32": "i32", "int64": "i64", "bool": "bool"}
        dims = ", ".join(["b", *map(str, self.dims)])
        what = f"{short.get(self.dtype, self.dtype)}[{dims}]"
        if self.gen:
            what += f" {self.gen}"
        elif self.lo is not None:
            what += f" in [{self.lo:g}, {self.hi:g})"
        return what


def F(*dims, lo=None, hi=None, gen=""):
    """A float32 input."""
    return In(tuple(dims), "float32", lo, hi, gen)


def I(*dims, lo=0, hi=10, dtype="int32", gen=""):  # noqa: E743 (I for integer, as F, B)
    """An integer input with values in [lo, hi)."""
    return In(tuple(dims), dtype, lo, hi, gen)


def B(*dims):
    """A bool input."""
    return In(tuple(dims), "bool")


def _image(rng, shape):
    return rng.uniform(0, 255, shape)


def _spd(rng, shape):
    """Symmetric positive definite matrices (well conditioned)."""
    a = rng.standard_normal(shape)
    n = shape[-1]
    return a @ np.swapaxes(a, -1, -2) / n + np.eye(n)


def _symmetric(rng, shape):
    a = rng.standard_normal(shape)
    return (a + np.swapaxes(a, -1, -2)) / 2


def _well_conditioned(rng, shape):
    """A random matrix plus 3 * I (no pivot ties, far from singular)."""
    return rng.standard_normal(shape) + 3 * np.eye(shape[-1])


def _lower(rng, shape):
    """Lower triangular with a diagonal in [1, 2] (a Cholesky factor)."""
    a = np.tril(rng.standard_normal(shape), -1)
    return a + np.eye(shape[-1]) * rng.uniform(1, 2, shape[:-1])[..., None]


def _with_nan(rng, shape):
    """Standard normal with about a fifth of the values NaN (never a whole last-axis row)."""
    a = rng.standard_normal(shape)
    a[rng.random(shape) < 0.2] = np.nan
    a[..., 0] = rng.standard_normal(shape[:-1])
    return a


def _special(rng, shape):
    """Standard normal with inf, -inf and NaN in it."""
    a = rng.standard_normal(shape).ravel()
    a[::5] = np.inf
    a[1::7] = -np.inf
    a[2::6] = np.nan
    return a.reshape(shape)


def _small_ints(rng, shape):
    """Floats from {-1, 0, 1}: exact ties and zeros (comparisons, divide_no_nan, heaviside)."""
    return rng.integers(-1, 2, shape).astype(np.float64)


def _masked_steps(rng, shape):
    """Sequences whose every other time step is all zeros (the mask value)."""
    a = rng.standard_normal(shape)
    a[:, ::2] = 0.0
    return a


def _sorted_ids(rng, shape):
    """Sorted segment ids in [0, 3), each segment present."""
    return np.sort(np.concatenate([np.arange(3), rng.integers(0, 3, shape[0] - 3)]))


def _vocab_ids(rng, shape):
    """IntegerLookup inputs: vocabulary entries and an out-of-vocabulary 7."""
    return rng.choice(np.array([12, 36, 1138, 42, 7]), shape)


def _probabilities(rng, shape):
    """Rows that sum to 1 (target distributions)."""
    a = rng.uniform(0.1, 1, shape)
    return a / a.sum(-1, keepdims=True)


GENERATORS = {
    "image": _image, "spd": _spd, "symmetric": _symmetric,
    "well-conditioned": _well_conditioned, "lower-triangular": _lower,
    "with NaN": _with_nan, "with inf and NaN": _special, "in {-1, 0, 1}": _small_ints,
    "zero steps": _masked_steps, "sorted ids": _sorted_ids, "vocabulary ids": _vocab_ids,
    "probabilities": _probabilities,
}


@dataclass(frozen=True)
class Case:
    """How to build and feed one item's model (see the module docstring)."""

    code: str                     # a layer's constructor, or an op's expression
    inputs: tuple = ()
    call: str = ""                # layers: the call expression (default layer(x) / layer([...]))
    batch: int | None = None      # a static batch size; None: dynamic, verified at 2 and 3
    subclassed: bool = False      # a subclassed model (Keras cannot build this functionally)
    note: str = ""
    options: dict = field(default_factory=dict)   # extra keyword arguments of convert()
    # Why the item does not convert (or not to int8), shown when it does not: a known
    # limitation, not a bug to find.
    limitation: str = ""


def L(code: str, *inputs: In, **kw) -> Case:
    """A layer case: `code` builds the layer."""
    return Case(code, tuple(inputs), **kw)


def O(code: str, *inputs: In, **kw) -> Case:  # noqa: E743
    """An op case: `code` is the expression over the inputs."""
    return Case(code, tuple(inputs), **kw)


_STRING_HASH = ("hashes each value's decimal string with FarmHash64 (AsString + "
                "StringToHashBucketFast): neither TFLite's builtins nor TF.js hash strings; "
                "IntegerLookup with a vocabulary converts")
_IMG = F(16, 16, 3, gen="image")     # preprocessing layers: pixel values in [0, 255)
_SEQ = F(5, 3)                        # recurrent layers: 5 steps of 3 features


# -- layers --------------------------------------------------------------------------------------

# Keyed by the class's own name (`cls.__name__`); aliases (Convolution2D, AvgPool2D, ...) share
# the row of their class.
LAYERS: dict[str, Case | str] = {
    # core
    "Dense": L("layers.Dense(4, activation='relu')", F(5, 8)),
    "EinsumDense": L("layers.EinsumDense('abc,cd->abd', output_shape=(None, 4), bias_axes='d')",
                     F(5, 8)),
    "Embedding": L("layers.Embedding(20, 4)", I(6, hi=20)),
    "ReversibleEmbedding": L("layers.ReversibleEmbedding(20, 4)", I(6, hi=20), F(4),
                             call="(layer(x), layer(y, reverse=True))",
                             note="ids to vectors, and vectors to logits (reverse=True)"),
    "Identity": L("layers.Identity()", F(3, 4)),
    "Lambda": L("layers.Lambda(lambda t: ops.sin(t) * 2.0)", F(3, 4)),
    "Masking": L("layers.Masking(mask_value=0.0)", F(6, 3, gen="zero steps")),
    "Activation": L("layers.Activation('tanh')", F(3, 4)),
    "ELU": L("layers.ELU(alpha=0.5)", F(3, 4)),
    "LeakyReLU": L("layers.LeakyReLU(negative_slope=0.1)", F(3, 4)),
    "PReLU": L("layers.PReLU()", F(3, 4)),
    "ReLU": L("layers.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.5)",
              F(3, 4, lo=-8, hi=8)),
    "Softmax": L("layers.Softmax(axis=-1)", F(3, 5)),
    # convolution
    "Conv1D": L("layers.Conv1D(4, 3, strides=2, padding='same')", F(9, 3)),
    "Conv2D": L("layers.Conv2D(4, 3, padding='same', dilation_rate=2)", F(8, 8, 3)),
    "Conv3D": L("layers.Conv3D(4, 3)", F(5, 5, 5, 2)),
    "Conv1DTranspose": L("layers.Conv1DTranspose(4, 3, strides=2)", F(6, 3)),
    "Conv2DTranspose": L("layers.Conv2DTranspose(4, 3, strides=2, padding='same')",
                         F(5, 5, 3)),
    "Conv3DTranspose": L("layers.Conv3DTranspose(4, 3, strides=2)", F(3, 3, 3, 2)),
    "DepthwiseConv1D": L("layers.DepthwiseConv1D(3, depth_multiplier=2)", F(8, 3)),
    "DepthwiseConv2D": L("layers.DepthwiseConv2D(3, depth_multiplier=2, padding='same')",
                         F(6, 6, 3)),
    "SeparableConv1D": L("layers.SeparableConv1D(4, 3)", F(8, 3)),
    "SeparableConv2D": L("layers.SeparableConv2D(4, 3, padding='same')", F(6, 6, 3)),
    # pooling
    "AveragePooling1D": L("layers.AveragePooling1D(2)", F(8, 3)),
    "AveragePooling2D": L("layers.AveragePooling2D(3, strides=2, padding='same')", F(7, 7, 3)),
    "AveragePooling3D": L("layers.AveragePooling3D(2)", F(4, 4, 4, 2)),
    "MaxPooling1D": L("layers.MaxPooling1D(2)", F(8, 3)),
    "MaxPooling2D": L("layers.MaxPooling2D(3, strides=2, padding='same')", F(7, 7, 3)),
    "MaxPooling3D": L("layers.MaxPooling3D(2)", F(4, 4, 4, 2)),
    "GlobalAveragePooling1D": L("layers.GlobalAveragePooling1D()", F(6, 3)),
    "GlobalAveragePooling2D": L("layers.GlobalAveragePooling2D()", F(5, 5, 3)),
    "GlobalAveragePooling3D": L("layers.GlobalAveragePooling3D()", F(4, 4, 4, 2)),
    "GlobalMaxPooling1D": L("layers.GlobalMaxPooling1D()", F(6, 3)),
    "GlobalMaxPooling2D": L("layers.GlobalMaxPooling2D()", F(5, 5, 3)),
    "GlobalMaxPooling3D": L("layers.GlobalMaxPooling3D()", F(4, 4, 4, 2)),
    "AdaptiveAveragePooling1D": L("layers.AdaptiveAveragePooling1D(3)", F(10, 4)),
    "AdaptiveAveragePooling2D": L("layers.AdaptiveAveragePooling2D((3, 2))", F(7, 6, 3)),
    "AdaptiveAveragePooling3D": L("layers.AdaptiveAveragePooling3D((2, 2, 2))", F(5, 4, 6, 2)),
    "AdaptiveMaxPooling1D": L("layers.AdaptiveMaxPooling1D(3)", F(10, 4)),
    "AdaptiveMaxPooling2D": L("layers.AdaptiveMaxPooling2D((3, 2))", F(7, 6, 3)),
    "AdaptiveMaxPooling3D": L("layers.AdaptiveMaxPooling3D((2, 2, 2))", F(5, 4, 6, 2)),
    # recurrent (cells run inside keras.layers.RNN, the only way to use one)
    "LSTM": L("layers.LSTM(4)", _SEQ),
    "GRU": L("layers.GRU(4, return_sequences=True)", _SEQ),
    "SimpleRNN": L("layers.SimpleRNN(4)", _SEQ),
    "RNN": L("layers.RNN(layers.SimpleRNNCell(4), return_sequences=True, go_backwards=True)",
             _SEQ),
    "LSTMCell": L("layers.RNN(layers.LSTMCell(4))", _SEQ, note="a cell runs inside RNN"),
    "GRUCell": L("layers.RNN(layers.GRUCell(4))", _SEQ, note="a cell runs inside RNN"),
    "SimpleRNNCell": L("layers.RNN(layers.SimpleRNNCell(4))", _SEQ,
                       note="a cell runs inside RNN"),
    "StackedRNNCells": L("layers.RNN(layers.StackedRNNCells([layers.LSTMCell(4), "
                         "layers.GRUCell(3)]))", _SEQ, note="cells run inside RNN"),
    "Bidirectional": L("layers.Bidirectional(layers.LSTM(4, return_sequences=True))", _SEQ),
    "ConvLSTM1D": L("layers.ConvLSTM1D(4, 3, padding='same')", F(3, 6, 2)),
    "ConvLSTM2D": L("layers.ConvLSTM2D(4, 3, padding='same', return_sequences=True)",
                    F(3, 5, 5, 2)),
    "ConvLSTM3D": L("layers.ConvLSTM3D(2, 3, padding='same')", F(3, 4, 4, 4, 1)),
    "TimeDistributed": L("layers.TimeDistributed(layers.Conv2D(2, 3))", F(3, 6, 6, 2)),
    # attention
    "Attention": L("layers.Attention(use_scale=True)", F(5, 4), F(6, 4)),
    "AdditiveAttention": L("layers.AdditiveAttention()", F(5, 4), F(6, 4)),
    "MultiHeadAttention": L("layers.MultiHeadAttention(num_heads=2, key_dim=4)",
                            F(5, 8), F(6, 8), call="layer(x, y)"),
    "GroupQueryAttention": L("layers.GroupQueryAttention(head_dim=4, num_query_heads=4, "
                             "num_key_value_heads=2)", F(5, 8), F(6, 8), call="layer(x, y)"),
    # normalization
    "BatchNormalization": L("layers.BatchNormalization()", F(6, 4)),
    "LayerNormalization": L("layers.LayerNormalization()", F(5, 8)),
    "GroupNormalization": L("layers.GroupNormalization(groups=2)", F(4, 4, 6)),
    "RMSNormalization": L("layers.RMSNormalization()", F(5, 8)),
    "UnitNormalization": L("layers.UnitNormalization()", F(5, 4)),
    "SpectralNormalization": L("layers.SpectralNormalization(layers.Dense(4))", F(8)),
    # regularization: the identity at inference
    "Dropout": L("layers.Dropout(0.5)", F(3, 4)),
    "AlphaDropout": L("layers.AlphaDropout(0.2)", F(3, 4)),
    "GaussianDropout": L("layers.GaussianDropout(0.3)", F(3, 4)),
    "GaussianNoise": L("layers.GaussianNoise(0.3)", F(3, 4)),
    "SpatialDropout1D": L("layers.SpatialDropout1D(0.5)", F(6, 3)),
    "SpatialDropout2D": L("layers.SpatialDropout2D(0.5)", F(4, 4, 3)),
    "SpatialDropout3D": L("layers.SpatialDropout3D(0.5)", F(3, 3, 3, 2)),
    "ActivityRegularization": L("layers.ActivityRegularization(l1=0.01)", F(3, 4)),
    # reshaping
    "Flatten": L("layers.Flatten()", F(3, 4, 2)),
    "Reshape": L("layers.Reshape((4, 3))", F(3, 4)),
    "Permute": L("layers.Permute((2, 1))", F(3, 4)),
    "RepeatVector": L("layers.RepeatVector(3)", F(4)),
    "Cropping1D": L("layers.Cropping1D((1, 2))", F(8, 3)),
    "Cropping2D": L("layers.Cropping2D(((1, 2), (0, 1)))", F(6, 6, 3)),
    "Cropping3D": L("layers.Cropping3D(1)", F(4, 4, 4, 2)),
    "ZeroPadding1D": L("layers.ZeroPadding1D(2)", F(5, 3)),
    "ZeroPadding2D": L("layers.ZeroPadding2D(((1, 2), (0, 1)))", F(4, 4, 3)),
    "ZeroPadding3D": L("layers.ZeroPadding3D(1)", F(3, 3, 3, 2)),
    "UpSampling1D": L("layers.UpSampling1D(2)", F(4, 3)),
    "UpSampling2D": L("layers.UpSampling2D(2, interpolation='bilinear')", F(4, 4, 3)),
    "UpSampling3D": L("layers.UpSampling3D(2)", F(3, 3, 3, 2)),
    # merging
    "Add": L("layers.Add()", F(3, 4), F(3, 4)),
    "Subtract": L("layers.Subtract()", F(3, 4), F(3, 4)),
    "Multiply": L("layers.Multiply()", F(3, 4), F(3, 4)),
    "Average": L("layers.Average()", F(3, 4), F(3, 4)),
    "Maximum": L("layers.Maximum()", F(3, 4), F(3, 4)),
    "Minimum": L("layers.Minimum()", F(3, 4), F(3, 4)),
    "Concatenate": L("layers.Concatenate(axis=-1)", F(3, 4), F(3, 2)),
    "Dot": L("layers.Dot(axes=(2, 2))", F(3, 4), F(5, 4)),
    # preprocessing: numeric features
    "Normalization": L("layers.Normalization(mean=[0.5, -1.0, 0.0, 2.0], "
                       "variance=[1.0, 4.0, 0.25, 2.0])", F(3, 4)),
    "Discretization": L("layers.Discretization(bin_boundaries=[-1.0, 0.0, 0.5, 1.0])", F(5)),
    "CategoryEncoding": L("layers.CategoryEncoding(num_tokens=6, output_mode='multi_hot')",
                          I(3, hi=6)),
    "Hashing": L("layers.Hashing(num_bins=8)", I(4, hi=1000), limitation=_STRING_HASH),
    "HashedCrossing": L("layers.HashedCrossing(num_bins=10)", I(1, hi=100), I(1, hi=100),
                        call="layer((x, y))", limitation=_STRING_HASH),
    "IntegerLookup": L("layers.IntegerLookup(vocabulary=[12, 36, 1138, 42])",
                       I(5, dtype="int64", gen="vocabulary ids")),
    "StringLookup": "string tensors in or out: the IR has no string dtype, so tokenizing and "
                    "looking up strings stays in the input pipeline (IntegerLookup and Hashing "
                    "on integer ids are swept)",
    "TextVectorization": "string inputs (and adapt() on text): the IR has no string dtype, so "
                         "text preprocessing stays in the input pipeline",
    # preprocessing: images (Rescaling .. CenterCrop are deterministic; AutoContrast,
    # CLAHE and Equalization transform at inference too; the Random* and mixing layers are the
    # identity at inference)
    "Rescaling": L("layers.Rescaling(scale=1 / 127.5, offset=-1.0)", _IMG),
    "Resizing": L("layers.Resizing(6, 10)", F(8, 8, 3)),
    "CenterCrop": L("layers.CenterCrop(4, 4)", F(8, 6, 3)),
    "Pipeline": L("layers.Pipeline([layers.Rescaling(1 / 255), layers.CenterCrop(8, 8)])",
                  _IMG),
    "AutoContrast": L("layers.AutoContrast(value_range=(0, 255))", _IMG),
    "ContrastLimitedAdaptiveHistogramEqualization": L(
        "layers.ContrastLimitedAdaptiveHistogramEqualization(value_range=(0, 255), "
        "tile_grid_size=(2, 2))", _IMG),
    "Equalization": L("layers.Equalization(value_range=(0, 255))", _IMG, subclassed=True,
                      note="a subclassed model: Keras cannot build it functionally (its "
                           "compute_output_spec returns its input: 'part of a cycle')"),
    "MaxNumBoundingBoxes": L("layers.MaxNumBoundingBoxes(max_number=3)", _IMG,
                             note="on images alone (its boxes are a tf.data concern)"),
    "AugMix": L("layers.AugMix(value_range=(0, 255))", _IMG),
    "RandAugment": L("layers.RandAugment(value_range=(0, 255))", _IMG),
    "CutMix": L("layers.CutMix()", _IMG),
    "MixUp": L("layers.MixUp()", _IMG),
    "RandomBrightness": L("layers.RandomBrightness(0.2)", _IMG),
    "RandomColorDegeneration": L("layers.RandomColorDegeneration(0.5)", _IMG),
    "RandomColorJitter": L("layers.RandomColorJitter(value_range=(0, 255), "
                           "brightness_factor=0.2, contrast_factor=0.2)", _IMG),
    "RandomContrast": L("layers.RandomContrast(0.2)", _IMG),
    "RandomCrop": L("layers.RandomCrop(8, 8)", _IMG),
    "RandomElasticTransform": L("layers.RandomElasticTransform()", _IMG),
    "RandomErasing": L("layers.RandomErasing()", _IMG),
    "RandomFlip": L("layers.RandomFlip()", _IMG),
    "RandomGaussianBlur": L("layers.RandomGaussianBlur()", _IMG),
    "RandomGrayscale": L("layers.RandomGrayscale()", _IMG),
    "RandomHue": L("layers.RandomHue(0.2)", _IMG),
    "RandomInvert": L("layers.RandomInvert()", _IMG),
    "RandomPerspective": L("layers.RandomPerspective()", _IMG),
    "RandomPosterization": L("layers.RandomPosterization(factor=(1, 8))", _IMG),
    "RandomRotation": L("layers.RandomRotation(0.2)", _IMG),
    "RandomSaturation": L("layers.RandomSaturation(0.5)", _IMG),
    "RandomSharpness": L("layers.RandomSharpness(0.5)", _IMG),
    "RandomShear": L("layers.RandomShear(x_factor=0.2, y_factor=0.2)", _IMG),
    "RandomTranslation": L("layers.RandomTranslation(0.2, 0.2)", _IMG),
    "RandomZoom": L("layers.RandomZoom(0.2)", _IMG),
    "Solarization": L("layers.Solarization(addition_factor=0.5, threshold_factor=0.5)", _IMG),
    # preprocessing: audio
    "MelSpectrogram": L("layers.MelSpectrogram(fft_length=64, sequence_stride=16, "
                        "num_mel_bins=8, sampling_rate=8000)", F(256)),
    "STFTSpectrogram": L("layers.STFTSpectrogram(mode='log', frame_length=32, frame_step=8, "
                         "fft_length=32)", F(128, 1),
                         limitation="int8: Keras floors the magnitude at 1e-7 before the log; "
                                    "on the magnitude's int8 grid (a step of 0.76 here) the "
                                    "floor rounds to 0 and the log gives -inf; keep the layer "
                                    "float (a None layer config)"),
    # wrapping other code
    "TFSMLayer": L("layers.TFSMLayer(tiny_saved_model(), call_endpoint='serving_default')",
                   F(4), note="wraps a tiny SavedModel (matmul + tanh) written for the case"),
    "JaxLayer": "wraps a JAX function: runs on the JAX backend only (this sweep runs Keras on "
                "TensorFlow; JAX functions are swept in conformance/jax.md)",
    "FlaxLayer": "wraps a Flax module: runs on the JAX backend only (this sweep runs Keras on "
                 "TensorFlow; JAX programs are swept in conformance/jax.md)",
    "TorchModuleWrapper": "wraps a torch.nn.Module: runs on the torch backend only, which "
                          "tensorforge does not lift",
    # not layers one applies
    "InputLayer": "the placeholder of a model's input (every case has one), not a computation",
    "InputSpec": "a shape/dtype specification, not a layer",
    "Layer": "the base class (every op row runs in a Layer subclass)",
    "Wrapper": "an abstract base (Bidirectional, TimeDistributed and SpectralNormalization "
               "are its concrete subclasses, swept above)",
}


# -- ops -----------------------------------------------------------------------------------------

_X = F(3, 4)
_XY = (F(3, 4), F(3, 4))
_POS = F(3, 4, lo=0.1, hi=3)       # log, sqrt and friends
_UNIT = F(3, 4, lo=-0.9, hi=0.9)   # arcsin, arctanh, erfinv
_WIDE = F(3, 4, lo=-4, hi=4)       # rounding
_IMG_OP = F(8, 8, 3)
_INTS = (I(3, 4, lo=0, hi=64), I(3, 4, lo=1, hi=64))
_SHIFTS = (I(3, 4, lo=0, hi=1000), I(3, 4, lo=0, hi=5))
_NAN = F(3, 4, gen="with NaN")
_MAT = F(3, 3, gen="well-conditioned")
_COMPLEX = F(4, 2)                 # real and imaginary parts, for view_as_complex
# Ops whose Keras 3.15 TensorFlow implementation cannot run inside a tf.function (so no traced
# model, whatever the converter, can hold them):
_KERAS_TF_GRAPH = ("Keras's TensorFlow backend cannot trace it in a graph ({}; "
                   "OperatorNotAllowedInGraphError or TypeError inside tf.function)")

OPS: dict[str, Case | str] = {
    # -- elementwise, one float input (aliases share a row: swish is silu, hard_swish
    # hard_silu)
    **{n: O(f"ops.{n}(x)", _X) for n in [
        "abs", "absolute", "arcsinh", "arctan", "cbrt", "cos", "cosh", "deg2rad", "erf",
        "erfc", "exp", "exp2", "expm1", "fabs", "negative", "rad2deg", "sign", "signbit",
        "sin", "sinc", "sinh", "square", "tanh", "i0",
        # activations
        "celu", "elu", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
        "hard_tanh", "leaky_relu", "log_sigmoid", "log_softmax", "relu", "relu6", "selu",
        "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign",
        "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "tanh_shrink"]},
    **{n: O(f"ops.{n}(x)", _WIDE) for n in ["ceil", "floor", "trunc"]},
    "round": O("ops.round(x, decimals=1)", _WIDE),
    **{n: O(f"ops.{n}(x)", _UNIT) for n in ["arccos", "arcsin", "arctanh", "erfinv"]},
    "arccosh": O("ops.arccosh(x)", F(3, 4, lo=1.1, hi=4)),
    **{n: O(f"ops.{n}(x)", _POS) for n in ["log", "log10", "log2", "sqrt", "rsqrt",
                                           "reciprocal"]},
    "log1p": O("ops.log1p(x)", F(3, 4, lo=-0.5, hi=3)),
    "tan": O("ops.tan(x)", F(3, 4, lo=-1.2, hi=1.2)),
    "threshold": O("ops.threshold(x, 0.1, -2.0)", _X),
    **{n: O(f"ops.{n}(x)", F(3, 4, gen="with inf and NaN"))
       for n in ["isfinite", "isinf", "isnan", "isneginf", "isposinf"]},
    "nan_to_num": O("ops.nan_to_num(x, nan=0.0, posinf=10.0, neginf=-10.0)",
                    F(3, 4, gen="with inf and NaN")),
    "clip": O("ops.clip(x, -0.5, 0.5)", _X),
    # -- elementwise, two inputs
    **{n: O(f"ops.{n}(x, y)", *_XY) for n in [
        "add", "subtract", "multiply", "maximum", "minimum", "fmax", "fmin", "arctan2",
        "hypot", "logaddexp", "logaddexp2", "greater", "greater_equal", "less",
        "less_equal"]},
    "nextafter": O("ops.nextafter(x, y)", *_XY,
                   limitation="the next float is a bit operation (bitcast, +-1, bitcast) "
                              "that TF.js cannot express, and a float-arithmetic form is "
                              "not exact at powers of two and subnormals"),
    **{n: O(f"ops.{n}(x, y)", _WIDE, F(3, 4, lo=0.5, hi=2))
       for n in ["divide", "true_divide", "floor_divide", "fmod", "mod"]},
    "power": O("ops.power(x, y)", F(3, 4, lo=0.5, hi=2), _X),
    "divide_no_nan": O("ops.divide_no_nan(x, y)", _X, F(3, 4, gen="in {-1, 0, 1}")),
    "heaviside": O("ops.heaviside(x, y)", F(3, 4, gen="in {-1, 0, 1}"), _X),
    **{n: O(f"ops.{n}(x, y)", F(3, 4, gen="in {-1, 0, 1}"), F(3, 4, gen="in {-1, 0, 1}"))
       for n in ["equal", "not_equal"]},
    "isclose": O("ops.isclose(x, y, atol=0.5)", *_XY),
    "allclose": O("ops.allclose(x, x + y * 1e-3, atol=1e-2)", *_XY,
                  note="a scalar bool output"),
    "ldexp": O("ops.ldexp(x, y)", _X, I(3, 4, lo=-3, hi=4)),
    **{n: O(f"ops.{n}(x, y)", B(3, 4), B(3, 4)) for n in ["logical_and", "logical_or",
                                                          "logical_xor"]},
    "logical_not": O("ops.logical_not(x)", B(3, 4)),
    # integer and bitwise
    **{n: O(f"ops.{n}(x, y)", *_INTS) for n in ["bitwise_and", "bitwise_or", "bitwise_xor"]},
    # (Keras builds the gcd / lcm loop's shape from a static one)
    **{n: O(f"ops.{n}(x, y)", *_INTS, batch=2) for n in ["gcd", "lcm"]},
    **{n: O(f"ops.{n}(x)", I(3, 4, lo=-50, hi=50)) for n in ["bitwise_invert", "bitwise_not"]},
    **{n: O(f"ops.{n}(x, y)", *_SHIFTS) for n in ["bitwise_left_shift", "bitwise_right_shift",
                                                  "left_shift", "right_shift"]},
    # -- reductions (over the last axis: the batch stays)
    **{n: O(f"ops.{n}(x, axis=-1)", _X) for n in [
        "amax", "amin", "argmax", "argmin", "logsumexp", "max", "mean", "median", "min", "prod",
        "ptp", "std", "sum", "var", "cumprod", "cumsum", "diff", "trapezoid", "norm", "sort",
        "argsort"]},
    **{n: O(f"ops.{n}(x, axis=-1)", B(3, 4)) for n in ["all", "any"]},
    "count_nonzero": O("ops.count_nonzero(x, axis=-1)", F(3, 4, gen="in {-1, 0, 1}")),
    "average": O("ops.average(x, axis=-1, weights=y)", _X, F(3, 4, lo=0.5, hi=2)),
    "percentile": O("ops.percentile(x, 30.0, axis=-1)", _X),
    "quantile": O("ops.quantile(x, 0.3, axis=-1)", _X),
    "moments": O("ops.moments(x, axes=[1, 2])", _X),
    "top_k": O("ops.top_k(x, 2)", F(3, 5)),
    "argpartition": O("ops.argpartition(x, 2)", F(), batch=6,
                      note="one 1-D array: Keras's TensorFlow backend mixes the rows of a "
                           "batched input (its one_hot mask sums over the wrong axis)"),
    "in_top_k": O("ops.in_top_k(x, y, 2)", I(hi=5), F(5)),
    **{n: O(f"ops.{n}(x, axis=-1)", _NAN) for n in [
        "nanargmax", "nanargmin", "nancumprod", "nancumsum", "nanmax", "nanmean", "nanmin",
        "nanprod", "nanstd", "nansum", "nanvar"]},
    # (over all values: Keras's TensorFlow backend cannot trace them along an axis in a graph)
    "nanmedian": O("ops.nanmedian(x)", _NAN),
    "nanpercentile": O("ops.nanpercentile(x, 30.0)", _NAN),
    "nanquantile": O("ops.nanquantile(x, 0.3)", _NAN),
    # -- shapes and indexing
    "append": O("ops.append(x, y, axis=1)", F(3, 4), F(2, 4)),
    "array_split": O("ops.array_split(x, 3, axis=-1)", _X),
    "broadcast_to": O("ops.broadcast_to(x, (2, 3, 4))", F(3, 1), batch=2),
    "concatenate": O("ops.concatenate([x, y], axis=-1)", F(3, 4), F(3, 2)),
    "depth_to_space": O("ops.depth_to_space(x, 2)", F(2, 2, 8)),
    "space_to_depth": O("ops.space_to_depth(x, 2)", F(4, 4, 2)),
    "dsplit": O("ops.dsplit(x, 2)", _X),
    "dstack": O("ops.dstack([x, y])", *_XY),
    "expand_dims": O("ops.expand_dims(x, 1)", _X),
    "flip": O("ops.flip(x, axis=-1)", _X),
    "fliplr": O("ops.fliplr(x)", _X),
    "flipud": O("ops.flipud(x)", _X, note="flips the batch axis"),
    "get_item": O("ops.get_item(x, (slice(None), slice(1, 3), slice(None, None, 2)))", _X),
    "hsplit": O("ops.hsplit(x, 3)", F(6, 2)),
    "hstack": O("ops.hstack([x, y])", F(3, 4), F(2, 4)),
    "moveaxis": O("ops.moveaxis(x, 1, 2)", _X),
    "pad": O("ops.pad(x, ((0, 0), (1, 2), (0, 1)), constant_values=0.5)", _X),
    "ravel": O("ops.ravel(x)", _X),
    "repeat": O("ops.repeat(x, 2, axis=1)", _X),
    "reshape": O("ops.reshape(x, (-1, 12))", _X),
    "roll": O("ops.roll(x, 1, axis=-1)", _X),
    "rot90": O("ops.rot90(x, axes=(1, 2))", _X),
    "split": O("ops.split(x, 2, axis=-1)", _X),
    "squeeze": O("ops.squeeze(x, axis=1)", F(1, 4)),
    "stack": O("ops.stack([x, y], axis=1)", *_XY),
    "swapaxes": O("ops.swapaxes(x, 1, 2)", _X),
    "tile": O("ops.tile(x, (1, 2, 1))", _X),
    "transpose": O("ops.transpose(x, (0, 2, 1))", _X),
    "unstack": O("ops.unstack(x, axis=1)", _X),
    "vsplit": O("ops.vsplit(x, 2)", _X, batch=4, note="splits the (static) batch axis"),
    "vstack": O("ops.vstack([x, y])", *_XY, note="concatenates along the batch axis"),
    "rearrange": O("ops.rearrange(x, 'b h w -> b (w h)')", _X),
    "slice": O("ops.slice(x, (0, 1, 1), (2, 2, 3))", _X, batch=2),
    "slice_update": O("ops.slice_update(x, (0, 1, 1), y)", _X, F(2, 2), batch=2),
    "take": O("ops.take(x, np.array([2, 0, 1, 1]), axis=1)", _X),
    "take_along_axis": O("ops.take_along_axis(x, y, axis=1)", _X, I(3, 4, hi=3)),
    "scatter": O("ops.scatter(y, x, (4, 5))", F(), I(2, hi=4), batch=3),
    "scatter_update": O("ops.scatter_update(x, np.array([[0, 1], [2, 3]]), "
                        "np.array([9.0, -9.0], 'float32'))", F(4), batch=3),
    "where": O("ops.where(x, y, z)", B(3, 4), F(3, 4), F(3, 4)),
    "select": O("ops.select([x > 0.5, x < -0.5], [x, -x], 0.25)", _X),
    "tril": O("ops.tril(x)", F(4, 4)),
    "triu": O("ops.triu(x, k=1)", F(4, 4)),
    "diagonal": O("ops.diagonal(x, axis1=1, axis2=2)", _X),
    "trace": O("ops.trace(x, axis1=1, axis2=2)", _X),
    "diag": O("ops.diag(x)", F(), batch=4),
    "diagflat": O("ops.diagflat(x)", F(3), batch=2),
    "vander": O("ops.vander(x, 3)", F(), batch=4),
    "searchsorted": O("ops.searchsorted(np.array([-1.0, 0.0, 0.5, 1.0], 'float32'), x)", F(),
                      batch=6),
    "digitize": O("ops.digitize(x, [-1.0, 0.0, 0.5, 1.0])", _X),
    "isin": _KERAS_TF_GRAPH.format("a Python `if` on tf.size()"),
    "nonzero": O("ops.nonzero(x)", I(4, hi=2), note="a run-time number of indices"),
    "unique": O("ops.unique(x, size=5, fill_value=-1)", I(hi=5), batch=8),
    "bincount": O("ops.bincount(x, minlength=5)", I(4, hi=5)),
    "histogram": O("ops.histogram(x, bins=5, range=(-2, 2))", F(), batch=10),
    "one_hot": O("ops.one_hot(x, 5)", I(3, hi=5)),
    "multi_hot": O("ops.multi_hot(x, 5)", I(3, hi=5)),
    "unravel_index": O("ops.unravel_index(x, (3, 4))", I(3, hi=12), batch=2),
    "shape": O("ops.reshape(x, (ops.shape(x)[0], 12))", _X,
               note="the run-time batch read with ops.shape"),
    "size": O("x / ops.cast(ops.size(x), 'float32')", _X),
    # -- creation (a constant the model adds to its input)
    "arange": O("x + ops.arange(0.0, 2.0, 0.5)", _X),
    "linspace": O("x + ops.linspace(0.0, 1.0, 4)", _X),
    "geomspace": O("x + ops.geomspace(1.0, 8.0, 4)", _X),
    "logspace": O("x + ops.logspace(0.0, 1.0, 4)", _X),
    "eye": O("x + ops.eye(3, 4)", _X),
    "identity": O("x + ops.identity(4)", F(4, 4), note="ops.identity(n) is NumPy's: an eye"),
    "tri": O("x + ops.tri(3, 4)", _X),
    "zeros": O("x + ops.zeros((3, 4))", _X),
    "ones": O("x + ops.ones((3, 4))", _X),
    "full": O("x + ops.full((3, 4), 2.5)", _X),
    "empty": O("x + ops.empty((3, 4))", _X, note="zeros on the TensorFlow backend"),
    "array": O("x + ops.array([1.0, 2.0, 3.0, 4.0])", _X),
    **{n: O(f"x * ops.{n}(4)", _X) for n in ["blackman", "hamming", "hanning"]},
    "bartlett": _KERAS_TF_GRAPH.format("a Python `if` on its length as a tensor"),
    "kaiser": O("x * ops.kaiser(4, 5.0)", _X),
    "zeros_like": O("ops.zeros_like(x)", _X),
    "ones_like": O("ops.ones_like(x)", _X),
    "full_like": O("ops.full_like(x, 2.5)", _X),
    "empty_like": O("ops.empty_like(x)", _X, note="zeros on the TensorFlow backend"),
    "meshgrid": O("ops.meshgrid(x, np.array([1.0, 2.0, 3.0, 4.0], 'float32'))", F(), batch=3),
    # -- dtypes
    "cast": O("ops.cast(x * 10.0, 'int32')", _X),
    "saturate_cast": O("ops.saturate_cast(x * 300.0, 'uint8')", _X),
    "view": O("ops.view(x, 'int32')", _X, note="a bitcast",
              limitation="TF.js has no Bitcast and no integer view of float bits (TFLite and "
                         "SavedModel run it)"),
    "convert_to_tensor": O("ops.convert_to_tensor(x, dtype='float32') * 2.0", _X),
    "copy": O("ops.copy(x) * 2.0", _X),
    "stop_gradient": O("ops.stop_gradient(x) * 2.0", _X),
    # -- complex numbers (complex64 inside, real tensors in and out)
    "view_as_complex": O("ops.view_as_real(ops.view_as_complex(x) * (1 + 2j))", _COMPLEX),
    "view_as_real": O("ops.view_as_real(ops.view_as_complex(x) * (1 + 2j))", _COMPLEX),
    "real": O("ops.real(ops.view_as_complex(x) * (1 + 2j))", _COMPLEX),
    "imag": O("ops.imag(ops.view_as_complex(x) * (1 + 2j))", _COMPLEX),
    "angle": O("ops.angle(ops.view_as_complex(x))", _COMPLEX),
    "conj": O("ops.view_as_real(ops.conj(ops.view_as_complex(x)))", _COMPLEX),
    "conjugate": O("ops.view_as_real(ops.conjugate(ops.view_as_complex(x)))", _COMPLEX),
    "isreal": O("ops.isreal(ops.view_as_complex(x))", F(4, 2, gen="in {-1, 0, 1}")),
    "polar": O("ops.view_as_real(ops.polar(x, y))", F(3, 4, lo=0.1, hi=2), _X),
    "fft": O("ops.fft((x, y))", F(8), F(8)),
    "fft2": O("ops.fft2((x, y))", F(4, 4), F(4, 4)),
    "ifft2": O("ops.ifft2((x, y))", F(4, 4), F(4, 4)),
    "rfft": O("ops.rfft(x)", F(8)),
    "irfft": O("ops.irfft((x, y))", F(5), F(5)),
    "stft": O("ops.stft(x, 16, 8, 16)", F(64)),
    "istft": O("ops.istft((x, y), 16, 8, 16)", F(7, 9), F(7, 9)),
    # -- linear algebra (a batch of 3 x 3 matrices unless said otherwise)
    "matmul": O("ops.matmul(x, y)", F(3, 4), F(4, 5)),
    "einsum": O("ops.einsum('bij,bjk->bik', x, y)", F(3, 4), F(4, 5)),
    "dot": O("ops.dot(x, y)", F(4), F(4, 3), batch=2),
    "tensordot": O("ops.tensordot(x, const(4, 5), axes=1)", _X),
    "inner": O("ops.inner(x, y)", F(4), F(4), batch=2),
    "outer": O("ops.outer(x, y)", F(3), F(4), batch=2),
    "kron": _KERAS_TF_GRAPH.format("range() of a tensor rank"),
    "vdot": O("ops.vdot(x, y)", *_XY,
              limitation="int8: one scalar for the whole batch, so 4 calibration batches "
                         "give 4 samples of its range, too few to cover the verification "
                         "inputs'"),
    "cross": O("ops.cross(x, y)", F(3), F(3)),
    "cdist": O("ops.cdist(x, y)", F(3, 4), F(5, 4)),
    "correlate": O("ops.correlate(x, np.array([1.0, -2.0, 0.5], 'float32'))", F(), batch=6),
    "corrcoef": _KERAS_TF_GRAPH.format("a Python `if` on tf.rank()"),
    "cholesky": O("ops.cholesky(x)", F(3, 3, gen="spd")),
    "cholesky_inverse": O("ops.cholesky_inverse(x)", F(3, 3, gen="lower-triangular")),
    "det": O("ops.det(x)", _MAT),
    "eig": O("ops.sort(ops.real(ops.eig(x)[0]), axis=-1)", F(3, 3, gen="symmetric"),
             note="the eigenvalues, sorted (a symmetric input: they are real)",
             limitation="the general eigendecomposition has complex results in general "
                        "(an unsymmetric QR iteration with complex shifts); only eigh, for "
                        "symmetric matrices, is decomposed"),
    "eigh": O("ops.eigh(x)[0]", F(3, 3, gen="symmetric"),
              note="the eigenvalues (eigenvectors are defined up to sign)"),
    "inv": O("ops.inv(x)", _MAT),
    "logdet": O("ops.logdet(x)", F(3, 3, gen="spd")),
    "slogdet": O("ops.slogdet(x)", _MAT),
    "lstsq": O("ops.lstsq(x, y)", F(3), F(2), batch=4),
    "lu_factor": O("ops.lu_factor(x)", F(3, gen="well-conditioned"), batch=3,
                   note="one matrix (Keras's TensorFlow backend cannot trace a batch of them)"),
    "matrix_rank": O("ops.matrix_rank(x)", _MAT),
    "pinv": O("ops.pinv(x)", F(4, 3)),
    "qr": O("ops.qr(x)", F(4, 3)),
    "solve": O("ops.solve(x, y)", _MAT, F(3, 2)),
    "solve_triangular": O("ops.solve_triangular(x, y, lower=True)",
                          F(3, 3, gen="lower-triangular"), F(3, 2)),
    "svd": O("ops.svd(x, compute_uv=False)", F(4, 3),
             note="the singular values (singular vectors are defined up to sign)"),
    # -- neural-network functions
    "conv": O("ops.conv(x, const(3, 3, 3, 4), padding='same')", _IMG_OP),
    "conv_transpose": O("ops.conv_transpose(x, const(3, 3, 4, 3), strides=2, padding='same')",
                        F(5, 5, 3)),
    "depthwise_conv": O("ops.depthwise_conv(x, const(3, 3, 3, 2))", _IMG_OP),
    "separable_conv": O("ops.separable_conv(x, const(3, 3, 3, 2), const(1, 1, 6, 4))",
                        _IMG_OP),
    "average_pool": O("ops.average_pool(x, 2)", _IMG_OP),
    "max_pool": O("ops.max_pool(x, 3, strides=2, padding='same')", _IMG_OP),
    "adaptive_average_pool": O("ops.adaptive_average_pool(x, (3, 3))", F(7, 7, 2)),
    "adaptive_max_pool": O("ops.adaptive_max_pool(x, (3, 3))", F(7, 7, 2)),
    "batch_normalization": O("ops.batch_normalization(x, const(4), 1.0 + const(4) ** 2, -1, "
                             "offset=const(4), scale=const(4))", _X),
    "layer_normalization": O("ops.layer_normalization(x, gamma=const(4), beta=const(4))", _X),
    "rms_normalization": O("ops.rms_normalization(x, scale=const(4))", _X),
    "normalize": O("ops.normalize(x, axis=-1)", _X),
    "dot_product_attention": O("ops.dot_product_attention(x, y, z)", F(5, 2, 4), F(6, 2, 4),
                               F(6, 2, 4)),
    "extract_sequences": O("ops.extract_sequences(x, 4, 2)", F(10)),
    "unfold": O("ops.unfold(x, kernel_size=2)", F(2, 4, 4), batch=2,
                note="channels first (N, C, H, W)"),
    "fold": O("ops.fold(x, output_size=(4, 4), kernel_size=2)", F(8, 9),
              note="the inverse of unfold: (N, C * 2 * 2, L) to (N, C, 4, 4)"),
    "psnr": O("ops.psnr(x, y, 1.0)", F(8, 8, 3, lo=0, hi=1), F(8, 8, 3, lo=0, hi=1)),
    "binary_crossentropy": O("ops.binary_crossentropy(x, y)", F(5, lo=0, hi=1),
                             F(5, lo=0.05, hi=0.95)),
    "categorical_crossentropy": O("ops.categorical_crossentropy(x, y, from_logits=True)",
                                  F(5, gen="probabilities"), F(5)),
    "sparse_categorical_crossentropy": O("ops.sparse_categorical_crossentropy(x, y, "
                                         "from_logits=True)", I(hi=5), F(5)),
    "ctc_loss": O("ops.ctc_loss(x, y, z, u)", I(3, lo=1, hi=5), F(6, 5), I(lo=2, hi=4),
                  I(lo=5, hi=7),
                  limitation="a training loss: TF's CTCLoss kernel builds its alignment "
                             "lattice with sparse tensors sized at run time; inference "
                             "models use ctc_decode, which converts"),
    "ctc_decode": O("ops.ctc_decode(x, y)", F(6, 5), I(lo=4, hi=7)),
    "segment_sum": O("ops.segment_sum(x, y, num_segments=3)", F(4), I(gen="sorted ids"),
                     batch=6),
    "segment_max": O("ops.segment_max(x, y, num_segments=3)", F(4), I(gen="sorted ids"),
                     batch=6),
    "segment_min": O("ops.segment_min(x, y, num_segments=3)", F(4), I(gen="sorted ids"),
                     batch=6),
    "segment_prod": O("ops.segment_prod(x, y, num_segments=3)", F(4), I(gen="sorted ids"),
                      batch=6),
    # -- control flow and function transformations
    "cond": O("ops.cond(ops.sum(x) > 0, lambda: ops.sin(x), lambda: ops.cos(x))", _X),
    "switch": O("ops.switch(ops.cast(ops.sum(x) > 0, 'int32'), [ops.sin, ops.cos], x)", _X),
    "while_loop": O("ops.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a * 0.5 + "
                    "ops.sin(a)), (0, x))[1]", _X),
    "fori_loop": O("ops.fori_loop(0, 3, lambda i, a: a * 0.5 + ops.sin(a), x)", _X),
    "scan": O("ops.scan(lambda c, v: (c + v, c * v), ops.zeros_like(x[:, 0]), "
              "ops.transpose(x, (1, 0, 2)))", _X, note="over the 3 rows of each sample"),
    "associative_scan": O("ops.associative_scan(lambda a, b: a + b, x, axis=1)", _X),
    "map": O("ops.map(lambda v: ops.sum(v * v, axis=-1), x)", _X,
             note="over the batch (a run-time trip count)"),
    "vectorized_map": O("ops.vectorized_map(lambda v: ops.matmul(v, ops.transpose(v)), x)",
                        _X),
    "vectorize": "Keras's TensorFlow backend does not implement it (`Not supported with "
                 "vectorize() with the TensorFlow backend`); vectorized_map is swept",
    "custom_gradient": O("ops.custom_gradient(lambda v: (ops.sin(v), "
                         "lambda *g, **k: g[0] * ops.cos(v)))(x)", _X,
                         note="the forward function runs"),
    "jvp": O("ops.jvp(lambda v: ops.sin(v) * v, (x,), (y,))", *_XY,
             note="forward-mode derivative: (primal out, tangent out)"),
    # -- not ops a model can run
    "convert_to_numpy": "returns a NumPy array: cannot run inside a traced model",
    "dtype": "returns the dtype's name (a Python string), not a tensor",
    "is_tensor": "returns a Python bool, not a tensor",
    "ndim": "returns a Python int on the TensorFlow backend (the rank is static)",
}


def tiny_saved_model() -> str:
    """A SavedModel with one serving signature (x: f32[b, 4] -> tanh(x @ w), w: 4 x 3), for
    TFSMLayer; written to a temporary directory (removed when the process exits), returned as
    its path."""
    import atexit
    import shutil
    import tempfile

    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(7).standard_normal((4, 3))
                                 .astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            return {"y": tf.tanh(tf.matmul(x, self.w))}

    path = tempfile.mkdtemp(prefix="tfsm-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    module = Tiny()
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
    return path
