"""Dense linear-algebra solvers (frontends/linalg.py): keras.ops cholesky, cholesky_inverse,
det, slogdet, logdet, inv, solve, solve_triangular and lu_factor on the TF backend (TF ops
Cholesky, MatrixTriangularSolve, MatrixInverse, MatrixSolve, MatrixDeterminant,
LogMatrixDeterminant, Lu, InvertPermutation, their attributes included), and the JAX
primitives cholesky, triangular_solve, lu, lu_pivots_to_permutation and custom_linear_solve
(jnp.linalg.solve / inv / det / slogdet, jax.scipy.linalg), each converted to every target
and verified; and the refusals: matrices above the unrolling limit, run-time matrix dims."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from jax import lax  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.frontends import linalg  # noqa: E402

N = 4


def _matrices(x):
    """From any x ([b, N, N]): a well-conditioned matrix w, the same with its rows reversed
    (so partial pivoting must exchange rows), a symmetric positive definite one and w's lower
    and upper triangles."""
    w = x + 3.0 * ops.eye(N)
    spd = ops.matmul(w, ops.transpose(w, (0, 2, 1))) / N + ops.eye(N)
    return w, ops.flip(w, axis=1), spd, ops.tril(w), ops.triu(w)


class _KerasSolvers(keras.layers.Layer):
    def call(self, x, y):
        w, a, spd, low, up = _matrices(x)
        chol = ops.cholesky(spd)
        sign, logabs = ops.slogdet(a)
        return [chol, ops.cholesky_inverse(chol), ops.det(a), sign, logabs, ops.logdet(spd),
                ops.inv(a), ops.solve(a, y), ops.solve_triangular(low, y, lower=True),
                ops.solve_triangular(up, y, lower=False)]


class _TFAttributes(keras.layers.Layer):
    """The TF ops' attributes keras.ops leaves at their defaults: adjoint, int64 indices."""

    def call(self, x, y):
        w, a, spd, low, up = _matrices(x)
        lu, perm = tf.linalg.lu(a, output_idx_type=tf.int64)
        return [tf.linalg.triangular_solve(low, y, lower=True, adjoint=True),
                tf.linalg.triangular_solve(up, y, lower=False, adjoint=True),
                tf.linalg.solve(a, y, adjoint=True), tf.linalg.inv(a, adjoint=True), lu,
                perm]


def _keras_model(layer):
    x, y = keras.Input((N, N), name="x"), keras.Input((N, 2), name="y")
    return keras.Model([x, y], layer(x, y))


def test_keras_solvers_on_every_target(tmp_path):
    result = tensorforge.convert(_keras_model(_KerasSolvers(name="solvers")), target="all",
                                 output=tmp_path / "m", verify=True, progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}


def test_tf_adjoint_and_lu_index_type_on_every_target(tmp_path):
    result = tensorforge.convert(_keras_model(_TFAttributes(name="attrs")), target="all",
                                 output=tmp_path / "m", verify=True, progress=False)
    assert result.verification.ok, result.verification.table()


class _LuFactor(keras.layers.Layer):
    def call(self, x):
        lu, pivots = ops.lu_factor(ops.flip(x + 3.0 * ops.eye(N), axis=0))
        return [lu, pivots]


def test_keras_lu_factor_on_every_target(tmp_path):
    # Keras's TF backend factors one matrix only (Lu, then InvertPermutation on 1-D pivots):
    # a fixed batch of N rows is the matrix.
    x = keras.Input((N,), batch_size=N, name="x")
    model = keras.Model(x, _LuFactor(name="lu")(x))
    data = np.random.default_rng(1).standard_normal((N, N)).astype(np.float32)
    result = tensorforge.convert(model, target="all", output=tmp_path / "m",
                                 verify_inputs={"x": data}, progress=False)
    assert result.verification.ok, result.verification.table()


