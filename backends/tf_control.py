"""TF lowerings of control flow and in-place updates, merged into `tf_lowering.LOWERINGS`:
`while` -> tf.while_loop, `if` -> tf.cond (each region traced as a function through
`cx.run_region`), `dynamic_update_slice` -> a pad-and-select (TF.js has no
XlaDynamicUpdateSlice). `scan` is lowered to `while` before (passes/control.py).
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
    return [tf.where(mask, placed, x)]


LOWERINGS = {"while": _while, "if": _if, "dynamic_update_slice": _dynamic_update_slice}
