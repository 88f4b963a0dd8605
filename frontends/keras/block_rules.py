"""Direct-lifting rules for the layers KerasHub's text backbones are made of: Keras's
`Embedding` and `ReversibleEmbedding`, KerasHub's `PositionEmbedding` and
`TokenAndPositionEmbedding`, KerasHub's `TransformerEncoder` (BERT, RoBERTa, ALBERT, ...) with
the `MultiHeadAttention` and `EinsumDense` layers inside it, and its `TransformerDecoder`
without cross-attention (GPT-2, OPT) with `CachedMultiHeadAttention` (direct.py has the rule
for the `x[:, 0, :]` of a pooled output).

Why: these layers hold layers (or, for the embeddings, take integer inputs), so without
rules a KerasHub backbone was traced whole; tracing a tiny BERT's 326 TF ops was most of its
conversion. The rules emit each layer's IR from its configuration and weights in
microseconds.

Same contract as frontends/keras/direct.py: a rule emits the nodes the TF lifter lifts from
Keras's TF-backend trace of the layer (the same ops, operands, constants, names and scopes;
tests/test_keras_direct_blocks.py compares the TFLite bytes of both paths), and covers only the
configurations it checks, raising NoRule for anything else (the layer is then lifted as
before). Node order is the exception: the TF lifter orders nodes by a depth-first walk from
the outputs (following a masked softmax's first operand, the mask, puts a later block's mask
ops before everything else), which no layer-by-layer walk emits, so a lift that used these
rules is put into that order afterwards (`depth_first_order` in direct.py).

Covered: static shapes past the batch (and a fixed batch for a decoder's causal mask, which
the TF lifter folds to a constant, as it does up to FOLD_LIMIT elements);
float32 dtype policies; no Keras quantization or LoRA; the KerasHub version the rules were
checked against; the embeddings without `mask_zero`; attention over axis 1 of rank-3 inputs
with dropout (the explicit-softmax path of `MultiHeadAttention._compute_attention`) or
without (its TF backend's `dot_product_attention`), no gate, sliding window, flash
attention, custom attention mask, cache or cross-attention; `padding_mask` or no mask,
a decoder's causal mask or not; `normalize_first` either way; the feed-forward activations
`_activation` knows, KerasHub's `gelu_approximate` included."""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np

from ...ir.graph import Value
from ...ir.types import DType
from ..tf import context as tf_context
from .block_reuse import class_path
from .direct import NoRule, _Context, _dense, _f32, _layer_norm, _plain, _require

# Exact classes (a subclass may override `call`), by class path: KerasHub is imported only by
# models that use it.
EMBEDDINGS = frozenset({
    "keras.src.layers.core.embedding.Embedding",
    "keras.src.layers.core.reversible_embedding.ReversibleEmbedding",
    "keras_hub.src.layers.modeling.reversible_embedding.ReversibleEmbedding",
})
POSITION_EMBEDDING = "keras_hub.src.layers.modeling.position_embedding.PositionEmbedding"
TOKEN_AND_POSITION_EMBEDDING = (
    "keras_hub.src.layers.modeling.token_and_position_embedding.TokenAndPositionEmbedding")
TRANSFORMER_ENCODER = "keras_hub.src.layers.modeling.transformer_encoder.TransformerEncoder"
TRANSFORMER_DECODER = "keras_hub.src.layers.modeling.transformer_decoder.TransformerDecoder"
_MHA = "keras.src.layers.attention.multi_head_attention.MultiHeadAttention"
_CACHED_MHA = ("keras_hub.src.layers.modeling.cached_multi_head_attention."
               "CachedMultiHeadAttention")
_EINSUM_DENSE = "keras.src.layers.core.einsum_dense.EinsumDense"
_SOFTMAX = "keras.src.layers.activations.softmax.Softmax"
_LAYER_NORM = "keras.src.layers.normalization.layer_normalization.LayerNormalization"
_DENSE = "keras.src.layers.core.dense.Dense"
_DROPOUT = "keras.src.layers.regularization.dropout.Dropout"

# Keras's masked softmax sets masked scores to this before the softmax (float32); its TF
# backend's dot_product_attention to 0.7 of float32's most negative number.
_LARGE_NEGATIVE = -1e9
_TF_LARGE_NEGATIVE = 3.38953e38 * -0.7


