"""Slice and empty-tensor canonicalizations (passes/canonicalize/shapes.py): a slice that reads
inside one operand of a concat reads that operand, a slice that drops an expand_dims' unit dim
reads the operand, a strided_slice that only drops unit dims is a reshape, an empty result is
a constant and a concat drops empty operands. Each rewrite keeps the interpreter's results,
and a pack/unpack pair (a language model's per-layer caches stacked and split again)
vanishes entirely."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge.ir import DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph
from tensorforge.passes import PassManager


def _canonicalized(graph: Graph) -> Graph:
    module = Module([graph])
    PassManager.parse("canonicalize").run(module)
    return module.main


def _ops(graph: Graph) -> list[str]:
    return [n.op for n in graph if n.op != "constant"]


def _slice_attrs(begin, end, shrink=0):
    return {"begin": tuple(begin), "end": tuple(end), "strides": (1,) * len(begin),
            "begin_mask": 0, "end_mask": 0, "new_axis_mask": 0, "ellipsis_mask": 0,
            "shrink_axis_mask": shrink}


def test_pack_then_unpack_vanishes():
    """stack([k0, v0], [k1, v1]) then [:, i, kv] for each: every output is an input."""
    g = Graph()
    parts = [g.add_input(TensorType(DType.f32, (1, 6, 2, 4)), f"p{i}") for i in range(4)]
    layers = []
    for i in range(2):
        pair = [g.add("expand_dims", [p], {"axis": 1}).output for p in parts[2 * i:2 * i + 2]]
        layers.append(g.add("expand_dims", [g.add("concat", pair, {"axis": 1}).output],
                            {"axis": 1}).output)
    whole = g.add("concat", layers, {"axis": 1}).output              # [1, 2, 2, 6, 2, 4]
    outs = [g.add("strided_slice", [whole], _slice_attrs(
        (0, i, kv, 0, 0, 0), (1, i + 1, kv + 1, 6, 2, 4), shrink=0b110)).output
        for i in range(2) for kv in range(2)]
    g.set_outputs(outs)
    xs = [np.random.default_rng(i).standard_normal((1, 6, 2, 4)).astype(np.float32)
          for i in range(4)]
    want = run_graph(g, xs)
    out = _canonicalized(g)
    assert _ops(out) == []
    assert list(out.outputs) == list(out.inputs)
    for a, b in zip(run_graph(out, xs), want):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 4), min_size=1, max_size=4), data=st.data())
def test_slice_of_concat_keeps_its_values(sizes, data):
    """Any unit-stride slice of a concat (inside one operand or across several, empty
    operands included) computes what it did before canonicalization."""
    g = Graph()
    ins = [g.add_input(TensorType(DType.f32, (3, s)), f"x{i}") for i, s in enumerate(sizes)]
    cat = g.add("concat", ins, {"axis": 1}).output
    total = sum(sizes)
    begin = data.draw(st.integers(0, total))
    end = data.draw(st.integers(begin, total))
    shrink = data.draw(st.booleans()) and end > begin
    end = begin + 1 if shrink else end
    sl = g.add("strided_slice", [cat], _slice_attrs((0, begin), (3, end),
                                                    shrink=0b10 if shrink else 0)).output
    g.set_outputs([sl, g.add("slice", [cat], {"begin": (1, begin),
                                                "size": (2, end - begin)}).output])
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, s)).astype(np.float32) for s in sizes]
    want = run_graph(g, xs)
    for a, b in zip(run_graph(_canonicalized(g), xs), want):
        np.testing.assert_array_equal(a, b)


def test_unit_dim_strided_slice_is_a_reshape_and_empty_values_are_constants():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (1, 5, 3)), "x")
    y = g.add_input(TensorType(DType.f32, (2, 4)), "y")
    squeezed = g.add("strided_slice", [x], _slice_attrs((0, 0, 0), (1, 5, 3),
                                                         shrink=0b1)).output
    empty = g.add("slice", [y], {"begin": (0, 4), "size": (2, 0)}).output
    joined = g.add("concat", [y, empty], {"axis": 1}).output
    g.set_outputs([squeezed, joined])
    xs = [np.arange(15, dtype=np.float32).reshape(1, 5, 3),
          np.arange(8, dtype=np.float32).reshape(2, 4)]
    want = run_graph(g, xs)
    out = _canonicalized(g)
    assert _ops(out) == ["reshape"]
    assert out.outputs[1] is out.inputs[1]
    for a, b in zip(run_graph(out, xs), want):
        np.testing.assert_array_equal(a, b)
