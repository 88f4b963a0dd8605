"""Helpers and sample arrays shared by the op-kernel and backend tests."""

from __future__ import annotations

import numpy as np

from tensorforge.ir.graph import Graph
from tensorforge.ir.ops import get_op
from tensorforge.ir.types import DType, TensorType


def ttype(x: np.ndarray) -> TensorType:
    return TensorType(DType.from_numpy(x.dtype), x.shape)


def run(name, inputs, **attrs):
    """Runs the kernel and checks each result against the inferred type (dtype and shape)."""
    op = get_op(name)
    a = op.complete_attrs(attrs)
    assert op.attr_problems(a) == []
    outs = op.kernel(inputs, a)
    types = op.infer([ttype(x) for x in inputs], a)
    assert len(outs) == len(types)
    for out, t in zip(outs, types):
        assert out.dtype == t.dtype.np, (out.dtype, t)
        assert out.shape == t.shape, (out.shape, t)
    return outs


def infer(name, types, **attrs):
    op = get_op(name)
    return op.infer(types, op.complete_attrs(attrs))


def f32(*shape):
    return TensorType(DType.f32, shape)


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# The float unary ops every backend test (TFLite, SavedModel, TF.js, JAX) runs in its real
# runtime against the interpreter, on `X * 3`. A new unary op is added here once.
UNARY_OPS = ["neg", "abs", "exp", "tanh", "sigmoid", "relu", "relu6", "hard_swish",
             "hard_sigmoid", "softplus", "erf", "sign", "floor", "ceil", "sin", "cos"]

# Sample operands the backend tests feed to every op.
X = rand(2, 3, 4)
POS = np.abs(X) + 0.1
HALVES = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -3.7], np.float32)
I32 = np.array([[-7, -3, 0, 2], [5, 9, -1, 4]], np.int32)
BOOLS = np.array([[True, False, True], [False, False, True]])
IMG = rand(2, 9, 9, 4, seed=1)


def small_cnn_graph(batch="batch", max_pool: bool = False) -> Graph:
    """conv2d+bias+relu6, depthwise+bias+relu6, (max pool,) avg pool, reshape with the batch
    dim, matmul+bias, softmax: the small net every backend test runs end to end."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (batch, 16, 16, 3)), "image")
    w = lambda *s, seed: g.constant(rand(*s, seed=seed) * 0.3)  # noqa: E731
    h = g.add("conv2d", [x, w(3, 3, 3, 8, seed=1), w(8, seed=2)],
              {"strides": (2, 2), "padding": "SAME", "activation": "relu6"}, scope="conv1").output
    h = g.add("depthwise_conv2d", [h, w(3, 3, 8, 1, seed=3), w(8, seed=4)],
              {"padding": "SAME", "activation": "relu6"}, scope="dw").output
    if max_pool:
        h = g.add("max_pool2d", [h], {"ksize": (2, 2), "strides": (1, 1), "padding": "SAME"},
                  scope="pool1").output
    h = g.add("avg_pool2d", [h], {"ksize": (2, 2), "strides": (2, 2)},
              scope="pool2" if max_pool else "pool").output
    h = g.add("reshape", [h], {"shape": (-1, 4 * 4 * 8)}, scope="flatten").output
    h = g.add("matmul", [h, w(128, 10, seed=5), w(10, seed=6)], scope="fc").output
    y = g.add("softmax", [h], scope="fc", names=["probs"]).output
    g.set_outputs([y])
    return g


def randomized(model, seed: int = 1, scale: float = 0.4):
    """`model` with every weight (biases too) drawn from N(0, scale), so no gate or bias sits
    at its initial value; returns the model."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, scale, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def tflite_ops(path) -> list[str]:
    """The builtin operators of a .tflite file, one entry per operator (all subgraphs)."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(open(path, "rb").read(), 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    return [names[model.operatorCodes[op.opcodeIndex].builtinCode]
            for sg in model.subgraphs for op in sg.operators]
