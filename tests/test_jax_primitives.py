"""JAX primitives lifted end to end: rev, is_finite (jax.nn.logsumexp), erf_inv, cumprod /
cummax / cummin, sort (jnp.sort, jnp.argsort, multi-operand lax.sort), pad with interior and
negative padding, and conv_general_dilated with lhs_dilation (lax.conv_transpose).

Each group converts a small jnp function to every target with verify=True (the IR
interpreter, LiteRT, SavedModel and TF.js in Node against JAX itself) and runs the JAX backend
on the lifted module; the new IR ops' kernels are checked against NumPy / TensorFlow, and
their decomposed lowerings on edge values (inf, NaN, +-1) in LiteRT, TF and JAX."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.backends.jax import to_jax  # noqa: E402
from tensorforge.ir import DType, Graph, Module, TensorType  # noqa: E402
from tensorforge.ir.errors import InferenceError  # noqa: E402
from tensorforge.ir.interpreter import run_graph  # noqa: E402

from op_helpers import infer, run, ttype  # noqa: E402

RNG = np.random.default_rng(0)


def _convert(fn, args, tmp_path, name, **kw):
    """fn converted to every target and verified against JAX; the JAX backend's function of
    the lifted module also matches JAX on `args`. Returns the result."""
    result = tensorforge.convert(fn, target="all", output=tmp_path / name, verify=True,
                                 example_args=list(args), **kw)
    v = result.verification
    assert v.ok, v.table()
    assert {r.runtime for r in v.rows} == {"ir", "tflite", "savedmodel", "tfjs"}
    want = jax.tree_util.tree_leaves(fn(*args))
    # The lifted module's outputs have JAX's shapes and dtypes.
    assert [(v.type.shape, v.type.dtype.np) for v in result.module.main.outputs] == \
        [(w.shape, w.dtype) for w in want]
    jfn, params = to_jax(result.module)
    got = jax.jit(jfn)(params, *args)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
    return result


# -- end to end --------------------------------------------------------------------------------

def test_rev_is_finite_logsumexp(tmp_path):
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    x[0, 1], x[1, 2], x[2, 0], x[3, 5] = np.inf, -np.inf, np.nan, -np.inf

    def fn(x):
        clean = jnp.where(jnp.isfinite(x), x, -jnp.inf)      # -inf where x is not finite
        lse = jax.nn.logsumexp(clean, axis=-1)               # is_finite inside, -inf entries
        finite = jnp.where(jnp.isfinite(x), x, 0.0)
        return jnp.isfinite(x), lse, jnp.flip(finite, (0, 1)), jnp.flip(finite, 1) * 2

    ops = {n.op for n in _convert(fn, [x], tmp_path, "a", verify_inputs={"x": x}).module.main}
    assert {"is_finite", "reverse"} <= ops


def test_erf_inv(tmp_path):
    """Fed y itself (near +-1 erfinv is ill-conditioned: an ulp of y there is 1e-4 of the
    result), including |y| > 0.9966, where Giles' tail polynomial takes over."""
    y = (np.tanh(2 * RNG.standard_normal((6, 8))) * 0.9999).astype(np.float32)
    y[0, :4] = [0.9999, -0.99999, 0.0, 1e-20]

    def fn(y):
        return jax.scipy.special.erfinv(y), lax.erf_inv(y * 0.5)

    result = _convert(fn, [y], tmp_path, "e", verify_inputs={"y": y})
    for row in result.verification.rows:   # XLA's float32 ErfInv is itself off by ~3e-6
        assert row.max_rel < 1e-5, result.verification.table()


def test_cumulative(tmp_path):
    x = (RNG.standard_normal((3, 7)) * 1.5).astype(np.float32)
    i = RNG.integers(-4, 5, (5, 3)).astype(np.int32)

    def fn(x, i):
        return (lax.cumprod(x, 1), jnp.cumprod(x, axis=0), lax.cumprod(x, 1, reverse=True),
                lax.cummax(x, 1), lax.cummax(x, 0, reverse=True), lax.cummin(x, 1),
                lax.cummin(i, 0, reverse=True), lax.cummax(i, 0), lax.cumprod(i, 1),
                lax.cummax(x[:, :1], 1))

    _convert(fn, [x, i], tmp_path, "c")


