"""IR -> JAX lowering (backends/jax.py): the jitted function against the IR interpreter on a
CNN, a Keras transformer encoder and a Flax MLP, symbolic batch sizes, gradients and an optax
training step, per-op agreement with the reference kernels, and unsupported-node reporting."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from op_helpers import HALVES, I32, IMG, UNARY_OPS, X, rand, small_cnn_graph  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.backends import jax as jax_backend  # noqa: E402
from tensorforge.backends.jax import jax_lowering_problems, to_jax  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402
from tensorforge.ir.graph import Graph, Module  # noqa: E402
from tensorforge.ir.types import DType, TensorType  # noqa: E402

RTOL = 1e-5


def _close(got, want, rtol=RTOL):
    """`got` equals `want` within rtol relative to the output's scale (per-element relative
    error is meaningless where an output crosses zero)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got.astype(want.dtype), want)
        return
    scale = max(float(np.max(np.abs(want))), 1e-6) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def _check_against_ir(module, inputs_per_batch):
    fn, params = to_jax(module)
    jfn = jax.jit(fn)
    for inputs in inputs_per_batch:
        got = jfn(params, *inputs)
        want = tensorforge.run_graph(module.main, list(inputs))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _close(g, w)
    return fn, params


# -- whole models ------------------------------------------------------------------------------

def test_small_cnn_matches_ir_at_two_batch_sizes():
    module = Module([small_cnn_graph(max_pool=True)])
    assert jax_lowering_problems(module) == []
    _, params = _check_against_ir(module, [[rand(b, 16, 16, 3, seed=b)] for b in (1, 3)])
    # Weights are params (named after their user's scope and operand role); the 8-element
    # biases are inlined constants.
    assert set(params) == {"conv1/filter", "dw/filter", "fc/b"}
    assert params["fc/b"].shape == (128, 10)


def test_keras_transformer_encoder_matches_ir():
    from tensorforge.tools.bench.models import transformer_encoder
    from tensorforge.tools.convert import optimize

    module = tensorforge.from_keras(transformer_encoder(2, 32, 2, seq_len=8, vocab=50))
    optimize(module, None)
    assert module.main.inputs[0].type.shape[0] == "batch"
    rng = np.random.default_rng(0)
    fn, params = _check_against_ir(
        module, [[rng.integers(0, 50, (b, 8)).astype(np.int32)] for b in (1, 3)])
    assert any(k.startswith("encoder_0_ff1") for k in params)


def test_flax_mlp_matches_ir():
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.gelu(nn.Dense(32, name="fc1")(x), approximate=False)
            x = nn.LayerNorm(name="ln")(x)
            return nn.log_softmax(nn.Dense(5, name="fc2")(x))

    x = rand(4, 12, seed=3)
    variables = MLP().init(jax.random.PRNGKey(0), x)
    module = tensorforge.from_flax(MLP(), variables, [x])
    fn, params = _check_against_ir(module, [[x]])
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(params, x)[0]),
                               np.asarray(MLP().apply(variables, x)), rtol=1e-5, atol=1e-5)


def test_grad_and_optax_sgd_step_lower_the_loss():
    module = Module([small_cnn_graph()])
    fn, params = to_jax(module)
    x = rand(4, 16, 16, 3, seed=7)
    labels = jnp.asarray([1, 3, 5, 7])

    def loss(p):
        probs = fn(p, x)[0]
        return -jnp.mean(jnp.log(probs[jnp.arange(4), labels] + 1e-9))

    grads = jax.jit(jax.grad(loss))(params)
    assert set(grads) == set(params)
    for k, g in grads.items():
        assert g.shape == params[k].shape and bool(jnp.all(jnp.isfinite(g))), k
        assert float(jnp.max(jnp.abs(g))) > 0, k
    opt = optax.sgd(0.1)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    assert any(not np.allclose(new[k], params[k]) for k in params)
    assert float(loss(new)) < float(loss(params))


# -- per-op agreement --------------------------------------------------------------------------

def _one_op(op, inputs, attrs=None, const_inputs=()):
    """A graph of one `op` node: operand i is a graph input, or a constant when i is in
    `const_inputs`."""
    g = Graph()
    vals = []
    for i, a in enumerate(inputs):
        a = np.asarray(a)
        if i in const_inputs:
            vals.append(g.constant(a))
        else:
            vals.append(g.add_input(TensorType(DType.from_numpy(a.dtype), a.shape), f"in{i}"))
    node = g.add(op, vals, attrs or {}, scope=f"s_{op}")
    g.set_outputs(node.outputs)
    feeds = [np.asarray(a) for i, a in enumerate(inputs) if i not in const_inputs]
    return Module([g]), feeds