# The KerasHub versions whose layers' `call` code these rules copy (and the tests check):
# another version may compute differently, so its layers are traced.
KERAS_HUB_VERSIONS = frozenset({"0.32.0"})


def _fold_limit() -> int:
    """The TF lifter's FOLD_LIMIT: the rules fold constants exactly where it does."""
    return tf_context.FOLD_LIMIT


def _is(layer, path: str) -> bool:
    return class_path(layer) == path


def _known_keras_hub(layer) -> None:
    if type(layer).__module__.startswith("keras_hub."):
        import keras_hub

        _require(getattr(keras_hub, "__version__", None) in KERAS_HUB_VERSIONS,
                 "a KerasHub version these rules were not checked against")


def _static(v: Value, rank: int | None = None) -> tuple:
    dims = v.type.shape
    _require(rank is None or len(dims) == rank, f"a rank-{len(dims)} operand")
    _require(all(isinstance(d, int) for d in dims[1:]), "run-time dims past the batch")
    return tuple(dims)


def _only(args, kwargs, allowed: dict) -> list:
    """The tensors of a call `layer(x, **kwargs)`: `x` and the values of the keyword arguments
    in `allowed` ({name: check of its value}); anything else (another positional argument, a
    keyword not in `allowed`, a value its check refuses) is not covered."""
    _require(len(args) == 1 and isinstance(args[0], Value), "call arguments")
    for key, value in kwargs.items():
        check = allowed.get(key)
        _require(check is not None and check(value), f"call argument {key}={value!r}")
    return [args[0]]


def _inference(value) -> bool:
    return value is None or value is False


def _embedding(ctx: _Context, layer, args, kwargs):
    """Keras's `Embedding.call`: `ops.take(embeddings, ids, axis=0)`, which Keras's TF backend
    computes as `tf.gather(embeddings, where(ids < 0, ids + input_dim, ids))`."""
    _plain(layer)
    (ids,) = _only(args, kwargs, {"reverse": lambda r: r is False, "training": _inference})
    _require(not getattr(layer, "mask_zero", False), "mask_zero")
    _require(ids.type.dtype == DType.i32, "non-int32 ids")
    table = layer.embeddings
    rows = int(table.shape[0])
    negative = ctx.add("less", [ids, ctx.const(np.int32(0))])
    wrapped = ctx.add("add", [ids, ctx.const(np.int32(rows))])
    fixed = ctx.add("where", [negative, wrapped, ids])
    return ctx.add("gather", [ctx.weight(table), fixed], {"axis": 0, "batch_dims": 0})


def _position_embedding(ctx: _Context, layer, args, kwargs):
    """KerasHub's `PositionEmbedding.call(x)`: the first `sequence_length` rows of its table
    broadcast to x's shape: a constant for a static shape (as the TF lifter folds it), a
    broadcast to [batch, seq, width] built from x's run-time shape otherwise."""
    _plain(layer)
    (x,) = _only(args, kwargs, {"start_index": lambda s: s == 0,
                                "positions": lambda p: p is None})
    _require(_serving_positions() is None, "positions set by a serving engine")
    shape = _static(x, rank=3)
    seq, width = shape[-2], shape[-1]
    table = ctx.read(layer.position_embeddings)
    _require(seq <= table.shape[0] and width == table.shape[1], "a table of another size")
    rows = table[:seq, :width]
    if isinstance(shape[0], int):
        # the lifter folds the broadcast unless it outgrows the rows past FOLD_LIMIT
        _require(shape[0] == 1 or shape[0] * seq * width <= _fold_limit(),
                 "position embeddings the lifter does not fold")
        positions = np.ascontiguousarray(np.broadcast_to(rows, shape))
        positions.flags.writeable = False
        ctx.reorder = True      # the lifter creates the constant where it is first used
        return ctx.const(positions)
    # tf.broadcast_to(rows, tf.shape(x)), the static dims of the shape folded
    batch = ctx.add("slice", [ctx.add("shape_of", [x], {"dtype": DType.i32})],
                    {"begin": (0,), "size": (1,)})
    target = ctx.add("concat", [batch, ctx.const(np.array([seq], np.int32)),
                                ctx.const(np.array([width], np.int32))], {"axis": 0})
    rows = np.ascontiguousarray(rows)
    rows.flags.writeable = False
    return ctx.add("dynamic_broadcast_to", [ctx.const(rows), target], {"dims": shape})


