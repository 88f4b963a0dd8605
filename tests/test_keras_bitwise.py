"""Bit-level keras.ops (ir/ops/bitwise.py), on every target through the integer-arithmetic
expansion of the ops a target lacks (passes/bitwise.py), and the sign-bit idiom behind Keras's
float argmax/argmin and signbit, which canonicalize turns into float comparisons so that every
target runs it (TFLite has no bitwise AND)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from hypothesis import given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.ir import DType, Graph, Module, TensorType  # noqa: E402
from tensorforge.ir.interpreter import run_graph  # noqa: E402
from tensorforge.passes.bitwise import (BITWISE_OPS, TFLITE_MISSING,  # noqa: E402
                                        with_bitwise_expanded)

from op_helpers import tflite_ops  # noqa: E402


class _Args(keras.layers.Layer):
    def call(self, x):
        return ops.stack([ops.argmax(x, axis=-1), ops.argmin(x, axis=-1),
                          ops.cast(ops.sum(ops.signbit(x), axis=-1), "int32")], axis=-1)


def test_float_argmax_argmin_signbit_need_no_bit_ops(tmp_path):
    x = keras.Input((3, 5), name="x")
    model = keras.Model(x, _Args(name="args")(x))
    data = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    data[0, 0, :2] = [-0.0, 0.0]
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 verify_inputs={"x": data}, progress=False)
    assert result.verification.ok, result.verification.table()
    ops_left = {n.op for n in result.module.main.walk()}
    assert not ops_left & {"bitcast", "bitwise_and"}, ops_left


class _Bits(keras.layers.Layer):
    def call(self, x, y):
        return ops.stack([ops.bitwise_xor(x, y), ops.bitwise_invert(x),
                          ops.right_shift(x, ops.mod(y, 5))], axis=-1)


def test_bitwise_ops_in_litert_and_tf(tmp_path):
    """XOR, NOT (as XOR with -1) and arithmetic right shift run in LiteRT and TF as bitwise
    kernels (BITWISE_XOR, RIGHT_SHIFT; TF's BitwiseXor, Invert, RightShift)."""
    x = keras.Input((4,), dtype="int32", name="x")
    y = keras.Input((4,), dtype="int32", name="y")
    model = keras.Model([x, y], _Bits(name="bits")(x, y))
    rng = np.random.default_rng(0)
    feeds = {"x": rng.integers(-1000, 1000, (2, 4)).astype(np.int32),
             "y": rng.integers(0, 64, (2, 4)).astype(np.int32)}
    result = tensorforge.convert(model, target=["tflite", "savedmodel"], output=tmp_path / "m",
                                 verify_inputs=feeds, progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel"}


class _AllBits(keras.layers.Layer):
    def call(self, x, y, k):
        return ops.stack([ops.bitwise_and(x, y), ops.bitwise_or(x, y), ops.bitwise_xor(x, y),
                          ops.bitwise_not(x), ops.left_shift(x, k), ops.right_shift(x, k)],
                         axis=-1)


def test_bitwise_ops_on_every_target_without_and_or_shift_builtins(tmp_path):
    """AND, OR and LEFT_SHIFT (TFLite) and every bitwise op (TF.js) become exact integer
    arithmetic (passes/bitwise.py): extremes, negative values and shift amounts outside
    [0, 31] (clamped) agree bit for bit on every runtime."""
    x = keras.Input((8,), dtype="int32", name="x")
    y = keras.Input((8,), dtype="int32", name="y")
    k = keras.Input((8,), dtype="int32", name="k")
    model = keras.Model([x, y, k], _AllBits(name="bits")(x, y, k))
    rng = np.random.default_rng(1)
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    xs = rng.integers(lo, hi, (2, 8), endpoint=True).astype(np.int32)
    xs[0, :4] = [lo, hi, 0, -1]
    ys = rng.integers(lo, hi, (2, 8), endpoint=True).astype(np.int32)
    ys[0, 4:] = [lo, hi, 0, -1]
    ks = np.array([[-5, 0, 1, 7, 30, 31, 32, 100], [3, 31, 0, 15, 16, 29, 2, 1]], np.int32)
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 verify_inputs={"x": xs, "y": ys, "k": ks}, progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}
    builtins = set(tflite_ops(result.paths["tflite"]))
    assert not builtins & {"BITWISE_AND", "BITWISE_OR", "LEFT_SHIFT"}, builtins
    assert {"BITWISE_XOR", "RIGHT_SHIFT"} <= builtins, builtins   # kept where TFLite has them


_SHIFTS = ("left_shift", "right_shift")
_INTS = {DType.i8: np.int8, DType.u8: np.uint8, DType.i16: np.int16, DType.i32: np.int32}


def _ints(dtype):
    info = np.iinfo(dtype)
    extremes = [info.min, info.max, 0, 1, info.min + 1, info.max - 1] + (
        [-1] if info.min < 0 else [])
    return st.one_of(st.sampled_from(extremes), st.integers(int(info.min), int(info.max)))


@st.composite
def _bitwise_cases(draw):
    dt = draw(st.sampled_from(sorted(_INTS, key=lambda d: d.value)))
    op = draw(st.sampled_from(sorted(BITWISE_OPS)))
    n = draw(st.integers(1, 6))
    x = np.array(draw(st.lists(_ints(_INTS[dt]), min_size=n, max_size=n)), _INTS[dt])
    if op in _SHIFTS:
        # Amounts past either end of [0, width - 1] too (clamped), within the dtype.
        amounts = st.integers(max(-3, int(np.iinfo(_INTS[dt]).min)), dt.bits + 3)
        y = np.array(draw(st.lists(amounts, min_size=n, max_size=n)), _INTS[dt])
    else:
        y = np.array(draw(st.lists(_ints(_INTS[dt]), min_size=n, max_size=n)), _INTS[dt])
    return dt, op, x, y


@settings(max_examples=300, deadline=None)
@given(_bitwise_cases())
def test_bitwise_expansion_equals_ir_kernels(case):
    """The expansion (passes/bitwise.py) computes what the IR kernels compute, bit for bit,
    on int8/uint8/int16/int32 values including the extremes and clamped shift amounts."""
    dt, op, x, y = case
    g = Graph()
    xv = g.add_input(TensorType(dt, x.shape), "x")
    operands = [xv] if op == "bitwise_not" else [xv, g.add_input(TensorType(dt, y.shape), "y")]
    g.set_outputs([g.add(op, operands).output])
    module = Module([g])
    expanded = with_bitwise_expanded(module)
    assert expanded is not module
    assert not {n.op for n in expanded.main.walk()} & BITWISE_OPS
    feeds = [x, y][:len(operands)]
    want = run_graph(module.main, feeds)[0]
    got = run_graph(expanded.main, feeds)[0]
    note(f"{op} {dt}: x={x.tolist()} y={y.tolist()} want={want.tolist()} got={got.tolist()}")
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_bitwise_expansion_leaves_other_modules_alone():
    g = Graph()
    x = g.add_input(TensorType(DType.i64, (3,)), "x")
    g.set_outputs([g.add("bitwise_and", [x, x]).output])
    module = Module([g])
    assert with_bitwise_expanded(module) is module          # no int64 rewrite
    assert with_bitwise_expanded(module, TFLITE_MISSING - {"bitwise_and"}) is module
