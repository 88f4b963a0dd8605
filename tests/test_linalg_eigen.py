"""QR, the symmetric eigendecomposition and the SVD (frontends/eigen.py): keras.ops qr, eigh,
svd, pinv, lstsq and matrix_rank on the TF backend (TF ops Qr, SelfAdjointEigV2, Svd, their
attributes included) and the JAX primitives qr, geqrf, householder_product, eigh and svd, each
converted to every target and verified; the lifted Q and R equal TF's (signs included), the
eigen- and singular vectors reconstruct their input on hard cases (repeated eigenvalues, rank
deficiency, zero matrices); and the refusals: matrices above the unrolling limit, run-time
matrix dims, complex matrices."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.frontends import eigen  # noqa: E402

RNG = np.random.default_rng(0)


def _t(x):
    return ops.transpose(x, (0, 2, 1))


def _reconstruct(u, s, v):
    """u diag(s) v^T over the first len(s) columns of u and v (full or thin)."""
    p = s.shape[-1]
    return ops.matmul(u[:, :, :p] * s[:, None, :], _t(v[:, :, :p]))


def _gram(u):
    return ops.matmul(_t(u), u)


class _KerasFactorizations(keras.layers.Layer):
    """keras.ops on tall and wide matrices, and what keras.ops leaves at TF's defaults
    (full_matrices, compute_uv, compute_v), as sign-free quantities TF computes alike:
    reconstructions, Gram matrices, eigen- and singular values, pinv. Small matrices keep the
    unrolled graphs (and the test) small; the interpreter test below takes larger ones."""

    def call(self, tall, wide, sym):
        deficient = ops.concatenate([tall[:, :, :1], tall[:, :, :1]], axis=-1)    # rank 1
        q, r = ops.qr(tall)
        qc, rc = ops.qr(wide, mode="complete")
        w, v = ops.eigh(sym + _t(sym))
        u, s, vt = ops.svd(tall)                                   # full_matrices=True
        ut, st, vtt = ops.svd(wide, full_matrices=False)
        return [q, r, qc, rc, w, ops.matmul(v * w[:, None, :], _t(v)), _gram(v),
                tf.linalg.eigvalsh(sym),                           # compute_v=False
                s, _reconstruct(u, s, _t(vt)), _gram(u), _gram(vt),
                st, _reconstruct(ut, st, _t(vtt)), _gram(ut),
                ops.pinv(deficient), ops.cast(ops.matrix_rank(deficient), "float32")]


def _keras_model():
    tall = keras.Input((3, 2), name="tall")
    wide = keras.Input((2, 3), name="wide")
    sym = keras.Input((3, 3), name="sym")
    return keras.Model([tall, wide, sym], _KerasFactorizations(name="fact")(tall, wide, sym))


def test_keras_factorizations_on_every_target(tmp_path):
    result = tensorforge.convert(_keras_model(), target="all", output=tmp_path / "m",
                                 verify=True, progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}


class _Lstsq(keras.layers.Layer):
    def call(self, a, b):
        return ops.lstsq(a, b)


def test_keras_lstsq_on_every_target(tmp_path):
    """ops.lstsq takes one matrix (its dim 0 is the matrix's rows, fixed here)."""
    a, b = keras.Input((3,), batch_size=5, name="a"), keras.Input((2,), batch_size=5, name="b")
    model = keras.Model([a, b], _Lstsq(name="lstsq")(a, b))
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False, input_shapes={"a": (5, 3), "b": (5, 2)})
    assert result.verification.ok, result.verification.table()


# -- the lifted factors on hard inputs, in the IR interpreter ---------------------------------

class _Raw(keras.layers.Layer):
    """The factors themselves: TF's raw outputs, signs and all."""

    def call(self, tall, wide, sym):
        out = []
        for x in (tall, wide):
            for full in (False, True):
                out += list(tf.linalg.qr(x, full_matrices=full))
                out += list(tf.linalg.svd(x, full_matrices=full))
        out += list(tf.linalg.eigh(sym))
        return out