def _serving_positions():
    """What KerasHub's PositionEmbedding reads as its positions when none are passed (None
    outside a vLLM serving context; newer KerasHub versions only)."""
    try:
        from keras_hub.src.layers.modeling import position_embedding
    except ImportError:
        return None
    read = getattr(position_embedding, "_vllm_serving_positions", None)
    return read() if read is not None else None


def _token_and_position_embedding(ctx: _Context, layer, args, kwargs):
    """KerasHub's `TokenAndPositionEmbedding.call(ids)`: its token embedding plus its
    position embedding of the embedded tokens."""
    _plain(layer)
    (ids,) = _only(args, kwargs, {"start_index": lambda s: s == 0,
                                  "positions": lambda p: p is None})
    scope = ctx.scope
    tokens, positions = layer.token_embedding, layer.position_embedding
    _require(class_path(tokens) in EMBEDDINGS and _is(positions, POSITION_EMBEDDING),
             "other embedding layers")
    ctx.enter(tokens, f"{scope}/{tokens.name}")
    embedded = _embedding(ctx, tokens, [ids], {})
    ctx.enter(positions, f"{scope}/{positions.name}")
    position_values = _position_embedding(ctx, positions, [embedded], {})
    ctx.enter(layer, scope)
    return ctx.add("add", [embedded, position_values])


# -- attention ---------------------------------------------------------------------------------

def _einsum_dense(ctx: _Context, layer, x: Value, scope: str) -> Value:
    """`EinsumDense` with the two equations `MultiHeadAttention` builds for rank-3 inputs, as
    TF computes the einsum: "abc,cde->abde" (a projection to heads: a matmul with the kernel
    flattened to [c, d*e], then a reshape) and "abcd,cde->abe" (heads back to features: a
    reshape, then a matmul with the kernel flattened to [c*d, e]); then the bias."""
    _require(_is(layer, _EINSUM_DENSE), "a subclass of EinsumDense")
    _plain(layer)
    from keras import activations

    _require(layer.activation in (None, activations.linear), "an activation")
    ctx.enter(layer, scope)
    kernel = ctx.read(layer.kernel)
    shape = _static(x)
    if layer.equation == "abc,cde->abde":
        _require(len(shape) == 3 and kernel.ndim == 3 and shape[2] == kernel.shape[0],
                 "mismatched operands")
        y = ctx.add("matmul", [x, ctx.const(kernel.reshape(kernel.shape[0], -1))])
        y = ctx.add("reshape", [y], {"shape": (-1, shape[1], *kernel.shape[1:])})
    elif layer.equation == "abcd,cde->abe":
        _require(len(shape) == 4 and kernel.ndim == 3 and shape[2:] == kernel.shape[:2],
                 "mismatched operands")
        y = ctx.add("reshape", [x], {"shape": (-1, shape[1], shape[2] * shape[3])})
        y = ctx.add("matmul", [y, ctx.const(kernel.reshape(-1, kernel.shape[2]))])
    else:
        raise NoRule(f"einsum {layer.equation!r}")
    if layer.bias is not None:
        y = ctx.add("add", [y, ctx.weight(layer.bias)])
    return y


