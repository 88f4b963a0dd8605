"""Graph data structure: building, use-lists, mutation API, clone, networkx view."""

import numpy as np
import pytest

from tensorforge.ir import DType, Graph, Module, Node, TensorType, Value
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.verify import graph_problems, verify_graph

F32 = lambda *shape: TensorType(DType.f32, shape)  # noqa: E731


def small_graph():
    g = Graph()
    x = g.add_input(F32("batch", 3), "x")
    c = g.constant(np.ones(3, np.float32), "c")
    a = g.add("add", [x, c], scope="blk", loc="test:add")
    r = g.add("relu", [a.output])
    g.set_outputs([r.output])
    return g, x, c, a, r


def test_build_and_infer_types():
    g, x, c, a, r = small_graph()
    assert a.output.type == F32("batch", 3)
    assert [n.op for n in g] == ["constant", "add", "relu"]
    assert len(g) == 3
    assert list(x.uses) == [(a, 0)] and list(c.uses) == [(a, 1)]
    assert list(r.output.uses) == [(g, 0)]
    verify_graph(g)


def test_insert_before_after_keep_order():
    g, x, c, a, r = small_graph()
    n = g.add("neg", [x], before=a)
    m = Node("abs", [n.output], [Value(F32("batch", 3))])
    g.insert_after(m, n)
    assert [k.op for k in g] == ["constant", "neg", "abs", "add", "relu"]
    a.set_input(0, m.outputs[0])
    assert list(x.uses) == [(n, 0)]
    verify_graph(g)
    out = run_graph(g, [np.array([[-1, 2, -3]], np.float32)])[0]
    np.testing.assert_array_equal(out, [[2, 3, 4]])


def test_replace_all_uses_and_erase():
    g, x, c, a, r = small_graph()
    a.output.replace_all_uses_with(x)
    assert r.inputs[0] is x and not a.output.uses
    g.erase(a)
    assert [n.op for n in g] == ["constant", "relu"]
    assert not c.uses
    verify_graph(g)


def test_erase_refuses_used_node():
    g, x, c, a, r = small_graph()
    with pytest.raises(ValueError, match="still used"):
        g.erase(a)


def test_graph_output_is_a_use():
    g, x, c, a, r = small_graph()
    r.output.replace_all_uses_with(a.output)
    assert g.outputs == [a.output]
    g.erase(r)
    verify_graph(g)


def test_clone_is_deep_and_equal():
    g, *_ = small_graph()
    m = Module([g])
    m2 = m.clone()
    assert m2 == m
    assert m2.main.first is not g.first
    # mutating the clone leaves the original alone
    first_add = [n for n in m2.main if n.op == "add"][0]
    first_add.attrs = {}
    relu = m2.main.last
    relu.output.replace_all_uses_with(first_add.output)
    m2.main.erase(relu)
    assert m2 != m and len(g) == 3


def test_constants_are_read_only():
    g, x, c, *_ = small_graph()
    with pytest.raises(ValueError):
        c.const[0] = 5


def test_to_networkx():
    import networkx as nx

    g, x, c, a, r = small_graph()
    G = g.to_networkx()
    assert nx.is_directed_acyclic_graph(G)
    assert list(nx.topological_sort(G))[-1] == "return"
    assert G.number_of_edges() == 3 + 1  # x->add, c->add, add->relu, relu->return
    assert nx.has_path(G, x, "return")


def test_verifier_reports_every_problem():
    g, x, c, a, r = small_graph()
    a.attrs = {"bogus": 1}
    r.output.type = F32("batch", 4)
    problems = graph_problems(g)
    msgs = " | ".join(str(p) for p in problems)
    assert "unknown attribute 'bogus'" in msgs
    assert "declared f32[batch,4] but relu infers f32[batch,3]" in msgs
    assert "scope 'blk'" in msgs and "loc 'test:add'" in msgs


def test_verifier_rejects_wrong_order():
    g, x, c, a, r = small_graph()
    # move relu before add by relinking: erase and re-insert at the front
    r.output.replace_all_uses_with(a.output)
    g.erase(r)
    n = Node("relu", [a.output], [Value(F32("batch", 3))])
    g.insert_before(n, g.first)
    msgs = " ".join(str(p) for p in graph_problems(g))
    assert "produced later" in msgs
