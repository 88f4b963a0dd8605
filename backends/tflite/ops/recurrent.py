"""Fused recurrent layers: `lstm` -> UNIDIRECTIONAL_SEQUENCE_LSTM, `rnn` ->
UNIDIRECTIONAL_SEQUENCE_RNN (the ops `fuse-recurrent` makes out of Keras and Flax loops).

TFLite keeps a sequence op's state in *variable* tensors that the kernel updates in place:
they are allocated once, at their declared size (so the batch must be static), start at zero
and keep the last step's state from one `invoke` to the next. A Keras layer with
`stateful=False` starts from its initial state on every call, so each state tensor is
written by an ADD (initial state + 0) right before the op, and every invoke starts from the
initial state (zeros or the caller's).

The state tensors are never read after the op: the in-place update is not a dependency the
interpreter knows of, and a delegate (XNNPACK) may run a reader before the op. The final h
is the last row of the op's output instead; the final c has no such source, so the TFLite
writer only fuses loops whose final c nothing reads (passes/recurrent.py, `tflite_problem`).
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ....ir.quantized import is_quantized
from ....ir.types import DType
from .common import Unsupported, _need, _param, emit


def _gate_weights(e, value, gates: int, name: str) -> list[int]:
    """One [units, in] matrix per gate from a [in, gates*units] IR constant."""
    if value.const is None:
        raise Unsupported(f"TFLite sequence ops need a constant {name}")
    units = value.type.shape[1] // gates
    return [e.derived(value, f"{name}_{k}",
                      lambda a, k=k: np.ascontiguousarray(a[:, k * units:(k + 1) * units].T))
            for k in range(gates)]


def _gate_biases(e, value, gates: int) -> list[int]:
    if value.const is None:
        raise Unsupported("TFLite sequence ops need a constant bias")
    units = value.type.shape[0] // gates
    return [e.derived(value, f"bias_{k}", lambda a, k=k: a[k * units:(k + 1) * units].copy())
            for k in range(gates)]


def _state(e, initial, name: str) -> int:
    """A variable tensor for a state, set to `initial` right before the op."""
    index = e.tmp(DType.f32, initial.type.shape, f"{name}_state")
    e.tensors[index].isVariable = True
    zero = e.const(np.zeros((), np.float32), f"{e.prefix}/{name}_reset")
    emit(e, "ADD", [e.t(initial), zero], out=index,
         options=fb.AddOptionsT(fusedActivationFunction=fb.ActivationFunctionType.NONE))
    return index


def _final_h(e, node, y: int) -> None:
    """The op's h result: the last time step of its output y."""
    h = node.outputs[1]
    if not h.uses:
        return
    axis = 0 if node.attrs["time_major"] else 1
    begin = [0, 0, 0]
    begin[axis] = -1
    emit(e, "STRIDED_SLICE", [y, _param(e, begin, "last_begin"), _param(e, [0, 0, 0], "last_end"),
                              _param(e, [1, 1, 1], "last_strides")],
         out=e.out(h), options=fb.StridedSliceOptionsT(
             beginMask=0b111 & ~(1 << axis), endMask=0b111, shrinkAxisMask=1 << axis))


def _check(node):
    if not isinstance(node.outputs[1].type.shape[0], int):
        raise Unsupported(f"TFLite's sequence kernels keep their state in fixed-size tensors: "
                          f"{node.op} needs a static batch size (convert with input_shapes "
                          f"fixing it)")
    for v in node.inputs:
        if is_quantized(v):
            raise Unsupported(f"the integer {node.op} kernel is not supported yet; keep the "
                              f"layer float")
        _need(node, v, {DType.f32}, f"UNIDIRECTIONAL_SEQUENCE_{node.op.upper()}")


def _lower_lstm(e, node):
    _check(node)
    if node.outputs[2].uses:
        raise Unsupported("TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM has no final cell state "
                          "output; keep the layer a loop to read c")
    x, kernel, recurrent, bias, h0, c0 = node.inputs
    weights = _gate_weights(e, kernel, 4, "input_weights")
    recurrent_weights = _gate_weights(e, recurrent, 4, "recurrent_weights")
    biases = _gate_biases(e, bias, 4)
    h, c = _state(e, h0, "h"), _state(e, c0, "c")
    # Inputs, as the schema orders them: x; input and recurrent weights (gates i, f, g, o);
    # no peepholes; biases; no projection; the output and cell states.
    inputs = [e.t(x), *weights, *recurrent_weights, -1, -1, -1, *biases, -1, -1, h, c]
    options = fb.UnidirectionalSequenceLSTMOptionsT(
        fusedActivationFunction=fb.ActivationFunctionType.TANH,
        timeMajor=node.attrs["time_major"])
    y = e.out(node.outputs[0])
    e.op("UNIDIRECTIONAL_SEQUENCE_LSTM", inputs, [y], options)
    _final_h(e, node, y)


def _lower_rnn(e, node):
    _check(node)
    x, kernel, recurrent, bias, h0 = node.inputs
    (weights,) = _gate_weights(e, kernel, 1, "input_weights")
    (recurrent_weights,) = _gate_weights(e, recurrent, 1, "recurrent_weights")
    (b,) = _gate_biases(e, bias, 1)
    h = _state(e, h0, "h")
    options = fb.SequenceRNNOptionsT(timeMajor=node.attrs["time_major"],
                                     fusedActivationFunction=fb.ActivationFunctionType.TANH)
    y = e.out(node.outputs[0])
    e.op("UNIDIRECTIONAL_SEQUENCE_RNN", [e.t(x), weights, recurrent_weights, b, h], [y], options)
    _final_h(e, node, y)


LOWERINGS = {"lstm": _lower_lstm, "rnn": _lower_rnn}