def _attention(ctx: _Context, mha, x: Value, mask: Value | np.ndarray | None, scope: str,
               cached: bool = False) -> Value:
    """`MultiHeadAttention(query=x, value=x, attention_mask=mask)`, self-attention over axis 1
    of a rank-3 x (or KerasHub's CachedMultiHeadAttention without a cache, `cached`, which
    takes the mask as it is where MultiHeadAttention first casts it to bool). With dropout
    configured, Keras computes the scores explicitly: einsum(key, query * 1/sqrt(dk)) and its
    Softmax layer's masked softmax; without, it calls its TF backend's
    `dot_product_attention`: einsum(query, key) * 1/sqrt(dk), masked with a large negative
    number, softmax. Either way, einsum(probabilities, value) and the output projection
    follow; TF computes each einsum as transposes around a batched matmul."""
    from keras.src.layers.attention.multi_head_attention import MultiHeadAttention

    _require(_is(mha, _CACHED_MHA if cached else _MHA), "a subclass of MultiHeadAttention")
    _require(type(mha)._compute_attention is MultiHeadAttention._compute_attention,
             "a custom attention")
    if cached:
        serving = getattr(sys.modules.get(type(mha).__module__), "get_vllm_context", None)
        _require(serving is None or serving() is None, "a vLLM serving context")
    _plain(mha)
    explicit = mha._dropout > 0.0
    _require(explicit or not mha._flash_attention, "flash attention")
    _require(not getattr(mha, "_use_gate", False), "a gated attention")
    _require(getattr(mha, "_sliding_window", None) is None, "a sliding window")
    _require(tuple(mha._attention_axes) == (1,), "attention over other axes")
    _require(mha._dot_product_equation == "aecd,abcd->acbe"
             and mha._combine_equation == "acbe,aecd->abcd", "other attention equations")
    softmax = mha._softmax
    _require(_is(softmax, _SOFTMAX) and tuple(softmax.axis) in ((3,), (-1,)),
             "a softmax over other axes")
    shape = _static(x, rank=3)
    heads = int(mha._num_heads)
    folded = isinstance(mask, np.ndarray)
    if mask is not None and not explicit:
        # dot_product_attention's tf.ones_like(scores): a constant only up to FOLD_LIMIT
        batch = shape[0] if isinstance(shape[0], int) else 1
        _require(batch * heads * shape[1] * shape[1] <= _fold_limit(),
                 "an attention mask the lifter does not fold")
    if folded:
        # A constant mask (a decoder's causal mask alone) goes through ops the lifter folds:
        # the heads axis added, and without dropout the AND with ones_like(scores).
        _require(cached and mask.dtype == np.bool_ and mask.shape == (shape[0], shape[1],
                                                                       shape[1]),
                 "a constant mask of another kind")
        ctx.enter(mha, scope)
        mask = np.expand_dims(mask, 1)
        if not explicit:
            mask = np.logical_and(np.ones((shape[0], heads, shape[1], shape[1]), np.bool_),
                                  mask)
        mask = ctx.const(mask)
    elif mask is not None:
        _require(_static(mask, rank=3) in ((shape[0], 1, shape[1]), (shape[0], shape[1],
                                                                     shape[1])),
                 "a mask of another shape")
        ctx.enter(mha, scope)
        if not cached:
            # MultiHeadAttention._compute_attention_mask casts it to bool
            mask = ctx.add("cast", [mask], {"to": DType.bool})
        # the heads axis (-3 of the [B, T, S] mask), added before the softmax
        mask = ctx.add("expand_dims", [mask], {"axis": 1})
    query = _einsum_dense(ctx, mha._query_dense, x, f"{scope}/{mha._query_dense.name}")
    key = _einsum_dense(ctx, mha._key_dense, x, f"{scope}/{mha._key_dense.name}")
    value = _einsum_dense(ctx, mha._value_dense, x, f"{scope}/{mha._value_dense.name}")
    ctx.enter(mha, scope)
    scale = ctx.const(np.float32(mha._inverse_sqrt_key_dim))
    if explicit:
        query = ctx.add("mul", [query, scale])
        key_t = ctx.add("transpose", [key], {"perm": (0, 2, 1, 3)})
        query_t = ctx.add("transpose", [query], {"perm": (0, 2, 3, 1)})
        scores = ctx.add("matmul", [key_t, query_t])
        scores = ctx.add("transpose", [scores], {"perm": (0, 1, 3, 2)})
        ctx.enter(softmax, f"{scope}/{softmax.name}")
        _plain(softmax)
        if mask is not None and mask.type.dtype != DType.bool:
            # Softmax keeps the positions where a non-bool mask is > 0.5 (cast to its dtype)
            mask = ctx.add("greater", [mask, ctx.const(np.array(0.5).astype(mask.type.dtype.np))])
        if mask is not None:
            scores = ctx.add("where", [mask, scores, ctx.const(np.float32(_LARGE_NEGATIVE))])
        probs = ctx.add("softmax", [scores], {"axis": -1})
        if mask is not None:
            probs = ctx.add("where", [mask, probs, ctx.const(np.float32(0.0))])
        ctx.enter(mha, scope)
    else:
        # tf.einsum("BTNH,BSNH->BNTS", query, key): one TF op the lifter expands
        mark = ctx.graph.last
        query_t = ctx.add("transpose", [query], {"perm": (0, 2, 1, 3)})
        key_t = ctx.add("transpose", [key], {"perm": (0, 2, 1, 3)})
        scores = ctx.add("matmul", [query_t, key_t], {"transpose_a": False, "transpose_b": True})
        ctx.one_op(mark, [query, key])
        scores = ctx.add("mul", [scores, scale])
        if mask is not None and mask.type.dtype != DType.bool:
            mask = ctx.add("cast", [mask], {"to": DType.bool})    # ops.cast(mask, "bool")
        if mask is not None and not folded:
            # tf.logical_and(tf.ones_like(scores, bool), mask): the ones folded to a
            # constant (batch 1 for a run-time batch, broadcast)
            batch = shape[0] if isinstance(shape[0], int) else 1
            ones = np.ones((batch, heads, shape[1], shape[1]), np.bool_)
            mask = ctx.add("logical_and", [ctx.const(ones), mask])
            if not isinstance(shape[0], int):
                # tf.ones_like(scores) of a run-time shape is an op on the scores
                ctx.after[mask.producer] = [scores.producer]
        if mask is not None:
            scores = ctx.add("where", [mask, scores,
                                       ctx.const(np.float32(_TF_LARGE_NEGATIVE))])
        probs = ctx.add("softmax", [scores], {"axis": -1})
    mark = ctx.graph.last
    value_t = ctx.add("transpose", [value], {"perm": (0, 2, 1, 3)})
    out = ctx.add("matmul", [probs, value_t])
    out = ctx.add("transpose", [out], {"perm": (0, 2, 1, 3)})
    if not explicit:
        ctx.one_op(mark, [probs, value])    # tf.einsum("BNTS,BSNH->BTNH", probs, value)
    return _einsum_dense(ctx, mha._output_dense, out, f"{scope}/{mha._output_dense.name}")