F = rand(3, 3, 4, 6, seed=2) * 0.3
CASES = [
    *[(op, [X * 3], {}) for op in UNARY_OPS],
    ("gelu", [X], {"approximate": True}), ("gelu", [X], {}), ("erf", [X], {}),
    ("rsqrt", [np.abs(X) + 0.1], {}), ("elu", [X], {"alpha": 0.7}),
    ("leaky_relu", [X], {"alpha": 0.1}), ("hard_swish", [X], {}), ("softplus", [X], {}),
    ("round", [HALVES], {}), ("sigmoid", [X], {}),
    ("clip", [I32], {"min": -2.5, "max": 4.5}), ("cast", [X * 3], {"to": DType.i32}),
    ("div", [I32, np.full_like(I32, 3)], {}), ("pow", [np.abs(X), X], {}),
    ("floor_div", [I32, np.array([2, -3, 4, 3], np.int32)], {}),
    ("top_k", [X], {"k": 2}),
    ("gather_nd", [X, np.array([[0, 1], [1, 2], [0, 0]], np.int32)], {}),
    ("scatter_nd_update", [X, np.array([[0, 1], [1, 2], [0, 0]], np.int32), rand(3, 4, seed=9)], {}),
    ("floor_mod", [I32, np.array([2, -3, 4, 3], np.int32)], {}),
    ("where", [X > 0, X, -X], {}), ("greater_equal", [X, X[:, :1]], {}),
    ("conv2d", [IMG, F, rand(6, seed=3)],
     {"strides": (2, 1), "padding": "SAME", "dilations": (1, 2), "activation": "relu"}),
    ("conv2d", [IMG, F], {"padding": ((1, 0), (2, 1))}),
    ("conv2d", [IMG, rand(3, 3, 2, 6, seed=4)], {"groups": 2, "padding": "SAME"}),
    ("depthwise_conv2d", [IMG, rand(3, 3, 4, 2, seed=5), rand(8, seed=6)],
     {"strides": (2, 2), "padding": "SAME", "dilations": (1, 1), "activation": "relu6"}),
    ("depthwise_conv2d", [IMG, rand(2, 3, 4, 1, seed=5)], {"dilations": (2, 2)}),
    ("conv2d_transpose", [IMG, rand(3, 3, 5, 4, seed=7)], {"strides": (2, 2), "padding": "SAME"}),
    ("conv2d_transpose", [IMG, rand(3, 2, 5, 4, seed=7), rand(5, seed=8)],
     {"strides": (2, 3), "padding": "VALID", "activation": "tanh"}),
    ("conv2d_transpose", [IMG, rand(3, 3, 5, 4, seed=7)],
     {"strides": (2, 2), "padding": "SAME", "output_shape": (-1, 17, 18, 5)}),
    ("matmul", [rand(2, 3, 5), rand(2, 4, 5, seed=1), rand(4, seed=2)],
     {"transpose_b": True, "activation": "relu_n1_to_1"}),
    ("matmul", [rand(5, 3), rand(5, 4, seed=1)], {"transpose_a": True}),
    ("max_pool2d", [IMG], {"ksize": (3, 2), "strides": (2, 2), "padding": "SAME"}),
    ("avg_pool2d", [IMG], {"ksize": (3, 3), "strides": (2, 2), "padding": "SAME"}),
    ("softmax", [X], {"axis": 1}), ("log_softmax", [X], {"axis": 0}),
    ("batch_norm", [X, rand(3, seed=1), np.abs(rand(3, seed=2)) + 0.5, rand(3, seed=3),
                    rand(3, seed=4)], {"axis": 1}),
    ("layer_norm", [X, rand(2, 4, seed=1), rand(2, 4, seed=2)], {"axes": (0, 2)}),
    ("resize", [IMG], {"size": (5, 13), "method": "bilinear", "half_pixel_centers": True}),
    ("resize", [IMG], {"size": (14, 4), "method": "nearest", "align_corners": True}),
    ("reduce_mean", [I32], {"axes": (1,)}), ("reduce_max", [X], {"axes": (0, 2), "keepdims": True}),
    ("argmax", [X], {"axis": 2, "output_type": DType.i32}),
    ("cumsum", [X], {"axis": 1}), ("cumsum", [I32], {"axis": 0, "exclusive": True}),
    ("cumsum", [X], {"axis": -1, "exclusive": True, "reverse": True}),
    ("quantize", [HALVES], {"scale": (1.0,), "zero_point": (3,), "dtype": DType.i8}),
    ("quantize", [X], {"scale": (0.02, 0.05, 0.1), "zero_point": (0, 1, -2), "axis": 1,
                       "dtype": DType.i8, "narrow_range": True}),
    ("dequantize", [np.array([[-128, 5, 127]], np.int8)], {"scale": (0.1,), "zero_point": (2,)}),
    ("fake_quant", [X], {"scale": (0.05,), "zero_point": (-3,), "bits": 4}),
    ("reshape", [X], {"shape": (-1, 4)}), ("transpose", [X], {"perm": (2, 0, 1)}),
    ("split", [X], {"axis": 2, "sizes": (1, -1)}),
    ("slice", [X], {"begin": (0, 1, 1), "size": (-1, 2, 2)}),
    ("strided_slice", [X], {"begin": (0, -1, 3), "end": (0, 0, 0), "strides": (1, -1, -2),
                            "begin_mask": 1, "end_mask": 3, "shrink_axis_mask": 0}),
    ("strided_slice", [X], {"begin": (1, 0), "end": (2, 0), "strides": (1, 1),
                            "shrink_axis_mask": 1, "new_axis_mask": 2}),
    ("pad", [X], {"pads": ((0, 1), (2, 2), (1, 0)), "mode": "reflect"}),
    ("pad", [I32], {"pads": ((1, 0), (0, 2)), "value": 7.0}),
    ("gather", [X, np.array([[2, 0], [1, 1]], np.int32)], {"axis": 1, "batch_dims": 1}),
    ("gather", [X, np.array([3, 0, 3], np.int32)], {"axis": 2}),
    ("broadcast_to", [X[:, :1]], {"shape": (2, 2, 3, 4)}), ("squeeze", [X[:, :1]], {}),
    ("expand_dims", [X], {"axis": -1}), ("tile", [X], {"multiples": (1, 2, 1)}),
    ("concat", [X, X[:, :1]], {"axis": 1}),
]


