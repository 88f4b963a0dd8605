"""Models quantized by Keras itself (`model.quantize("int8")` / `"int4"` / `"gptq"`): their Dense,
EinsumDense and Embedding layers (and subclasses: KerasHub's ReversibleEmbedding, ...) hold
integer codes and scales in variables of their own (`_kernel` int8, int4 packed two per byte,
`kernel_scale`, `kernel_zero` for sub-channel int4).

Traced as they are, those layers lift into Keras' run-time arithmetic: on-the-fly activation
quantization, an int8 matmul and a rescale (int8), or unpacking folded into a float constant
(int4), so the integer weights are lost. Instead, while the model is traced
(`dequantized_tracing`), each such layer runs its *float* `call` with its weight read as

    UniformDequantize(codes, scales, zero_points)        (TF's own op, `frontends/tf/ops/quant.py`)

built from the layer's variables: the codes are the variable itself (unpacked and laid out by
TF ops that fold at import), the scales Keras' (inverted where Keras divides by them). The TF
frontend lifts that into an integer constant holding Keras' codes followed by `dequantize`:
the QDQ weight form of the quantization passes, with no re-quantization. The module is marked
(`metadata["keras_quantization"]`), so `convert` treats it like a QAT model: TFLite gets hybrid
FULLY_CONNECTED kernels on Keras' int8 codes (Keras' int8 layers quantize their input on the
fly, as TFLite's dynamic-range kernels do) and DEQUANTIZE-expanded int4 weights; SavedModel and
TF.js get the dequantize form.

Why at the layer level, not by matching the traced graph: the quantized `call`s change with
every Keras release (custom gradients, activation quantizers, LoRA, grouped int4 with `g_idx`
takes), while the stored variables and the float `call` (which reads `self.kernel` /
`self.embeddings`) are the layer's public, serialized contract. A layer this module does not
know (or with LoRA enabled, an uncalibrated GPTQ layer, or a mode such as float8 / AWQ) is
traced unchanged.

Layouts (real = (q - zp) * scale; Keras' per-channel scales are divisors, so scale = 1/s):

| layer, mode | codes | params |
|---|---|---|
| Dense int8 | `_kernel` [K, N] | 1/`kernel_scale` [N], axis 1 |
| Dense int4 per channel | unpack(`_kernel`) [K, N] | 1/`kernel_scale` [N], axis 1 |
| Dense int4 grouped (block B) | unpack(`_kernel`) [K, N] | `kernel_scale`, `kernel_zero` [G, N]: blockwise |
| EinsumDense int8 | `_kernel` (kernel shape) | 1/`kernel_scale` (Keras' layout), merged to one axis |
| EinsumDense int4 | as Dense on [rows, columns], reshaped to the kernel shape | |
| Embedding int8 / int4 | `_embeddings` [V, D] (int4 unpacked) | per row (axis 0), or blockwise along D |
| ReversibleEmbedding, untied | `reverse_embeddings` [D, V] | per column (axis 1), or blockwise along D |
| Dense / EinsumDense GPTQ (2-8 bits) | `quantized_kernel` [N, K] (4-bit unpacked along N), minus 2^(b-1) | `kernel_scale`, `kernel_zero` - 2^(b-1) [N, G]: blockwise; `g_idx` act-order: rows sorted by group, gathered back |

Blockwise (one scale and zero point per block of B along the contraction) has no single
quantized axis, so the codes are laid out as [N*G, B] (FULLY_CONNECTED's [N, K] order, one
row per block; docs/design/quantization.md), dequantized per axis 0 and reshaped back.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

SUPPORTED_MODES = ("int8", "int4", "gptq")
METADATA_KEY = "keras_quantization"            # e.g. "int8", "int4", "gptq,int8"
ACTIVATIONS_KEY = "keras_activation_quantization"  # "dynamic" | "none"


@dataclass
class KerasQuantization:
    """What `dequantized_tracing` found: the layers lifted from their stored codes (path ->
    mode), those traced unchanged (path -> reason), and whether any int8 layer quantizes
    its input at run time (Keras' default)."""

    layers: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    dynamic: bool = False

    def metadata(self) -> dict:
        if not self.layers:
            return {}
        return {METADATA_KEY: ",".join(sorted(set(self.layers.values()))),
                ACTIVATIONS_KEY: "dynamic" if self.dynamic else "none"}


# -- TF side: the dequantized weight as one UniformDequantize --------------------------------

def _uniform_dequantize(codes, scale, zero, bits: int, axis: int | None, name: str,
                        full_range: bool = False):
    """UniformDequantize of int8 `codes` (a TF tensor holding the codes) with NumPy `scale`
    and `zero` (one value, or one per slice of `axis`). Symmetric int8 codes are narrow range
    ([-127, 127], Keras' int8) unless `full_range`."""
    import tensorflow as tf

    lo, hi = (-8, 7) if bits == 4 else (-127, 127)
    if zero is not None and np.any(zero) or bits == 4 or full_range:
        lo = -(1 << (bits - 1))
    scale = np.asarray(scale, np.float32).reshape(-1 if axis is not None else ())
    zero = np.zeros(scale.shape, np.int32) if zero is None else \
        np.asarray(zero).astype(np.int32).reshape(scale.shape)
    return tf.raw_ops.UniformDequantize(
        input=tf.bitcast(tf.cast(codes, tf.int8), tf.qint8), scales=tf.constant(scale),
        zero_points=tf.constant(zero), Tout=tf.float32, quantization_min_val=lo,
        quantization_max_val=hi, quantization_axis=-1 if axis is None else axis, name=name)


def _per_slices(codes, scale_b: np.ndarray, bits: int, name: str):
    """Dequantized `codes` (static shape S) with a scale broadcastable to S: per tensor, per
    axis, or, when the scale varies along several axes, per axis of those axes merged into
    one (moved next to each other first)."""
    import tensorflow as tf

    shape = [int(d) for d in codes.shape]
    r = len(shape)
    sb = np.asarray(scale_b, np.float32)
    sb = sb.reshape((1,) * (r - sb.ndim) + sb.shape)
    axes = [i for i in range(r) if sb.shape[i] > 1]
    if not axes:
        return _uniform_dequantize(codes, sb.reshape(()), None, bits, None, name)
    if len(axes) == 1:
        return _uniform_dequantize(codes, sb.reshape(-1), None, bits, axes[0], name)
    others = [i for i in range(r) if i not in axes]
    perm = others[:axes[0]] + axes + [i for i in others if i > axes[0]]
    contiguous = perm == list(range(r))
    moved = codes if contiguous else tf.transpose(codes, perm)
    moved_shape = [shape[i] for i in perm]
    a0 = perm.index(axes[0])
    merged = moved_shape[:a0] + [int(np.prod([shape[i] for i in axes]))] + \
        moved_shape[a0 + len(axes):]
    scales = np.broadcast_to(sb, [shape[i] if i in axes else 1 for i in range(r)])
    scales = np.transpose(scales, perm).reshape(-1)
    w = _uniform_dequantize(tf.reshape(moved, merged), scales, None, bits, a0, name)
    w = tf.reshape(w, moved_shape)
    return w if contiguous else tf.transpose(w, np.argsort(perm).tolist())


def _blockwise_rows(codes_nk, scale_ng, zero_ng, block: int, name: str, bits: int = 4,
                    full_range: bool = False):
    """Dequantized [N, K] codes with one scale and zero point per (row n, block of `block`
    along K): codes laid out as [N*G, block] (padded with each block's zero point when K is
    not a multiple), dequantized per axis 0, reshaped to [N, G*block] and cut to K."""
    import tensorflow as tf

    n, k = (int(d) for d in codes_nk.shape)
    g = int(scale_ng.shape[1])
    if g == 1:      # one block: per row
        return _uniform_dequantize(codes_nk, scale_ng.reshape(-1), zero_ng, bits, 0, name,
                                   full_range)
    pad = g * block - k
    codes = tf.cast(codes_nk, tf.int8)
    if pad:
        fill = tf.constant(np.repeat(np.asarray(zero_ng, np.int8)[:, -1:], pad, axis=1))
        codes = tf.concat([codes, fill], axis=1)
    w = _uniform_dequantize(tf.reshape(codes, [n * g, block]), scale_ng.reshape(-1),
                            np.asarray(zero_ng).reshape(-1), bits, 0, name, full_range)
    w = tf.reshape(w, [n, g * block])
    return w[:, :k] if pad else w


# -- the layers -------------------------------------------------------------------------------

def _np(v) -> np.ndarray:
    """A variable's value, read eagerly (the builders run inside the trace). The TF variable
    itself is read, so a Keras scope that binds variable reads while tracing (the Keras
    frontend's) does not hand back a placeholder."""
    import tensorflow as tf
    from keras import ops

    raw = getattr(v, "_value", None)
    with tf.init_scope():
        if isinstance(raw, tf.Variable):
            return np.asarray(raw.numpy())
        return np.asarray(ops.convert_to_numpy(v))


def _inverse(scale) -> np.ndarray:
    return (np.float32(1) / _np(scale).astype(np.float32)).astype(np.float32)


def _unpack(var, length: int, axis: int):
    from keras import ops, quantizers

    return quantizers.unpack_int4(ops.convert_to_tensor(var), length, axis=axis)


def _int4_block(layer) -> int | None:
    block = getattr(layer, "_int4_block_size", None)
    return None if block is None or block == -1 else int(block)


def _dense_2d(layer, codes, scale_var, zero_var, block, name):
    """[K, N] codes with Keras' per-channel divisor [N] or grouped (scale, zero) [G, N]."""
    import tensorflow as tf

    if block is None:
        return _per_slices(codes, _inverse(scale_var).reshape(1, -1),
                           4 if layer.quantization_mode == "int4" else 8, name)
    scale, zero = _np(scale_var), _np(zero_var)
    if scale.shape[0] == 1:     # one block: per output channel, with zero points
        return _uniform_dequantize(codes, scale.reshape(-1), zero.reshape(-1), 4, 1, name)
    w = _blockwise_rows(tf.transpose(codes), scale.T.copy(), zero.T.copy(), block, name)
    return tf.transpose(w)


def _dense_kernel(layer):
    from keras import ops

    if layer.quantization_mode == "int8":
        return _dense_2d(layer, ops.convert_to_tensor(layer._kernel), layer.kernel_scale, None,
                         None, "kernel")
    codes = _unpack(layer._kernel, int(layer._orig_output_dim), -1)
    return _dense_2d(layer, codes, layer.kernel_scale, getattr(layer, "kernel_zero", None),
                     _int4_block(layer), "kernel")


def _einsum_kernel(layer):
    import tensorflow as tf
    from keras import ops

    if layer.quantization_mode == "int8":
        with tf.init_scope():
            adjusted = layer._adjust_scale_for_dequant(
                ops.convert_to_tensor(_np(layer.kernel_scale)))
        scale = np.float32(1) / _np(adjusted).astype(np.float32)
        return _per_slices(ops.convert_to_tensor(layer._kernel), scale, 8, "kernel")
    codes = _unpack(layer._kernel, int(layer._int4_unpacked_column_size), -1)
    w = _dense_2d(layer, codes, layer.kernel_scale, getattr(layer, "kernel_zero", None),
                  _int4_block(layer), "kernel")
    return tf.reshape(w, list(layer.original_kernel_shape))


def _embedding_table(layer):
    from keras import ops

    if layer.quantization_mode == "int8":
        return _per_slices(ops.convert_to_tensor(layer._embeddings),
                           _inverse(layer.embeddings_scale).reshape(-1, 1), 8, "embeddings")
    codes = _unpack(layer._embeddings, int(layer._orig_output_dim), -1)
    block = _int4_block(layer)
    if block is None:
        return _per_slices(codes, _inverse(layer.embeddings_scale).reshape(-1, 1), 4,
                           "embeddings")
    return _blockwise_rows(codes, _np(layer.embeddings_scale), _np(layer.embeddings_zero),
                           block, "embeddings")


def _reverse_table(layer):
    """The untied reverse projection [D, V] of a ReversibleEmbedding."""
    from keras import ops

    var = vars(layer)["reverse_embeddings"]   # the variable (the attribute reads this builder)
    if layer.quantization_mode == "int8":
        return _per_slices(ops.convert_to_tensor(var),
                           _inverse(layer.reverse_embeddings_scale).reshape(1, -1), 8,
                           "reverse_embeddings")
    codes = _unpack(var, int(layer.output_dim), 0)
    block = _int4_block(layer)
    zero = getattr(layer, "reverse_embeddings_zero", None)
    return _dense_2d(layer, codes, layer.reverse_embeddings_scale, zero, block,
                     "reverse_embeddings")


def _gptq_layout(layer) -> tuple[int, int, np.ndarray | None] | str:
    """(bits, group size, act-order permutation or None) of a calibrated GPTQ layer, or why
    its layout is not one this module lifts. Keras' `g_idx` maps each input channel (row of
    the kernel) to its group; without act-order it is `k // group_size`, with it the groups
    are contiguous once the rows are sorted by group (`perm`)."""
    from keras.src.quantizers import gptq_core

    if not getattr(layer, "is_gptq_calibrated", False):
        return "GPTQ layer not calibrated (Keras runs its float kernel)"
    bits = int(gptq_core.get_weight_bits_for_layer(layer, None))
    if bits not in (2, 3, 4, 8):
        return f"{bits}-bit GPTQ"
    g_idx = _np(layer.g_idx).astype(np.int64)      # Keras casts (truncates) the same way
    k = g_idx.size
    groups = int(_np(layer.kernel_scale).shape[-1])
    perm = np.argsort(g_idx, kind="stable")
    block = int(np.count_nonzero(g_idx == 0)) if groups > 1 else k
    if block < 1 or not np.array_equal(g_idx[perm], np.arange(k) // block) or \
            int(g_idx.max()) + 1 != groups:
        return "GPTQ groups are not blocks of one size"
    return bits, block, None if np.array_equal(perm, np.arange(k)) else perm


def _gptq_weight(layer, columns: int):
    """The [N, K] weight of a GPTQ layer (Keras stores it transposed: `quantized_kernel`
    [N, K], 4-bit packed two per byte along N; `kernel_scale`, `kernel_zero` [N, G], the codes
    unsigned, real = (q - zero) * scale). The codes are shifted to signed ((q - 2^(b-1)) -
    (zero - 2^(b-1)): the same value), stored in an int4 container for 2 to 4 bits, int8
    for 8, and dequantized blockwise (`_blockwise_rows`). With act-order the rows are sorted
    by group first and put back in Keras' order by a gather of the dequantized weight."""
    import tensorflow as tf
    from keras import ops, quantizers

    bits, block, perm = _gptq_layout(layer)
    q = ops.convert_to_tensor(layer.quantized_kernel)
    if bits == 4:
        q = quantizers.unpack_int4(q, orig_len=columns, axis=0, dtype="uint8")
    off = 1 << (bits - 1)
    codes = tf.cast(tf.cast(q, tf.int32) - off, tf.int8)
    scale = _np(layer.kernel_scale).astype(np.float32)
    zero = _np(layer.kernel_zero).astype(np.int32) - off
    scale = np.broadcast_to(scale, (columns, scale.shape[-1])).copy()
    zero = np.broadcast_to(zero, scale.shape).copy()
    if perm is not None:
        codes = tf.gather(codes, perm, axis=1)
    w = _blockwise_rows(codes, scale, zero, block, "kernel", 8 if bits == 8 else 4,
                        full_range=True)
    if perm is not None:
        w = tf.gather(w, np.argsort(perm), axis=1)
    return w


def _gptq_dense_kernel(layer):
    import tensorflow as tf

    return tf.transpose(_gptq_weight(layer, int(layer.units)))


def _gptq_einsum_kernel(layer):
    import tensorflow as tf

    w = tf.transpose(_gptq_weight(layer, int(layer.gptq_unpacked_column_size)))
    return tf.reshape(w, list(layer.original_kernel_shape))


def _weights_of(layer) -> dict | None:
    """{attribute the float call reads: builder of its dequantized value} for a supported
    quantized layer, else None."""
    from keras import layers

    if layer.quantization_mode == "gptq":
        if isinstance(layer, layers.EinsumDense):
            return {"kernel": _gptq_einsum_kernel}
        if isinstance(layer, layers.Dense):
            return {"kernel": _gptq_dense_kernel}
        return None
    if isinstance(layer, layers.EinsumDense):
        return {"kernel": _einsum_kernel}
    if isinstance(layer, layers.Dense):
        return {"kernel": _dense_kernel}
    if isinstance(layer, layers.Embedding):
        out = {"embeddings": _embedding_table}
        if hasattr(layer, "tie_weights") and not layer.tie_weights:
            out["reverse_embeddings"] = _reverse_table
        return out
    return None


def _skip_reason(layer) -> str | None:
    mode = getattr(layer, "quantization_mode", None)
    if mode not in SUPPORTED_MODES:
        return f"quantization mode {mode!r} is traced as Keras computes it"
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled (its float update is traced as Keras computes it)"
    if _weights_of(layer) is None:
        return f"{type(layer).__name__} is not a Dense, EinsumDense or Embedding"
    if mode == "gptq":
        layout = _gptq_layout(layer)
        if isinstance(layout, str):
            return layout
    return None


def quantized_layers(model) -> list:
    """Every layer under `model` (nested too) that Keras quantized, once each."""
    out, seen = [], set()
    try:
        found = model._flatten_layers(include_self=False, recursive=True)
    except Exception:
        found = []
    for layer in found:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if getattr(layer, "quantization_mode", None) is not None:
            out.append(layer)
    return out


_SUBCLASSES: dict[type, type] = {}
_BUILDING: dict[int, dict] = {}     # id(layer) -> {attribute: builder} while tracing


def _graph_key():
    import tensorflow as tf

    return id(tf.compat.v1.get_default_graph())


def _dequantized_attr(attr: str):
    def get(self):
        builders = _BUILDING[id(self)]
        cache = builders.setdefault("_cache", {})
        key = (attr, _graph_key())
        if key not in cache:
            cache[key] = builders[attr](self)
        return cache[key]
    return property(get)


def _tracing_class(cls: type, attrs: tuple[str, ...]) -> type:
    """A subclass of `cls` whose quantized call is the float call and whose weight
    attributes read the dequantized weights."""
    key = (cls, attrs)
    sub = _SUBCLASSES.get(key)
    if sub is None:
        body = {a: _dequantized_attr(a) for a in attrs}

        def quantized_call(self, *args, **kwargs):
            return self.call(*args, **kwargs)
        body["quantized_call"] = quantized_call
        body["__module__"] = cls.__module__
        sub = _SUBCLASSES[key] = type(cls.__name__, (cls,), body)
    return sub


@contextmanager
def dequantized_tracing(model):
    """While active, the supported Keras-quantized layers of `model` compute their float
    `call` on weights read as UniformDequantize of their stored codes (TF backend only).
    Yields a KerasQuantization; the layers are restored on exit."""
    found = KerasQuantization()
    swapped = []
    try:
        for layer in quantized_layers(model):
            path = getattr(layer, "path", None) or layer.name
            reason = _skip_reason(layer)
            if reason is not None:
                found.skipped[path] = reason
                continue
            builders = _weights_of(layer)
            mode = layer.quantization_mode
            found.layers[path] = mode
            if mode == "int8" and getattr(layer, "inputs_quantizer", None):
                found.dynamic = True
            cls = type(layer)
            _BUILDING[id(layer)] = dict(builders)
            layer.__class__ = _tracing_class(cls, tuple(sorted(builders)))
            swapped.append((layer, cls))
        yield found
    finally:
        for layer, cls in swapped:
            layer.__class__ = cls
            _BUILDING.pop(id(layer), None)


# -- after lifting -------------------------------------------------------------------------------

def _dequantized_weight(v) -> bool:
    p = v.producer
    while p is not None and p.op in ("reshape", "strided_slice", "slice"):
        p = p.inputs[0].producer
    return p is not None and p.op == "dequantize" and p.inputs[0].const is not None


def _moved_axis(src: list[int], dims: list[int], axis: int | None) -> int | None | bool:
    """The axis of `dims` that is `src`'s quantized `axis` after a reshape (same size, same
    number of elements before it); None for per-tensor params; False when it does not
    survive."""
    if axis is None:
        return None
    before = int(np.prod(src[:axis]))
    for j, d in enumerate(dims):
        if d == src[axis] and int(np.prod(dims[:j])) == before:
            return j
    return False


def _sink_reshapes(graph) -> int:
    """reshape(dequantize(codes)) -> dequantize(reshape(codes)) when the quantized axis
    survives the reshape (the 2-D weight of an einsum), so the matmul reads the dequantized
    constant itself (a hybrid kernel in TFLite)."""
    from ...ir.types import QuantParams

    count = 0
    for node in list(graph):
        if node.op != "reshape" or len(node.inputs) != 1:
            continue
        dq = node.inputs[0].producer
        if dq is None or dq.op != "dequantize" or dq.inputs[0].const is None or \
                dq.inputs[0].quant is None or not node.output.type.is_static:
            continue
        codes, qp = dq.inputs[0], dq.inputs[0].quant
        src = [int(d) for d in codes.type.shape]
        dims = [int(d) for d in node.output.type.shape]
        axis = _moved_axis(src, dims, qp.axis)
        if axis is False:
            continue
        new_codes = graph.constant(np.asarray(codes.const).reshape(dims), codes.name,
                                   scope=dq.scope, loc=dq.loc, before=node)
        new_codes.quant = QuantParams(qp.scale, qp.zero_point, axis, qp.bits, qp.signed,
                                      qp.narrow_range)
        new_dq = graph.add("dequantize", [new_codes], {**dq.attrs, "axis": axis},
                           scope=dq.scope, loc=dq.loc, before=node)
        graph.replace_node(node, [new_dq.output])
        if not dq.output.uses:
            graph.erase(dq)
            if not codes.uses:
                graph.erase(codes.producer)
        count += 1
    return count


def _merge_reshapes(graph) -> int:
    """reshape(reshape(x)) -> reshape(x) for a static outer shape (an EinsumDense's kernel
    reshaped to its kernel shape and back to 2-D for the matmul)."""
    count = 0
    for node in list(graph):
        if node.op != "reshape" or len(node.inputs) != 1 or not node.output.type.is_static:
            continue
        src = node.inputs[0]
        if src.type.is_static and tuple(src.type.shape) == tuple(node.output.type.shape):
            graph.replace_node(node, [src])
            count += 1
            continue
        inner = src.producer
        if inner is None or inner.op != "reshape" or len(inner.inputs) != 1:
            continue
        node.set_input(0, inner.inputs[0])
        node.attrs["shape"] = tuple(int(d) for d in node.output.type.shape)
        if not inner.output.uses:
            graph.erase(inner)
        count += 1
    return count


def fold_weight_transposes(module) -> int:
    """Puts the dequantized weights next to their matmuls: a reshape of one moves onto its
    codes (`_sink_reshapes`), and matmul(x, transpose(w)) becomes matmul(x, w, transpose_b)
    (blockwise weights are laid out [N, K], FULLY_CONNECTED's order, and Keras' float call
    reads them as [K, N]). Returns how many were rewritten."""
    graph = module.main
    count = _merge_reshapes(graph) + _sink_reshapes(graph)
    for node in list(graph):
        if node.op != "matmul" or node.attrs.get("transpose_b") or len(node.inputs) < 2:
            continue
        t = node.inputs[1].producer
        if t is None or t.op != "transpose" or list(t.attrs["perm"]) != [1, 0] or \
                not _dequantized_weight(t.inputs[0]):
            continue
        node.set_input(1, t.inputs[0])
        node.attrs["transpose_b"] = True
        if not t.output.uses:
            graph.erase(t)
        count += 1
    return count
