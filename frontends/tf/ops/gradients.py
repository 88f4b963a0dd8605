"""The gradient kernels tf.GradientTape writes into a model that differentiates inside its
call (input saliency, physics-informed losses, `ops.jvp`): TanhGrad, SigmoidGrad, ReluGrad and
friends, each the closed-form derivative of its activation times the incoming gradient, in
plain elementwise IR. (BroadcastGradientArgs, the other op a tape adds, is folded from the
shapes in `shape.py`.)

TF's argument order differs between them: the *Grad ops of an output-defined derivative
(tanh, sigmoid, sqrt, rsqrt, reciprocal) take (y, dy); those of a feature-defined one (relu,
relu6, elu, softplus, leaky relu) take (dy, x).
"""

from __future__ import annotations

import numpy as np

from ..context import Const
from .common import node_attr


def _k(ctx, like, value):
    return Const(np.asarray(value, ctx.type(like).dtype.np), ctx.node)


def _mul(ctx, a, b):
    return ctx.emit1("mul", [a, b])


def _tanh_grad(ctx, node, ins):
    """dy * (1 - y^2)."""
    y, dy = ins
    return ctx.emit("mul", [dy, ctx.emit1("sub", [_k(ctx, y, 1), _mul(ctx, y, y)])])


def _sigmoid_grad(ctx, node, ins):
    """dy * y * (1 - y)."""
    y, dy = ins
    return ctx.emit("mul", [_mul(ctx, dy, y), ctx.emit1("sub", [_k(ctx, y, 1), y])])


def _sqrt_grad(ctx, node, ins):
    """dy * 0.5 / y."""
    y, dy = ins
    return ctx.emit("div", [_mul(ctx, dy, _k(ctx, y, 0.5)), y])


def _rsqrt_grad(ctx, node, ins):
    """dy * -0.5 * y^3."""
    y, dy = ins
    cube = _mul(ctx, _mul(ctx, y, y), y)
    return ctx.emit("mul", [_mul(ctx, dy, _k(ctx, y, -0.5)), cube])


def _reciprocal_grad(ctx, node, ins):
    """-dy * y^2."""
    y, dy = ins
    return ctx.emit("mul", [ctx.emit1("neg", [dy]), _mul(ctx, y, y)])


def _where_positive(ctx, x, then, otherwise):
    return ctx.emit("where", [ctx.emit1("greater", [x, _k(ctx, x, 0)]), then, otherwise])


def _relu_grad(ctx, node, ins):
    """dy where x > 0, else 0."""
    dy, x = ins
    return _where_positive(ctx, x, dy, _k(ctx, dy, 0))


def _relu6_grad(ctx, node, ins):
    """dy where 0 < x < 6, else 0."""
    dy, x = ins
    inside = ctx.emit1("logical_and", [ctx.emit1("greater", [x, _k(ctx, x, 0)]),
                                       ctx.emit1("less", [x, _k(ctx, x, 6)])])
    return ctx.emit("where", [inside, dy, _k(ctx, dy, 0)])


def _leaky_relu_grad(ctx, node, ins):
    """dy where x > 0, else alpha * dy."""
    dy, x = ins
    alpha = float(node_attr(node, "alpha", 0.2))
    return _where_positive(ctx, x, dy, _mul(ctx, dy, _k(ctx, dy, alpha)))


def _elu_grad(ctx, node, ins):
    """TF's EluGrad takes the elu *outputs*: dy where out > 0, else dy * (out + 1)."""
    dy, out = ins
    return _where_positive(ctx, out, dy, _mul(ctx, dy, ctx.emit1("add", [out, _k(ctx, out,
                                                                                   1)])))


def _softplus_grad(ctx, node, ins):
    """dy * sigmoid(x)."""
    dy, x = ins
    return ctx.emit("mul", [dy, ctx.emit1("sigmoid", [x])])


TABLE = {
    "TanhGrad": _tanh_grad, "SigmoidGrad": _sigmoid_grad, "SqrtGrad": _sqrt_grad,
    "RsqrtGrad": _rsqrt_grad, "ReciprocalGrad": _reciprocal_grad, "InvGrad": _reciprocal_grad,
    "ReluGrad": _relu_grad, "Relu6Grad": _relu6_grad, "LeakyReluGrad": _leaky_relu_grad,
    "EluGrad": _elu_grad, "SoftplusGrad": _softplus_grad,
}
