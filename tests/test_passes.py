"""Pass infrastructure: registry, pipelines, manager instrumentation, the rewrite driver."""

import io

import numpy as np
import pytest

from tensorforge.ir import DType, Graph, Module, TensorType, TensorforgeError, VerificationError
from tensorforge.passes import (Option, Pass, PassContext, PassManager, PipelineError,
                                RewritePattern, apply_patterns_greedily, parse_pipeline,
                                print_pipeline, register_pass)


def tiny_module():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2,)), "x")
    a = g.add("neg", [x]).output
    b = g.add("neg", [a]).output
    g.set_outputs([b])
    return Module([g])


@pytest.mark.parametrize("text", [
    "canonicalize",
    "canonicalize,fold-constants,dce,cse",
    "canonicalize{fold=false,max-iterations=3},dce",
    "fold-constants{limit=100},shape-simplify,algebraic-simplify",
])
def test_pipeline_prints_back(text):
    assert print_pipeline(parse_pipeline(text)) == text
    assert str(PassManager.parse(text)) == text


def test_pipeline_whitespace_and_quotes():
    assert print_pipeline(parse_pipeline(" canonicalize , dce ")) == "canonicalize,dce"


def test_pipeline_errors_list_everything():
    with pytest.raises(PipelineError) as info:
        parse_pipeline("canonicalze,dce{bogus=1},canonicalize{fold=maybe}")
    msg = str(info.value)
    assert "3 problems" in msg
    assert "did you mean canonicalize" in msg
    assert "pass 'dce' has no option 'bogus'" in msg
    assert "expected true or false, got 'maybe'" in msg


def test_pipeline_syntax_errors():
    for bad in ("canonicalize{fold=true", "cse dce", "{x=1}"):
        with pytest.raises(PipelineError):
            parse_pipeline(bad)


def test_python_api_options():
    from tensorforge.passes.canonicalize import Canonicalize

    p = Canonicalize(max_iterations=2, fold=False)
    assert p.pipeline_text() == "canonicalize{max-iterations=2,fold=false}"
    with pytest.raises(PipelineError, match="no option 'nope'"):
        Canonicalize(nope=1)


@register_pass("test-liar")
class Liar(Pass):
    """Changes the IR but says it did not (to test the manager's check)."""

    def run(self, module, ctx):
        g = module.main
        n = g.last
        n.outputs[0].replace_all_uses_with(n.inputs[0])
        g.erase(n)
        return False


@register_pass("test-breaker")
class Breaker(Pass):
    """Breaks the IR (to test --verify-each)."""

    options = {"dim": Option(int, 7, "the wrong dim")}

    def run(self, module, ctx):
        module.main.last.outputs[0].type = TensorType(DType.f32, (self.option("dim"),))
        return True


def test_check_changes_catches_a_lying_pass():
    with pytest.raises(TensorforgeError, match="reported changed=False but the IR changed"):
        PassManager.parse("test-liar").run(tiny_module(), PassContext(check_changes=True))


def test_builtin_passes_report_truthfully():
    ctx = PassContext(check_changes=True, verify_each=True)
    for name in ("canonicalize", "fold-constants", "algebraic-simplify", "shape-simplify", "cse",
                 "dce"):
        m = tiny_module()
        PassManager.parse(name).run(m, ctx)
        PassManager.parse(name).run(m, ctx)  # the second run finds nothing to do


def test_verify_each_names_the_pass():
    with pytest.raises(VerificationError, match=r"IR invalid after pass 'test-breaker\{dim=9\}'"):
        PassManager.parse("test-breaker{dim=9}").run(tiny_module(), PassContext(verify_each=True))


def test_print_ir_after_and_timings():
    stream = io.StringIO()
    ctx = PassContext(print_ir_after={"cse"}, ir_stream=stream, time_passes=True)
    PassManager.parse("canonicalize,cse").run(tiny_module(), ctx)
    assert "IR Dump After cse (unchanged)" in stream.getvalue()
    assert "canonicalize" not in stream.getvalue()
    assert [t.name for t in ctx.timings] == ["canonicalize", "cse"]
    assert "total" in ctx.timing_report()
    assert ctx.stats["Involution"] == 1


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        @register_pass("canonicalize")
        class Other(Pass):
            """Not the real one."""


class Flip(RewritePattern):
    root = "neg"

    def __init__(self, to):
        self.to = to

    def match_and_rewrite(self, node, rw):
        new = rw.create(self.to, node.inputs, like=node)
        rw.replace(node, new.outputs)
        return True


def test_rewrite_driver_detects_non_convergence():
    m = tiny_module()
    back = Flip("neg")  # rewrites neg into a fresh neg forever
    with pytest.raises(TensorforgeError, match="did not converge"):
        apply_patterns_greedily(m.main, [back], max_rewrites=50)


def test_rewrite_driver_erases_dead_chains():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2,)), "x")
    a = g.add("exp", [x]).output
    g.add("neg", [a])  # dead chain
    g.set_outputs([x])
    assert apply_patterns_greedily(g, []) is True
    assert len(g) == 0


def test_constant_fold_keeps_runtime_errors_at_runtime():
    g = Graph()
    a = g.constant(np.array([1, 2], np.int32))
    z = g.constant(np.array([0, 0], np.int32))
    d = g.add("div", [a, z]).output
    g.set_outputs([d])
    m = Module([g])
    assert PassManager.parse("fold-constants").run(m) is False
    assert [n.op for n in m.main] == ["constant", "constant", "div"]
    from tensorforge.ir.interpreter import run_graph

    with pytest.raises(TensorforgeError, match="integer division by zero"):
        run_graph(m.main, [])
