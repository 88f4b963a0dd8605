"""Fused recurrent layers: a whole sequence through one cell, as one op.

- `lstm(x, kernel, recurrent_kernel, bias, h0, c0) {time_major}` -> (y, h, c): the LSTM of
  Keras, Flax and TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM. Gates in the order i, f, g, o:
  z = x_t @ kernel + h @ recurrent_kernel + bias, split in four along the last axis;
  c' = sigmoid(f) * c + sigmoid(i) * tanh(g); h' = sigmoid(o) * tanh(c').
- `rnn(x, kernel, recurrent_kernel, bias, h0) {time_major}` -> (y, h): the simple RNN of
  Keras and TFLite's UNIDIRECTIONAL_SEQUENCE_RNN, h' = tanh(x_t @ kernel + h @ recurrent_kernel
  + bias).

x is [batch, time, features] ([time, batch, features] with time_major); y stacks h' of every
step in the same layout, h (and c) are the final state. Frontends never produce these ops:
they lift the loop (`while` or `scan`) a layer traces to, and the `fuse-recurrent` pass
(passes/recurrent.py) recognises the cell in it, because runtimes such as LiteRT have one
kernel for the whole sequence that is much faster than a loop of small ops.
"""

from __future__ import annotations

import numpy as np

from ..types import TensorType
from .registry import Attr, OpDef, check, register_op

_TRAITS = frozenset({"pure"})
_ATTRS = {"time_major": Attr("bool", False, doc="x and y are [time, batch, ...]")}


def _same(a, b) -> bool:
    return a == b or isinstance(a, str) or isinstance(b, str)


def _infer(op: str, gates: int, n_states: int):
    def infer(types, attrs):
        x, kernel, recurrent, bias, *states = types
        check(x.rank == 3 and x.dtype.is_float,
              f"{op}: x must be a float [batch, time, features] tensor, got {x}")
        for t, what in ((kernel, "kernel"), (recurrent, "recurrent_kernel"), (bias, "bias"),
                        *((s, "state") for s in states)):
            check(t.dtype == x.dtype, f"{op}: {what} is {t.dtype}, x is {x.dtype}")
        check(kernel.rank == 2 and recurrent.rank == 2 and bias.rank == 1,
              f"{op}: kernel [features, {gates}*units], recurrent_kernel [units, {gates}*units] "
              f"and bias [{gates}*units] expected, got {kernel}, {recurrent}, {bias}")
        units = recurrent.shape[0]
        check(isinstance(units, int) and units > 0,
              f"{op}: recurrent_kernel needs a static unit count, got {recurrent}")
        time, batch = x.shape[:2] if attrs["time_major"] else x.shape[1::-1]
        check(_same(kernel.shape[0], x.shape[2]),
              f"{op}: kernel has {kernel.shape[0]} input features, x has {x.shape[2]}")
        for t, what in ((kernel, "kernel"), (recurrent, "recurrent_kernel")):
            check(t.shape[1] == gates * units,
                  f"{op}: {what} needs {gates}*{units} columns, got {t}")
        check(bias.shape[0] == gates * units, f"{op}: bias needs {gates}*{units} values, got {bias}")
        check(len(states) == n_states, f"{op}: {n_states} initial states expected")
        for s in states:
            check(s.rank == 2 and _same(s.shape[0], batch) and s.shape[1] == units,
                  f"{op}: a state must be [batch, {units}], got {s}")
        seq = (time, batch, units) if attrs["time_major"] else (batch, time, units)
        state = TensorType(x.dtype, (batch, units))
        return [TensorType(x.dtype, seq)] + [state] * n_states
    return infer


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _run(ins, attrs, step):
    """Runs `step(z, states) -> states` over time (in float64), h being states[0]."""
    x, kernel, recurrent, bias, *states = ins
    dtype = x.dtype
    x = np.asarray(x, np.float64)
    if not attrs["time_major"]:
        x = x.transpose(1, 0, 2)
    kernel, recurrent, bias = (np.asarray(a, np.float64) for a in (kernel, recurrent, bias))
    states = [np.asarray(s, np.float64) for s in states]
    ys = []
    for x_t in x:
        states = step(x_t @ kernel + states[0] @ recurrent + bias, states)
        ys.append(states[0])
    y = np.stack(ys) if ys else np.zeros((0, *states[0].shape))
    if not attrs["time_major"]:
        y = y.transpose(1, 0, 2)
    return [y.astype(dtype)] + [s.astype(dtype) for s in states]


def _lstm_step(z, states):
    _, c = states
    i, f, g, o = np.split(z, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return [_sigmoid(o) * np.tanh(c), c]


def _rnn_step(z, states):
    return [np.tanh(z)]


register_op(OpDef(
    "lstm", ("x", "kernel", "recurrent_kernel", "bias", "h0", "c0"), _infer("lstm", 4, 2),
    lambda ins, attrs: _run(ins, attrs, _lstm_step), attrs=_ATTRS, traits=_TRAITS,
    doc="LSTM over a whole sequence (gates i, f, g, o; sigmoid gates, tanh cell); returns the "
        "stacked h of every step and the final h and c (TFLite UNIDIRECTIONAL_SEQUENCE_LSTM).",
))

register_op(OpDef(
    "rnn", ("x", "kernel", "recurrent_kernel", "bias", "h0"), _infer("rnn", 1, 1),
    lambda ins, attrs: _run(ins, attrs, _rnn_step), attrs=_ATTRS, traits=_TRAITS,
    doc="Simple tanh RNN over a whole sequence; returns the stacked h of every step and the "
        "final h (TFLite UNIDIRECTIONAL_SEQUENCE_RNN).",
))
