"""Canonicalization passes: `canonicalize` (all patterns + CSE + DCE to a fixed point) and its
parts `fold-constants`, `algebraic-simplify`, `shape-simplify`, `fold-batchnorm`, `fuse-bias`,
`fuse-activation`, `cse`, `dce`."""

from __future__ import annotations

from ...ir.graph import Module
from ..base import Option, Pass, register_pass
from ..rewrite import apply_patterns_greedily
from .algebra import algebra_patterns
from .cleanup import eliminate_common_subexpressions, eliminate_dead_code
from .control import DEFAULT_UNROLL_LIMIT, control_patterns
from .fold import DEFAULT_FOLD_LIMIT, FoldConstants
from .fusion import activation_patterns, batchnorm_patterns, bias_patterns, fusion_patterns
from .shapes import shape_patterns


def _run_patterns(module: Module, patterns, ctx) -> bool:
    changed = False
    for g in list(module.all_graphs()):
        changed |= apply_patterns_greedily(g, patterns, stats=ctx.stats)
    return changed


@register_pass("canonicalize")
class Canonicalize(Pass):
    """Folds constants, simplifies algebra, shapes and control flow, fuses conv/matmul
    epilogues, CSE, DCE."""

    options = {
        "fold": Option(bool, True, "fold nodes whose operands are all constants"),
        "fuse": Option(bool, True, "fold batch-norm / bias / activations into conv and matmul"),
        "fold-limit": Option(int, DEFAULT_FOLD_LIMIT, "largest folded result (elements)",
                             min=0),
        "cse": Option(bool, True, "merge identical computations"),
        "max-iterations": Option(int, 8, "pattern/CSE rounds before giving up on a fixed point",
                                 min=1),
        "unroll-limit": Option(int, DEFAULT_UNROLL_LIMIT,
                               "unroll scans of at most this many steps (0: never)", min=0),
    }

    def run(self, module, ctx):
        patterns = [*algebra_patterns(), *shape_patterns(),
                    *control_patterns(self.option("unroll-limit"))]
        if self.option("fuse"):
            # After the identities, so x*1 or x+0 after a conv vanish instead of being folded.
            patterns += fusion_patterns()
        if self.option("fold"):
            patterns.insert(0, FoldConstants(self.option("fold-limit")))
        changed = False
        # Innermost regions first: a loop body that simplifies may leave state its loop
        # can then drop.
        for g in reversed(list(module.all_graphs())):
            for _ in range(max(1, self.option("max-iterations"))):
                round_changed = apply_patterns_greedily(g, patterns, stats=ctx.stats)
                if self.option("cse"):
                    # CSE can expose new patterns (two equal operands), so loop until quiet.
                    round_changed |= eliminate_common_subexpressions(g)
                changed |= round_changed
                if not round_changed or not self.option("cse"):
                    break
        return changed


@register_pass("fold-constants")
class FoldConstantsPass(Pass):
    """Evaluates nodes whose operands are all constants with the reference kernels."""

    options = {"limit": Option(int, DEFAULT_FOLD_LIMIT, "largest folded result (elements)",
                                min=0)}

    def run(self, module, ctx):
        return _run_patterns(module, [FoldConstants(self.option("limit"))], ctx)


@register_pass("algebraic-simplify")
class AlgebraicSimplify(Pass):
    """Removes x+0, x*1, x/1, double negation, repeated idempotent ops, identities, no-op casts."""

    def run(self, module, ctx):
        return _run_patterns(module, algebra_patterns(), ctx)


@register_pass("shape-simplify")
class ShapeSimplify(Pass):
    """Composes reshape and transpose chains, drops no-op shape ops, folds explicit broadcasts."""

    def run(self, module, ctx):
        return _run_patterns(module, shape_patterns(), ctx)


@register_pass("fold-batchnorm")
class FoldBatchNorm(Pass):
    """Folds inference batch-norm and per-channel mul/add/sub into conv/matmul weights and bias."""

    def run(self, module, ctx):
        return _run_patterns(module, batchnorm_patterns(), ctx)


@register_pass("fuse-bias")
class FuseBias(Pass):
    """Folds an add (or sub) of a per-channel constant after conv/matmul into its bias."""

    def run(self, module, ctx):
        return _run_patterns(module, bias_patterns(), ctx)


@register_pass("fuse-activation")
class FuseActivation(Pass):
    """Fuses relu/relu6/tanh/clip(0,6)/clip(-1,1) after conv/matmul into its activation."""

    def run(self, module, ctx):
        return _run_patterns(module, activation_patterns(), ctx)


@register_pass("cse")
class CSE(Pass):
    """Merges identical computations (same op, operands, attributes and scope)."""

    def run(self, module, ctx):
        # A merged node has the same operands as the node it merges into, so nothing is
        # orphaned and no DCE is needed afterwards.
        changed = False
        for g in list(module.all_graphs()):
            changed |= eliminate_common_subexpressions(g)
        return changed


@register_pass("dce")
class DCE(Pass):
    """Erases nodes whose results are never used."""

    def run(self, module, ctx):
        changed = False
        for g in list(module.all_graphs()):
            changed |= eliminate_dead_code(g)
        return changed