@pytest.mark.parametrize("op,inputs,attrs", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_op_matches_reference_kernel(op, inputs, attrs):
    module, feeds = _one_op(op, inputs, attrs)
    fn, params = to_jax(module)
    got = jax.jit(fn)(params, *feeds)
    want = tensorforge.run_graph(module.main, feeds)
    for g, w in zip(got, want):
        _close(g, w)


def test_constant_weights_become_params_and_small_ones_inline():
    module, feeds = _one_op("conv2d", [IMG, F, rand(6, seed=3)], {"padding": "SAME"},
                            const_inputs=(1, 2))
    fn, params = to_jax(module)
    assert list(params) == ["s_conv2d/filter"]   # the 6-element bias stays inline
    _close(jax.jit(fn)(params, *feeds)[0], tensorforge.run_graph(module.main, feeds)[0])


def test_fake_quant_straight_through_gradient():
    module, _ = _one_op("fake_quant", [HALVES], {"scale": (0.5,), "zero_point": (0,), "bits": 3})
    fn, params = to_jax(module)
    # 3-bit signed codes [-4, 3] at scale 0.5 represent [-2, 1.5]: gradient 1 inside, 0 outside.
    g = jax.grad(lambda x: jnp.sum(fn(params, x)[0]))(jnp.asarray(HALVES))
    np.testing.assert_array_equal(np.asarray(g), (HALVES >= -2) & (HALVES <= 1.5))


# -- unsupported nodes -------------------------------------------------------------------------

def test_unsupported_nodes_are_all_reported(monkeypatch):
    monkeypatch.delitem(jax_backend.LOWERINGS, "tanh")
    monkeypatch.delitem(jax_backend.LOWERINGS, "erf")
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 4)), "x")
    a = g.add("tanh", [x], scope="block1", loc="model.py:10").output
    b = g.add("relu", [a], scope="block2").output
    c = g.add("erf", [b], scope="block3", loc="model.py:12").output
    g.set_outputs([g.add("tanh", [c], scope="block4").output])
    module = Module([g])
    problems = jax_lowering_problems(module)
    assert [p.scope for p in problems] == ["block1", "block3", "block4"]
    assert problems[0].loc == "model.py:10" and "tanh" in problems[0].node
    with pytest.raises(ConversionError) as err:
        to_jax(module)
    assert len(err.value.diagnostics) == 3
    text = str(err.value)
    assert "block1" in text and "block3" in text and "block4" in text
    assert "no JAX lowering" in text