def test_sort_argsort(tmp_path):
    """Ties (stable: the first occurrence first), the extreme int32 values, sorting along a
    leading axis, descending argsort, several operands, bool keys."""
    x = np.round(RNG.standard_normal((4, 6)) * 2).astype(np.float32) / 2   # many ties
    i = RNG.integers(-3, 3, (4, 6)).astype(np.int32)
    i[0, :3] = [np.iinfo(np.int32).min, np.iinfo(np.int32).max, 0]
    i[1, :2] = [np.iinfo(np.int32).max, np.iinfo(np.int32).min]

    def fn(x, i):
        return (jnp.sort(x), jnp.argsort(x), jnp.sort(x, axis=0), jnp.argsort(x, axis=0),
                jnp.sort(i), jnp.argsort(i), jnp.argsort(i, descending=True),
                jnp.argsort(x, descending=True, stable=True),
                lax.sort((x, i, x * 3), dimension=1, num_keys=1)[1:],
                jnp.sort(i > 0, axis=-1))

    ops = [n.op for n in _convert(fn, [x, i], tmp_path, "s",
                                  verify_inputs={"x": x, "i": i}).module.main]
    assert "top_k" in ops


def test_pad_interior_and_negative(tmp_path):
    x = RNG.standard_normal((3, 5, 2)).astype(np.float32)
    i = RNG.integers(-9, 9, (4,)).astype(np.int32)

    def fn(x, i):
        return (lax.pad(x, 1.5, [(1, -1, 2), (-2, 3, 1), (0, 0, 0)]),
                lax.pad(x, 0.0, [(-3, -4, 3), (0, 0, 0), (2, -1, 1)]),
                lax.pad(i, 7, [(0, 0, 1)]))

    ops = {n.op for n in _convert(fn, [x, i], tmp_path, "p").module.main}
    assert "pad" in ops and "slice" in ops


def _conv_t(lhs, rhs, strides, padding, dn=("NHWC", "HWIO", "NHWC"), **kw):
    return lax.conv_transpose(lhs, rhs, strides, padding, dimension_numbers=dn, **kw)