def _sublayer(ctx: _Context, layer, path: str, scope: str, rule: Callable, x: Value) -> Value:
    _require(_is(layer, path), f"a {type(layer).__name__} where KerasHub builds another")
    _plain(layer)
    ctx.enter(layer, scope)
    return rule(ctx, layer, x)


def _padding_mask(ctx: _Context, x: Value, mask: Value | None) -> Value | None:
    """merge_padding_and_attention_mask(x, mask, None): cast(expand_dims(mask, 1), "int32")."""
    if mask is None:
        return None
    _require(mask.type.dtype in (DType.i32, DType.bool), "a padding mask of another dtype")
    _require(_static(mask, rank=2) == x.type.shape[:2], "a padding mask of another shape")
    mask = ctx.add("expand_dims", [mask], {"axis": 1})
    if mask.type.dtype != DType.i32:
        mask = ctx.add("cast", [mask], {"to": DType.i32})
    return mask


def _block(ctx: _Context, layer, x: Value, mask: Value | np.ndarray | None,
           cached: bool) -> Value:
    """The body TransformerEncoder and TransformerDecoder (without cross-attention) share:
    self-attention, dropout, the residual and layer norm, the two feed-forward Dense layers,
    dropout, the residual and layer norm; the norms first under `normalize_first`."""
    scope = ctx.scope

    def norm(sub, y):
        return _sublayer(ctx, sub, _LAYER_NORM, f"{scope}/{sub.name}", _layer_norm, y)

    def dense(sub, y):
        return _sublayer(ctx, sub, _DENSE, f"{scope}/{sub.name}", _dense, y)

    for dropout in (layer._self_attention_dropout, layer._feedforward_dropout):
        _require(_is(dropout, _DROPOUT), "another dropout")
    first = bool(layer.normalize_first)
    residual = x
    if first:
        x = norm(layer._self_attention_layer_norm, x)
    mha = layer._self_attention_layer
    x = _attention(ctx, mha, x, mask, f"{scope}/{mha.name}", cached=cached)
    ctx.enter(layer, scope)
    x = ctx.add("add", [x, residual])
    if not first:
        x = norm(layer._self_attention_layer_norm, x)
    residual = x
    if first:
        x = norm(layer._feedforward_layer_norm, x)
    x = dense(layer._feedforward_intermediate_dense, x)
    x = dense(layer._feedforward_output_dense, x)
    ctx.enter(layer, scope)
    x = ctx.add("add", [x, residual])
    if not first:
        x = norm(layer._feedforward_layer_norm, x)
    ctx.reorder = True
    return x


