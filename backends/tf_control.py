"""TF lowerings of control flow and in-place updates, merged into `tf_lowering.LOWERINGS`:
`while` -> tf.while_loop, `if` -> tf.cond (each region traced as a function through
`cx.run_region`), `dynamic_update_slice` -> a pad-and-select (TF.js has no
XlaDynamicUpdateSlice). For SavedModel and TF.js `scan` is lowered to `while` before
(passes/control.py); `scan` here serves the calibration probe.
"""

from __future__ import annotations

import tensorflow as tf


def _shape(value):
    return tf.TensorShape([d if isinstance(d, int) else None for d in value.type.shape])


def _while(cx, node):
    cond, body = node.regions

    def c(*state):
        return cx.run_region(cond, list(state))[0]

    def b(*state):
        return cx.run_region(body, list(state))

    init = [cx.x(v) for v in node.inputs]
    # A carried value may change size (a `?` dim); the body's argument types say which.
    out = tf.while_loop(c, b, init, shape_invariants=[_shape(v) for v in body.inputs])
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _if(cx, node):
    then, else_ = node.regions
    args = [cx.x(v) for v in node.inputs[1:]]
    out = tf.cond(cx.x(node.inputs[0]), lambda: cx.run_region(then, args),
                  lambda: cx.run_region(else_, args))
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _scan(cx, node):
    """A scan as a tf.while_loop reading rows with gather and writing the stacked outputs
    into buffers (no TensorLists: DTensor cannot lay those out). The file-format backends
    lower `scan` to an IR `while` before (passes/control.py); this serves TF programs built on
    the IR as it is (the calibration probe, DTensor)."""
    n, body = node.attrs["num_carry"], node.regions[0]
    carry = [cx.x(v) for v in node.inputs[:n]]
    xs = [cx.x(v) for v in node.inputs[n:]]
    length = node.attrs["length"] if node.attrs["length"] is not None else tf.shape(xs[0])[0]
    buffers = [tf.zeros(tf.stack([length, *(_size(cx, node, d) for d in v.type.shape)]),
                        cx.tf_dtype(v.type.dtype)) for v in body.outputs[n:]]
    reverse = node.attrs["reverse"]

    def step(i, *state):
        c, out = list(state[:n]), list(state[n:])
        t = length - 1 - i if reverse else i
        res = cx.run_region(body, c + [tf.gather(x, t) for x in xs])
        written = [tf.tensor_scatter_nd_update(buf, tf.reshape(t, [1, 1]), y[None])
                   for buf, y in zip(out, res[n:])]
        return [i + 1] + list(res[:n]) + written

    final = tf.while_loop(lambda i, *_: i < length, step, [tf.constant(0)] + carry + buffers,
                          shape_invariants=[tf.TensorShape([])]
                          + [_shape(v) for v in body.inputs[:n]]
                          + [tf.TensorShape([None] * (v.type.rank + 1))
                             for v in body.outputs[n:]])
    return list(final[1:])


def _size(cx, node, d):
    """A dim of a stacked output: static, or read from an operand that has that symbol."""
    if isinstance(d, int):
        return tf.constant(d)
    for v in node.inputs:
        if d in v.type.shape:
            return tf.shape(cx.x(v))[v.type.shape.index(d)]
    raise ValueError(f"the stacked output size {d} is not a dim of any operand")


def _dynamic_update_slice(cx, node):
    """`update` written into `x` at clamped starts: padded to x's shape and selected by a
    padded mask (Pad, Greater and SelectV2 run everywhere, TF.js included)."""
    x, update, start = (cx.x(v) for v in node.inputs)
    xs = tf.shape(x, out_type=tf.int32)
    us = tf.shape(update, out_type=tf.int32)
    begin = tf.clip_by_value(tf.cast(start, tf.int32), 0, xs - us)
    pads = tf.stack([begin, xs - us - begin], axis=1)
    mask = tf.pad(tf.ones_like(us[:1], tf.int32) * tf.ones(us, tf.int32), pads) > 0
    if x.dtype == tf.bool:
        placed = tf.pad(tf.cast(update, tf.int32), pads) > 0
    else:
        placed = tf.pad(update, pads)
    out = tf.where(mask, placed, x)
    out.set_shape(x.shape)  # (where on padded tensors loses static dims a loop must keep)
    return [out]


LOWERINGS = {"while": _while, "if": _if, "scan": _scan,
             "dynamic_update_slice": _dynamic_update_slice}