def test_conv_transpose_output_shapes(tmp_path):
    """lax.conv_transpose (and conv_general_dilated with lhs_dilation and window strides) in
    the shapes JAX gives: SAME / VALID / explicit and negative padding, unequal strides,
    kernel dilation, transpose_kernel, 1-D, NCHW. jax2tf gets several of these wrong."""
    x = RNG.standard_normal((2, 5, 7, 3)).astype(np.float32)
    x1 = RNG.standard_normal((2, 9, 3)).astype(np.float32)
    w = RNG.standard_normal((3, 2, 3, 4)).astype(np.float32)       # HWIO
    wt = RNG.standard_normal((3, 2, 4, 3)).astype(np.float32)      # HW(O,I) for transpose_kernel
    w1 = RNG.standard_normal((4, 3, 2)).astype(np.float32)

    def fn(x, x1):
        return (_conv_t(x, w, (2, 2), "SAME"), _conv_t(x, w, (2, 3), "VALID"),
                _conv_t(x, w, (3, 2), ((0, 2), (1, 0))),
                _conv_t(x, w, (2, 2), "SAME", rhs_dilation=(2, 1)),
                _conv_t(x, wt, (2, 2), "VALID", transpose_kernel=True),
                _conv_t(x, w, (1, 2), ((3, 4), (-1, 2))),
                _conv_t(x1, w1, (2,), "SAME", dn=("NWC", "WIO", "NWC")),
                _conv_t(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), (2, 2), "SAME",
                        dn=("NCHW", "OIHW", "NCHW")),
                lax.conv_general_dilated(x, w, (2, 1), ((1, 2), (0, 1)), lhs_dilation=(2, 3),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")))

    shapes = [o.shape for o in jax.eval_shape(fn, x, x1)]
    assert shapes == [(2, 10, 14, 4), (2, 11, 21, 4), (2, 13, 13, 4), (2, 10, 14, 4),
                      (2, 11, 14, 4), (2, 10, 13, 4), (2, 18, 2), (2, 4, 10, 14),
                      (2, 5, 19, 4)]
    result = _convert(fn, [x, x1], tmp_path, "t")
    assert [v.type.shape for v in result.module.main.outputs] == shapes
    ops = {n.op for n in result.module.main}
    assert "conv2d_transpose" in ops and "conv2d" not in ops


def test_conv_transpose_symbolic_batch(tmp_path):
    w = RNG.standard_normal((3, 3, 2, 4)).astype(np.float32)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4, 5, 2"), jnp.float32)
    result = tensorforge.convert(lambda x: _conv_t(x, w, (2, 2), "SAME"), target="all",
                                 output=tmp_path / "b", verify=True, example_args=[spec])
    assert result.verification.ok, result.verification.table()
    assert result.module.main.outputs[0].type.shape == ("b", 8, 10, 4)


def test_unsupported_sort_reported():
    with pytest.raises(tensorforge.ConversionError, match="num_keys"):
        tensorforge.from_jax(lambda a, b: lax.sort((a, b), num_keys=2),
                             [np.zeros((3,), np.float32)] * 2)


# -- IR kernels and inference ------------------------------------------------------------------

X = RNG.standard_normal((3, 4, 5)).astype(np.float32)
I = RNG.integers(-50, 50, (3, 6)).astype(np.int32)


@pytest.mark.parametrize("axes", [(0,), (-1,), (0, 2), ()])
def test_reverse_kernel(axes):
    [y] = run("reverse", [X], axes=axes)
    np.testing.assert_array_equal(y, np.flip(X, axes) if axes else X)
    with pytest.raises(InferenceError, match="repeats"):
        infer("reverse", [ttype(X)], axes=(0, -3))
    assert infer("reverse", [TensorType(DType.f32, ("batch", 4))], axes=(0,)) == \
        [TensorType(DType.f32, ("batch", 4))]


def test_is_finite_kernel():
    x = np.array([0.0, -1e38, np.inf, -np.inf, np.nan, 3.4028235e38], np.float32)
    [y] = run("is_finite", [x])
    np.testing.assert_array_equal(y, np.isfinite(x))
    with pytest.raises(InferenceError, match="float"):
        infer("is_finite", [ttype(I)])


def test_erf_inv_kernel():
    import math

    import tensorflow as tf

    y = np.linspace(-0.999, 0.999, 4001)
    [got] = run("erf_inv", [y])
    np.testing.assert_allclose(got, tf.math.erfinv(y).numpy(), rtol=1e-13, atol=1e-15)
    # Tiny y (TF's float64 erfinv gives 0 there): erfinv(y) = y * sqrt(pi) / 2.
    [tiny] = run("erf_inv", [np.array([0.0, 1e-300, -1e-20])])
    np.testing.assert_allclose(tiny, [0.0, 1e-300 * math.sqrt(math.pi) / 2,
                                      -1e-20 * math.sqrt(math.pi) / 2], rtol=1e-15)
    # Far in the tail (where TF's float64 erfinv is off by 1e-6 and more): erfc(x) = 1 - y.
    tail = np.array([0.999999, 1 - 1e-12, -(1 - 2.0 ** -53)])
    [x] = run("erf_inv", [tail])
    for t, v in zip(tail, x):
        assert math.erfc(abs(v)) == pytest.approx(1 - abs(t), rel=1e-13) and v * t > 0
    y32 = y.astype(np.float32)
    [got32], [got64] = run("erf_inv", [y32]), run("erf_inv", [y32.astype(np.float64)])
    np.testing.assert_array_equal(got32, got64.astype(np.float32))
    [edge] = run("erf_inv", [np.array([1, -1, 1.5, np.nan], np.float32)])
    np.testing.assert_array_equal(edge, [np.inf, -np.inf, np.nan, np.nan])


@pytest.mark.parametrize("op,fn", [("cumprod", lax.cumprod), ("cummax", lax.cummax),
                                   ("cummin", lax.cummin)])
@pytest.mark.parametrize("axis,reverse", [(0, False), (1, True), (-1, False)])
def test_cumulative_kernels(op, fn, axis, reverse):
    for x in (X * 1.3, I % 7 - 3):
        [y] = run(op, [x], axis=axis, reverse=reverse)
        want = fn(x, axis % x.ndim, reverse=reverse)
        np.testing.assert_allclose(y, np.asarray(want), rtol=1e-6)
    with pytest.raises(InferenceError, match="bool"):
        infer(op, [TensorType(DType.bool, (3,))])
    with pytest.raises(InferenceError, match="out of range"):
        infer(op, [ttype(X)], axis=3)


# -- decomposed lowerings on edge values -------------------------------------------------------

def _edge_module():
    """erf_inv at and beyond +-1, is_finite on inf and NaN, the cumulative ops over NaN-free
    edge values (zeros, +-inf) and a long axis (five scan steps), reverse of bools."""
    y = np.array([-1.0, 1.0, -0.99999994, 0.99999994, 0.0, 1e-30, 0.5, -0.9966, 1.5, np.nan],
                 np.float32)
    f = np.array([0.0, -np.inf, np.inf, np.nan, 3.0, -3e38], np.float32)
    c = np.concatenate([[np.inf, -np.inf, 0.0], RNG.uniform(0.5, 1.5, 30)]).astype(np.float32)
    b = np.array([[True, False, False], [False, True, True]])
    g = Graph()
    vy, vf, vc, vb = (g.add_input(ttype(a), n) for a, n in zip((y, f, c, b), "yfcb"))
    outs = [g.add("erf_inv", [vy]).output, g.add("is_finite", [vf]).output,
            g.add("reverse", [vb], {"axes": (0, 1)}).output]
    outs += [g.add(op, [vc], {"axis": 0, "reverse": r}).output
             for op in ("cumprod", "cummax", "cummin") for r in (False, True)]
    g.set_outputs(outs)
    return Module([g]), [y, f, c, b]


def test_edge_values_litert_tf_jax():
    import tensorflow as tf
    from test_tflite_backend import run_tflite

    from tensorforge.backends.tf_lowering import lower_to_tf
    from tensorforge.backends.tflite import write_tflite

    module, inputs = _edge_module()
    want = run_graph(module.main, inputs)
    litert = run_tflite(write_tflite(module), inputs)
    tf_out = lower_to_tf(module).concrete_function()(
        **{n: tf.constant(a) for n, a in zip("yfcb", inputs)})
    jfn, params = to_jax(module)
    runs = {"tflite": litert, "tf": [t.numpy() for t in tf_out.values()],
            "jax": [np.asarray(a) for a in jfn(params, *inputs)]}
    for name, got in runs.items():
        assert len(got) == len(want), name
        for k, (g_, w_) in enumerate(zip(got, want)):
            assert g_.dtype == w_.dtype and g_.shape == w_.shape, (name, k)
            np.testing.assert_allclose(g_, w_, rtol=2e-6, atol=0, err_msg=f"{name} output {k}")


def test_inverse_and_hyperbolic_functions_rem_tile_unstack_scatter_sub(tmp_path):
    """atan2 is the one new IR op (TFLite ATAN2); atan, asin, acos, tan, sinh, cosh, asinh,
    acosh, atanh, cbrt and rem are composed from ops every target has."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.9, 0.9, (3, 4)).astype(np.float32)
    y = rng.uniform(0.5, 2, (3, 4)).astype(np.float32)

    def functions(x, y):
        return (jnp.arctan2(x, y), jnp.arctan(x * 3), jnp.arcsin(x), jnp.arccos(x), jnp.tan(x),
                jnp.sinh(x * 2), jnp.cosh(x), jnp.arcsinh(x * -50), jnp.arccosh(y + 1),
                jnp.arctanh(x), jnp.cbrt(x * 8), jax.lax.rem(x * 5, y), jnp.tile(x, (2, 1)),
                jnp.unstack(x)[1], jnp.asarray(x).at[1].subtract(y[0]))

    result = _convert(functions, [x, y], tmp_path, "trig", verify_inputs={"x": x, "y": y})
    assert max(r.max_rel for r in result.verification.rows) < 1e-5


def test_reduce_precision_rounds_like_xla(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 64)) * np.exp(rng.uniform(-20, 20, (4, 64)))).astype(np.float32)
    x[0, :4] = [0, np.inf, -np.inf, 2.0 ** 5]
    x[1, :3] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 - 2 ** -24]   # ties go to even

    def bf16_emulation(x):
        return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)

    result = _convert(bf16_emulation, [x], tmp_path, "rp", verify_inputs={"x": x})
    assert all(r.max_abs == 0 for r in result.verification.rows)


def test_lgamma_and_digamma_with_reflection(tmp_path):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(0.05, 30, 40), rng.uniform(-4.9, -0.1, 20),
                        [0.5, 1, 2, 3.5, 100.0]]).astype(np.float32)

    def special(x):
        return jax.lax.lgamma(x), jax.lax.digamma(x)

    result = _convert(special, [x], tmp_path, "gamma", verify_inputs={"x": x})
    assert max(r.max_rel for r in result.verification.rows) < 1e-5


def test_integer_bit_primitives(tmp_path):
    """and / or / xor / not on integers and the three shifts, with XLA's rule for shift
    amounts outside [0, 32) (every bit shifted out), on every target (TFLite and TF.js run
    the ops they lack as integer arithmetic)."""
    x = np.array([[-50, -1, 0, 7, 2**31 - 1, -2**31, 12345, -7]], np.int32)
    k = np.array([[0, 1, 31, 32, 5, 3, -1, 40]], np.int32)

    def bits(a, s):
        return [a & s, a | s, a ^ s, ~a, lax.shift_left(a, s), lax.shift_right_logical(a, s),
                lax.shift_right_arithmetic(a, s)]

    _convert(bits, [x, k], tmp_path, "bits")