def _hard_inputs():
    """Batches of 4 x 3, 3 x 4 and 4 x 4 matrices: random, zero, rank-deficient (a repeated
    column), upper-triangular with a negative diagonal (QR's degenerate reflections), and for
    eigh: random non-symmetric (only the lower triangle counts), the identity (nothing to
    rotate), repeated eigenvalues and the zero matrix."""
    tall = RNG.standard_normal((5, 4, 3)).astype(np.float32)
    tall[1] = 0
    tall[2, :, 2] = tall[2, :, 0]
    tall[3] = np.triu(tall[3]) - 2 * np.eye(4, 3, dtype=np.float32)
    tall[4] = np.outer(tall[4, :, 0], tall[4, 0, :])                  # rank 1
    wide = np.ascontiguousarray(np.swapaxes(tall, 1, 2))
    sym = RNG.standard_normal((5, 4, 4)).astype(np.float32)
    sym[1] = np.eye(4)
    q, _ = np.linalg.qr(RNG.standard_normal((4, 4)))
    sym[2] = (q * np.array([2.0, 2.0, 2.0, -1.0])) @ q.T                # a triple eigenvalue
    sym[3] = 0
    sym[4] = np.diag([3.0, -1.0, 3.0, 0.5])
    return tall, wide, sym


def _lower_symmetric(a):
    low = np.tril(a)
    return low + np.swapaxes(np.tril(a, -1), -1, -2)


def test_lifted_factors_match_tf_and_reconstruct():
    tall, wide, sym = _hard_inputs()
    x_in = [keras.Input((4, 3), name="tall"), keras.Input((3, 4), name="wide"),
            keras.Input((4, 4), name="sym")]
    model = keras.Model(x_in, _Raw(name="raw")(*x_in))
    module = tensorforge.from_keras(model)
    got = tensorforge.run_module(module, [tall, wide, sym])
    want = [np.asarray(t) for t in model([tall, wide, sym])]
    assert all(np.isfinite(g).all() for g in got)
    k = 0
    for x in (tall, wide):
        for full in (False, True):
            q, r, s, u, v = got[k:k + 5]
            tq, tr, ts = want[k:k + 3]
            k += 5
            # Q and R are TF's, signs included, except where TF's own are rounding noise
            # (the rank-deficient matrices' dependent columns).
            exact = [0, 1, 3]
            np.testing.assert_allclose(q[exact], tq[exact], atol=2e-6)
            np.testing.assert_allclose(r[exact], tr[exact], atol=5e-6)
            np.testing.assert_allclose(q @ r, x, atol=5e-6)
            np.testing.assert_allclose(np.swapaxes(q, 1, 2) @ q, np.broadcast_to(
                np.eye(q.shape[-1]), (5,) + (q.shape[-1],) * 2), atol=2e-6)
            np.testing.assert_array_equal(np.tril(r, -1), 0)
            # Singular values descending, as TF's; u and v orthonormal and reconstructing x.
            np.testing.assert_allclose(s, ts, atol=5e-6)
            assert (np.diff(s, axis=-1) <= 0).all()
            p = s.shape[-1]
            np.testing.assert_allclose((u[:, :, :p] * s[:, None, :]) @ np.swapaxes(
                v[:, :, :p], 1, 2), x, atol=5e-6)
            for f in (u, v):
                np.testing.assert_allclose(np.swapaxes(f, 1, 2) @ f, np.broadcast_to(
                    np.eye(f.shape[-1]), (5,) + (f.shape[-1],) * 2), atol=2e-6)
    w, v = got[k:k + 2]
    np.testing.assert_allclose(w, want[k], atol=5e-6)                 # ascending, as TF
    a = _lower_symmetric(sym)
    np.testing.assert_allclose(a @ v, v * w[:, None, :], atol=5e-6)   # A v = w v
    np.testing.assert_allclose(np.swapaxes(v, 1, 2) @ v,
                               np.broadcast_to(np.eye(4), (5, 4, 4)), atol=2e-6)


def test_jacobi_sweeps_cover_the_largest_matrix():
    """At MAX_N, the graded spectrum converges in float32 within the sweeps run (the IR
    interpreter runs the lifted eigh of a 32 x 32 matrix)."""
    n = eigen.MAX_N
    q, _ = np.linalg.qr(RNG.standard_normal((n, n)))
    a = ((q * np.logspace(0, 3, n)) @ q.T).astype(np.float32)[None]

    def fn(x):
        w, v = jnp.linalg.eigh(x)
        return w, v

    module = tensorforge.from_jax(fn, [a])
    w, v = tensorforge.run_module(module, [a])
    # float32 accuracy is relative to |A| (1000 here), for eigenvalues and residuals alike.
    np.testing.assert_allclose(w[0], np.linalg.eigvalsh(a[0].astype(np.float64)), atol=1e-3)
    np.testing.assert_allclose(a[0] @ v[0], v[0] * w[0], atol=1e-2)
    np.testing.assert_allclose(v[0].T @ v[0], np.eye(n), atol=1e-5)