def _transformer_encoder(ctx: _Context, layer, args, kwargs):
    """KerasHub's `TransformerEncoder.call(x, padding_mask=...)`: the padding mask widened
    to [B, 1, S], then the block (`_block`)."""
    _plain(layer)
    (x,) = _only(args, kwargs, {
        "padding_mask": lambda m: m is None or isinstance(m, Value),
        "attention_mask": lambda m: m is None, "training": _inference,
        "return_attention_scores": lambda r: r is False})
    _f32(x)
    _static(x, rank=3)
    mask = _padding_mask(ctx, x, kwargs.get("padding_mask"))
    return _block(ctx, layer, x, mask, cached=False)


def _transformer_decoder(ctx: _Context, layer, args, kwargs):
    """KerasHub's `TransformerDecoder.call(x, decoder_padding_mask=...)` without
    cross-attention or a cache (a GPT-2 block): the padding mask widened to [B, 1, S] and,
    under `use_causal_mask` (the default), its minimum with the causal mask (a constant for
    static shapes, as the TF lifter folds `compute_causal_mask`), then the block with
    KerasHub's CachedMultiHeadAttention (`_block`)."""
    _plain(layer)
    nothing = lambda v: v is None   # noqa: E731
    (x,) = _only(args, kwargs, {
        "decoder_padding_mask": lambda m: m is None or isinstance(m, Value),
        "use_causal_mask": lambda c: isinstance(c, bool), "training": _inference,
        **dict.fromkeys(("encoder_sequence", "decoder_attention_mask", "encoder_padding_mask",
                         "encoder_attention_mask", "self_attention_cache",
                         "self_attention_cache_update_index", "cross_attention_cache",
                         "cross_attention_cache_update_index"), nothing)})
    _require(layer._cross_attention_layer is None, "cross-attention")
    _f32(x)
    batch, length, _ = _static(x, rank=3)
    mask = _padding_mask(ctx, x, kwargs.get("decoder_padding_mask"))
    if kwargs.get("use_causal_mask", True):
        # compute_causal_mask(batch, T, T): arange(T)[:, None] >= arange(T), broadcast to
        # [batch, T, T]; the lifter folds it to a constant only for a fixed batch and up to
        # FOLD_LIMIT elements (a larger result that outgrows its operands stays an op)
        _require(isinstance(batch, int), "a run-time batch (the causal mask is not a constant)")
        _require(length * length <= _fold_limit()
                 and (batch == 1 or batch * length * length <= _fold_limit()),
                 "a causal mask the lifter does not fold")
        steps = np.arange(length, dtype=np.float32)
        causal = np.broadcast_to(steps[:, None] >= steps[None, :], (batch, length, length))
        if mask is None:
            mask = np.ascontiguousarray(causal)     # still a constant: `_attention` folds
        else:
            # ops.minimum(int32 mask, bool mask): both int32
            mask = ctx.add("minimum", [mask, ctx.const(causal.astype(np.int32))])
    return _block(ctx, layer, x, mask, cached=True)


def call_rules() -> dict[str, Callable]:
    """{class path: rule(ctx, layer, args, kwargs) -> outputs} for layers called with more than
    float32 tensors (integer ids, keyword arguments such as a padding mask)."""
    rules = {path: _embedding for path in EMBEDDINGS}
    rules[POSITION_EMBEDDING] = _position_embedding
    rules[TOKEN_AND_POSITION_EMBEDDING] = _token_and_position_embedding
    rules[TRANSFORMER_ENCODER] = _transformer_encoder
    rules[TRANSFORMER_DECODER] = _transformer_decoder
    return {path: _checked_version(rule) for path, rule in rules.items()}


def _checked_version(rule: Callable) -> Callable:
    def checked(ctx, layer, args, kwargs):
        _known_keras_hub(layer)
        return rule(ctx, layer, args, kwargs)
    return checked