def _jax_solvers(x, y):
    w = x + 3.0 * jnp.eye(N)
    a = w[..., ::-1, :]                                  # needs row exchanges
    spd = w @ jnp.swapaxes(w, -1, -2) / N + jnp.eye(N)
    chol = jnp.linalg.cholesky(spd)
    lu, piv = jax.scipy.linalg.lu_factor(a)
    singular = a.at[..., 1, :].set(a[..., 0, :])         # two equal rows: det exactly 0
    return (jnp.linalg.solve(a, y), jnp.linalg.inv(a), jnp.linalg.det(a),
            *jnp.linalg.slogdet(a), chol, lu, piv, lax.linalg.lu_pivots_to_permutation(piv, N),
            jax.scipy.linalg.cho_solve((chol, True), y),
            jax.scipy.linalg.solve_triangular(jnp.triu(w), y, lower=False, trans=1),
            lax.linalg.triangular_solve(jnp.tril(w), jnp.swapaxes(y, -1, -2), left_side=False,
                                        lower=True, unit_diagonal=True),
            jnp.linalg.det(singular))


def test_jax_solvers_on_every_target(tmp_path):
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((2, N, N)).astype(np.float32),
            rng.standard_normal((2, N, 3)).astype(np.float32)]
    result = tensorforge.convert(_jax_solvers, target="all", output=tmp_path / "m",
                                 verify=True, example_args=args, progress=False)
    v = result.verification
    assert v.ok, v.table()
    assert {r.runtime for r in v.rows} == {"ir", "tflite", "savedmodel", "tfjs"}
    assert np.all(np.asarray(_jax_solvers(*args)[-1]) == 0)   # the singular case: exact 0
    # The primitives this test is about are in the program (nested in jit calls).
    text = str(jax.make_jaxpr(_jax_solvers)(*args))
    for prim in ("cholesky", "triangular_solve", "lu", "lu_pivots_to_permutation",
                 "custom_linear_solve"):
        assert f" {prim}[" in text or f" {prim} " in text, prim


# -- refusals ---------------------------------------------------------------------------------

class _Cholesky(keras.layers.Layer):
    def call(self, x):
        return ops.cholesky(x)


def test_matrix_above_the_unrolling_limit_is_refused(tmp_path):
    n = linalg.MAX_N + 1
    too_large = fr"larger than this decomposition unrolls \(max\(rows, cols\) <= {linalg.MAX_N}\)"
    x = keras.Input((n, n), name="x")
    model = keras.Model(x, _Cholesky(name="chol")(x))
    with pytest.raises(tensorforge.ConversionError, match=too_large):
        tensorforge.convert(model, target="tflite", output=tmp_path / "m", progress=False)
    with pytest.raises(tensorforge.ConversionError, match=too_large):
        tensorforge.convert(lambda a: jnp.linalg.inv(a), target="tflite",
                            output=tmp_path / "j", progress=False,
                            example_args=[np.zeros((n, n), np.float32)])


def test_run_time_matrix_dims_are_refused(tmp_path):
    x = keras.Input((None, None), name="x")
    model = keras.Model(x, _Cholesky(name="chol")(x))
    with pytest.raises(tensorforge.ConversionError, match="must be known when the model"):
        tensorforge.convert(model, target="tflite", output=tmp_path / "m", progress=False)


class _SolveBetweenDenses(keras.layers.Layer):
    def call(self, x):
        w = ops.reshape(x, (-1, N, N)) + 3.0 * ops.eye(N)
        return ops.reshape(ops.solve(w, ops.ones((1, N, 2)) * 0.5 + w[:, :, :2]), (-1, 2 * N))


def test_int8_keeps_the_solver_float_and_quantizes_the_rest(tmp_path):
    """In int8, the unrolled solver's nodes stay float (quantizing each of its steps would
    ruin it: SQNR 4.6 dB) while the Dense layers around it are quantized."""
    x = keras.Input((N * N,), name="x")
    h = keras.layers.Dense(N * N, name="pre")(x)
    y = keras.layers.Dense(3, name="post")(_SolveBetweenDenses(name="solver")(h))
    model = keras.Model(x, y)
    rng = np.random.default_rng(0)
    calibration = [[rng.normal(size=(4, N * N)).astype(np.float32)] for _ in range(4)]
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 quantization="int8", calibration_data=calibration,
                                 verify=True, progress=False)
    assert result.verification.ok, result.verification.table()
    floats = result.quantization.resolution.float_nodes()
    assert floats and all(r.scope == "solver" for r in floats
                          if "matrix factorization" in r.float_reason)
    assert any("lifted from MatrixSolve" in r.float_reason for r in floats)
    quantized = {r.scope for r in result.quantization.resolution.nodes if not r.is_float}
    assert {"pre", "post"} <= quantized