# -- JAX ---------------------------------------------------------------------------------------

def _geqrf(x):
    """lax's geqrf (public in jax.lax.linalg only in some JAX versions)."""
    from jax._src.lax import linalg as lax_linalg
    return lax_linalg.geqrf(x)


def _jax_factorizations(tall, wide, sym):
    q, r = jnp.linalg.qr(tall)
    qc, rc = jnp.linalg.qr(wide, mode="complete")
    w, v = jnp.linalg.eigh(sym)
    s = jnp.linalg.svd(tall, compute_uv=False)
    u, s2, vt = jnp.linalg.svd(wide, full_matrices=True)
    packed, taus = _geqrf(tall)
    return [q, r, qc, rc, w, v @ (w[..., None] * jnp.swapaxes(v, -1, -2)), s,
            (u[..., :3] * s2[..., None, :]) @ vt[..., :3, :], jnp.swapaxes(u, -1, -2) @ u,
            packed, taus, jax.lax.linalg.householder_product(packed, taus),
            jnp.linalg.pinv(tall)]


def test_jax_factorizations_on_every_target(tmp_path):
    tall = RNG.standard_normal((2, 4, 3)).astype(np.float32)
    wide = RNG.standard_normal((2, 3, 5)).astype(np.float32)
    sym = RNG.standard_normal((2, 4, 4)).astype(np.float32)
    sym = sym + np.swapaxes(sym, -1, -2)
    result = tensorforge.convert(_jax_factorizations, target="all", output=tmp_path / "m",
                                 verify=True, progress=False, example_args=[tall, wide, sym])
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}


def test_jax_eigh_subset_by_index():
    """subset_by_index slices the ascending eigenvalues (JAX itself runs it on TPU only, so
    the lifted module is checked against NumPy in the IR interpreter)."""
    sym = RNG.standard_normal((2, 4, 4)).astype(np.float32)
    sym = sym + np.swapaxes(sym, -1, -2)
    module = tensorforge.from_jax(lambda a: jax.lax.linalg.eigh(a, subset_by_index=(1, 3)),
                                  [sym])
    v, w = tensorforge.run_module(module, [sym])
    np.testing.assert_allclose(w, np.linalg.eigvalsh(sym)[:, 1:3], atol=1e-5)
    np.testing.assert_allclose(sym @ v, v * w[:, None, :], atol=1e-5)


# -- refusals ----------------------------------------------------------------------------------

class _Eigh(keras.layers.Layer):
    def call(self, x):
        return ops.eigh(x)[0]


def test_matrix_above_the_unrolling_limit_is_refused(tmp_path):
    n = eigen.MAX_N + 1
    x = keras.Input((n, n), name="x")
    model = keras.Model(x, _Eigh(name="eigh")(x))
    with pytest.raises(tensorforge.ConversionError, match=f"min\\(rows, cols\\) <= {n - 1}"):
        tensorforge.convert(model, target="tflite", output=tmp_path / "m", progress=False)
    with pytest.raises(tensorforge.ConversionError, match="larger than this decomposition"):
        tensorforge.convert(lambda a: jnp.linalg.svd(a, compute_uv=False), target="tflite",
                            output=tmp_path / "j", progress=False,
                            example_args=[np.zeros((n, n + 2), np.float32)])


def test_run_time_matrix_dims_are_refused(tmp_path):
    x = keras.Input((None, None), name="x")
    model = keras.Model(x, _Eigh(name="eigh")(x))
    with pytest.raises(tensorforge.ConversionError, match="must be known when the model"):
        tensorforge.convert(model, target="tflite", output=tmp_path / "m", progress=False)


class _ComplexQr(keras.layers.Layer):
    def call(self, x):
        q, r = tf.linalg.qr(tf.complex(x, x))
        return tf.math.real(q) + tf.math.imag(r)[:, :, :1]


def test_complex_matrices_are_refused(tmp_path):
    x = keras.Input((3, 3), name="x")
    model = keras.Model(x, _ComplexQr(name="cqr")(x))
    with pytest.raises(tensorforge.ConversionError, match="Qr of complex matrices"):
        tensorforge.convert(model, target="tflite", output=tmp_path / "m", progress=False)
