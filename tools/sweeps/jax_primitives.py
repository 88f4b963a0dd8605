"""The JAX primitive sweep: one tiny jax.numpy / lax program per primitive the JAX frontend
lowers (every key of `frontends.jax.ops.TABLE`), per call-like primitive it inlines (jit,
custom_jvp_call, custom_vjp_call, remat2) and per primitive users hit that it does not lower
yet, converted to TFLite, SavedModel and TF.js and verified against JAX in LiteRT,
TensorFlow and Node.js; next to it the anchor: jax2tf, then TFLiteConverter with
TFLITE_BUILTINS only, run in LiteRT.

    python -m tensorforge.tools.sweeps.jax_primitives               # all; writes the docs table
    python -m tensorforge.tools.sweeps.jax_primitives --only sort,scatter-add
    python -m tensorforge.tools.sweeps.jax_primitives --out docs/conformance/jax.md --json rows.json

Probes run in order in batches of worker processes: a crash or a hang costs one row, not the
sweep (the row of the probe a worker dies on says where: in our conversion, the anchor's
converter or LiteRT; the rest of its batch goes on in a new worker). Per primitive the table
gives the IR ops it became, per target whether every verification row is within the float32 contract (1e-4
relative to the largest |value|), the anchor's outcome, and the reason when a conversion
fails. Each probe's program is checked to contain its primitive (`jax.make_jaxpr`, sub-jaxprs
included) before it is converted.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

from ..docgen import BANNER
from ..verify import errors
from .kerashub import _first_line, _first_problem

DEFAULT_OUT = Path("docs/conformance/jax.md")
TARGETS = ("tflite", "savedmodel", "tfjs")
RTOL = 1e-4          # the float32 contract, relative to the largest |value| of an output
BATCH = 16           # probes per worker process
PROBE_TIMEOUT_S = 60  # a worker's time limit: this much per probe, and once more to start
MARK = "@@probe "    # a worker's result lines start with this
COMMAND = "python -m tensorforge.tools.sweeps.jax_primitives"


@dataclass(frozen=True)
class Probe:
    """A tiny program whose jaxpr contains `primitive`, and the arrays it runs on."""

    primitive: str
    fn: Callable | None                  # None: this JAX never emits the name (see `note`)
    args: tuple = ()
    what: str = ""                       # the program in short (markdown), for the table
    aliases: tuple = ()                  # other names of the primitive the frontend knows
    poly: tuple | None = None            # per arg: a jax.export shape ("b, 3") or None
    note: str = ""
    names: tuple = field(default=(), compare=False)  # the input names (fn's parameters)


PROBES: dict[str, Probe] = {}

_RNG = np.random.default_rng(0)


def _x(*shape):
    """Standard normal float32."""
    return _RNG.standard_normal(shape).astype(np.float32)


def _u(lo, hi, *shape):
    """Uniform float32 in [lo, hi)."""
    return _RNG.uniform(lo, hi, shape).astype(np.float32)


def _i(lo, hi, *shape):
    """int32 in [lo, hi)."""
    return _RNG.integers(lo, hi, shape).astype(np.int32)


def _b(*shape):
    """Random bools."""
    return _RNG.random(shape) < 0.5


def probe(primitive: str, what: str, *args, aliases=(), poly=None, note=""):
    """Registers the decorated function as the probe of `primitive`, run on `args`; `what`
    is code (markdown when it has a backtick)."""
    what = what if "`" in what else f"`{what}`"

    def deco(fn):
        # The input names tensorforge gives fn's args (its positional parameters).
        names = tuple(p.name for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))[:len(args)]
        assert len(names) == len(args) and primitive not in PROBES, primitive
        PROBES[primitive] = Probe(primitive, fn, tuple(args), what, tuple(aliases),
                                  tuple(poly) if poly else None, note, names)
        return fn
    return deco


# -- elementwise -------------------------------------------------------------------------------

for _name, _what, _f, _args in [
        ("add", "x + y", lambda x, y: x + y, (_x(2, 3), _x(2, 3))),
        ("sub", "x - y", lambda x, y: x - y, (_x(2, 3), _x(2, 3))),
        ("mul", "x * y", lambda x, y: x * y, (_x(2, 3), _x(2, 3))),
        ("div", "x / y", lambda x, y: x / y, (_x(2, 3), _u(0.5, 2, 2, 3))),
        ("max", "jnp.maximum(x, y)", lambda x, y: jnp.maximum(x, y), (_x(2, 3), _x(2, 3))),
        ("min", "jnp.minimum(x, y)", lambda x, y: jnp.minimum(x, y), (_x(2, 3), _x(2, 3))),
        ("pow", "x ** y", lambda x, y: x ** y, (_u(0.5, 2, 2, 3), _x(2, 3))),
        ("atan2", "jnp.arctan2(x, y)", lambda x, y: jnp.arctan2(x, y), (_x(2, 3), _x(2, 3))),
        ("rem", "x % y", lambda x, y: x % y, (_x(2, 3) * 4, _u(0.5, 2, 2, 3))),
        ("eq", "`i == j` on int32", lambda i, j: i == j, (_i(0, 3, 2, 4), _i(0, 3, 2, 4))),
        ("ne", "`i != j` on int32", lambda i, j: i != j, (_i(0, 3, 2, 4), _i(0, 3, 2, 4))),
        ("lt", "x < y", lambda x, y: x < y, (_x(2, 3), _x(2, 3))),
        ("le", "x <= y", lambda x, y: x <= y, (_x(2, 3), _x(2, 3))),
        ("gt", "x > y", lambda x, y: x > y, (_x(2, 3), _x(2, 3))),
        ("ge", "x >= y", lambda x, y: x >= y, (_x(2, 3), _x(2, 3))),
        ("and", "`a & b` on bool", lambda a, b: a & b, (_b(2, 3), _b(2, 3))),
        # (not `a | b`: a pipe in a code span breaks the markdown table)
        ("or", "`jnp.logical_or(a, b)` on bool", lambda a, b: jnp.logical_or(a, b),
         (_b(2, 3), _b(2, 3))),
        ("xor", "`a ^ b` on bool", lambda a, b: a ^ b, (_b(2, 3), _b(2, 3))),
        ("not", "`~a` on bool", lambda a: ~a, (_b(2, 3),)),
        ("shift_left", "`i << 2` on int32", lambda i: i << 2, (_i(-50, 50, 2, 3),)),
        ("shift_right_logical", "`lax.shift_right_logical(i, 2)` on int32",
         lambda i: lax.shift_right_logical(i, np.int32(2)), (_i(-50, 50, 2, 3),)),
        ("shift_right_arithmetic", "`i >> 2` on int32", lambda i: i >> 2,
         (_i(-50, 50, 2, 3),)),
        ("neg", "-x", lambda x: -x, (_x(2, 3),)),
        ("abs", "jnp.abs(x)", lambda x: jnp.abs(x), (_x(2, 3),)),
        ("sign", "jnp.sign(x)", lambda x: jnp.sign(x), (_x(2, 3),)),
        ("exp", "jnp.exp(x)", lambda x: jnp.exp(x), (_x(2, 3),)),
        ("exp2", "jnp.exp2(x)", lambda x: jnp.exp2(x), (_x(2, 3),)),
        ("expm1", "jnp.expm1(x)", lambda x: jnp.expm1(x), (_x(2, 3),)),
        ("log", "jnp.log(x)", lambda x: jnp.log(x), (_u(0.1, 3, 2, 3),)),
        ("log1p", "jnp.log1p(x)", lambda x: jnp.log1p(x), (_u(-0.5, 3, 2, 3),)),
        ("sqrt", "jnp.sqrt(x)", lambda x: jnp.sqrt(x), (_u(0.1, 3, 2, 3),)),
        ("rsqrt", "lax.rsqrt(x)", lambda x: lax.rsqrt(x), (_u(0.1, 3, 2, 3),)),
        ("cbrt", "jnp.cbrt(x)", lambda x: jnp.cbrt(x), (_x(2, 3),)),
        ("square", "jnp.square(x)", lambda x: jnp.square(x), (_x(2, 3),)),
        ("integer_pow", "x ** 3, x ** -2", lambda x: (x ** 3, x ** -2), (_u(0.5, 2, 2, 3),)),
        ("tanh", "jnp.tanh(x)", lambda x: jnp.tanh(x), (_x(2, 3),)),
        ("logistic", "jax.nn.sigmoid(x)", lambda x: jax.nn.sigmoid(x), (_x(2, 3),)),
        ("sin", "jnp.sin(x)", lambda x: jnp.sin(x), (_x(2, 3),)),
        ("cos", "jnp.cos(x)", lambda x: jnp.cos(x), (_x(2, 3),)),
        ("tan", "jnp.tan(x)", lambda x: jnp.tan(x), (_u(-1.2, 1.2, 2, 3),)),
        ("asin", "jnp.arcsin(x)", lambda x: jnp.arcsin(x), (_u(-0.9, 0.9, 2, 3),)),
        ("acos", "jnp.arccos(x)", lambda x: jnp.arccos(x), (_u(-0.9, 0.9, 2, 3),)),
        ("atan", "jnp.arctan(x)", lambda x: jnp.arctan(x), (_x(2, 3),)),
        ("sinh", "jnp.sinh(x)", lambda x: jnp.sinh(x), (_x(2, 3),)),
        ("cosh", "jnp.cosh(x)", lambda x: jnp.cosh(x), (_x(2, 3),)),
        ("asinh", "jnp.arcsinh(x)", lambda x: jnp.arcsinh(x), (_x(2, 3),)),
        ("acosh", "jnp.arccosh(x)", lambda x: jnp.arccosh(x), (_u(1.1, 4, 2, 3),)),
        ("atanh", "jnp.arctanh(x)", lambda x: jnp.arctanh(x), (_u(-0.9, 0.9, 2, 3),)),
        ("erf", "jax.scipy.special.erf(x)", lambda x: jax.scipy.special.erf(x), (_x(2, 3),)),
        ("erfc", "jax.scipy.special.erfc(x)", lambda x: jax.scipy.special.erfc(x), (_x(2, 3),)),
        ("erf_inv", "jax.scipy.special.erfinv(y)",
         lambda y: jax.scipy.special.erfinv(y),
         (_u(-0.9, 0.9, 2, 3),)),
        ("lgamma", "jax.scipy.special.gammaln(x)",
         lambda x: jax.scipy.special.gammaln(x),
         (_u(0.5, 4, 2, 3),)),
        ("digamma", "jax.scipy.special.digamma(x)",
         lambda x: jax.scipy.special.digamma(x),
         (_u(0.5, 4, 2, 3),)),
        ("bessel_i0e", "jax.scipy.special.i0e(x)", lambda x: jax.scipy.special.i0e(x),
         (_x(2, 3) * 4,)),
        ("bessel_i1e", "jax.scipy.special.i1e(x)", lambda x: jax.scipy.special.i1e(x),
         (_x(2, 3) * 4,)),
        ("igamma", "jax.scipy.special.gammainc(a, x)",
         lambda a, x: jax.scipy.special.gammainc(a, x),
         (_u(0.5, 3, 2, 3), _u(0.5, 3, 2, 3))),
        ("floor", "jnp.floor(x)", lambda x: jnp.floor(x), (_x(2, 3) * 3,)),
        ("ceil", "jnp.ceil(x)", lambda x: jnp.ceil(x), (_x(2, 3) * 3,)),
        ("round", "lax.round(x), jnp.round(x)", lambda x: (lax.round(x), jnp.round(x)),
         (_x(2, 3) * 3,)),
        ("is_finite", "`jnp.isfinite(x)`, x with inf and nan", lambda x: jnp.isfinite(x),
         (np.asarray([[1, np.inf, -np.inf], [np.nan, -2, 0]], np.float32),)),
        ("convert_element_type", "(x * 10).astype(int32), i.astype(float32)",
         lambda x, i: ((x * 10).astype(jnp.int32), i.astype(jnp.float32)),
         (_x(2, 3), _i(-5, 5, 2, 3))),
        ("clamp", "lax.clamp(-0.5, x, 0.5)", lambda x: lax.clamp(-0.5, x, 0.5), (_x(2, 3),)),
        ("select_n", "jnp.where(c, x, y), lax.select_n(i, x, y, z)",
         lambda c, i, x, y, z: (jnp.where(c, x, y), lax.select_n(i, x, y, z)),
         (_b(2, 3), _i(0, 3, 2, 3), _x(2, 3), _x(2, 3), _x(2, 3))),
]:
    probe(_name, _what, *_args)(_f)


@probe("add_any", "jax.grad(lambda x: jnp.sum(x * x))(x)", _x(2, 3))
def _add_any(x):
    return jax.grad(lambda v: jnp.sum(v * v))(x)


# -- values passed through ---------------------------------------------------------------------

@probe("stop_gradient", "2 * lax.stop_gradient(x)", _x(2, 3))
def _stop_gradient(x):
    return 2 * lax.stop_gradient(x)


@probe("copy", "2 * jnp.copy(x)", _x(2, 3), aliases=("copy_p",))
def _copy(x):
    return 2 * jnp.copy(x)


@probe("optimization_barrier", "`a + b` of `a, b = lax.optimization_barrier((x, y))`",
       _x(2, 3), _x(2, 3))
def _optimization_barrier(x, y):
    a, b = lax.optimization_barrier((x, y))
    return a + b


@probe("sharding_constraint",
       "`2 * lax.with_sharding_constraint(x, sharding)` on a one-device mesh", _x(2, 3))
def _sharding_constraint(x):
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()[:1]), ("d",))
    return 2 * lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec()))


@probe("reduce_precision", "`lax.reduce_precision(x, 8, 7)` (to bfloat16 precision)", _x(2, 3))
def _reduce_precision(x):
    return lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)


# -- call-like ---------------------------------------------------------------------------------

@probe("jit", "jax.jit(lambda v: jnp.sin(v) * 2)(x)", _x(2, 3), aliases=("pjit",))
def _jit(x):
    return jax.jit(lambda v: jnp.sin(v) * 2)(x)


@probe("custom_jvp_call", "jax.nn.relu(x) + jnp.logaddexp(x, y)", _x(2, 3), _x(2, 3))
def _custom_jvp(x, y):
    return jax.nn.relu(x) + jnp.logaddexp(x, y)


@jax.custom_vjp
def _clipped_sin(x):
    return jnp.sin(x)


_clipped_sin.defvjp(lambda x: (jnp.sin(x), x),
                    lambda x, g: (jnp.clip(g * jnp.cos(x), -1, 1),))


@probe("custom_vjp_call", "a `jax.custom_vjp` function (sin with a clipped gradient)",
       _x(2, 3), aliases=("custom_vjp_call_jaxpr",))
def _custom_vjp(x):
    return _clipped_sin(x) * 2


@probe("remat2", "jax.checkpoint(lambda v: jnp.sin(v) * v)(x)", _x(2, 3),
       aliases=("remat", "checkpoint"))
def _remat(x):
    return jax.checkpoint(lambda v: jnp.sin(v) * v)(x)


# -- reductions --------------------------------------------------------------------------------

for _name, _what, _f, _args in [
        ("reduce_sum", "jnp.sum(x, axis=1)", lambda x: jnp.sum(x, axis=1), (_x(2, 3),)),
        ("reduce_max", "jnp.max(x, axis=1)", lambda x: jnp.max(x, axis=1), (_x(2, 3),)),
        ("reduce_min", "jnp.min(x, axis=0)", lambda x: jnp.min(x, axis=0), (_x(2, 3),)),
        ("reduce_prod", "jnp.prod(x, axis=1)", lambda x: jnp.prod(x, axis=1), (_x(2, 3),)),
        ("reduce_and", "jnp.all(a, axis=1)", lambda a: jnp.all(a, axis=1), (_b(3, 2),)),
        ("reduce_or", "jnp.any(a, axis=1)", lambda a: jnp.any(a, axis=1), (_b(3, 2),)),
        ("argmax", "jnp.argmax(x, axis=1)", lambda x: jnp.argmax(x, axis=1), (_x(2, 5),)),
        ("argmin", "jnp.argmin(x, axis=0)", lambda x: jnp.argmin(x, axis=0), (_x(4, 3),)),
        ("top_k", "lax.top_k(x, 2)", lambda x: lax.top_k(x, 2), (_x(2, 5),)),
        ("cumsum", "jnp.cumsum(x, axis=1)", lambda x: jnp.cumsum(x, axis=1), (_x(2, 5),)),
        ("cumprod", "jnp.cumprod(x, axis=1)", lambda x: jnp.cumprod(x, axis=1), (_x(2, 5),)),
        ("cummax", "lax.cummax(x, axis=1)", lambda x: lax.cummax(x, axis=1), (_x(2, 5),)),
        ("cummin", "lax.cummin(x, axis=0, reverse=True)",
         lambda x: lax.cummin(x, axis=0, reverse=True), (_x(4, 3),)),
        ("cumlogsumexp", "lax.cumlogsumexp(x, axis=1)",
         lambda x: lax.cumlogsumexp(x, axis=1), (_x(2, 5),)),
        ("sort", "jnp.sort(x, axis=1), jnp.argsort(x, axis=0)",
         lambda x: (jnp.sort(x, axis=1), jnp.argsort(x, axis=0)), (_x(4, 5),)),
]:
    probe(_name, _what, *_args)(_f)


# -- shapes ------------------------------------------------------------------------------------

for _name, _what, _f, _args in [
        ("reshape", "x.reshape(3, 2)", lambda x: x.reshape(3, 2), (_x(2, 3),)),
        ("broadcast_in_dim", "jnp.broadcast_to(x, (4, 2, 3))",
         lambda x: jnp.broadcast_to(x, (4, 2, 3)), (_x(2, 3),)),
        ("transpose", "jnp.transpose(x, (2, 0, 1))", lambda x: jnp.transpose(x, (2, 0, 1)),
         (_x(2, 3, 4),)),
        ("squeeze", "jnp.squeeze(x, 1)", lambda x: jnp.squeeze(x, 1), (_x(2, 1, 3),)),
        ("concatenate", "jnp.concatenate([x, y], axis=1)",
         lambda x, y: jnp.concatenate([x, y], axis=1), (_x(2, 3), _x(2, 2))),
        ("stack", "jnp.stack([x, y], axis=1)", lambda x, y: jnp.stack([x, y], axis=1),
         (_x(2, 3), _x(2, 3))),
        ("unstack", "jnp.unstack(x, axis=1)", lambda x: jnp.unstack(x, axis=1), (_x(2, 3),)),
        ("split", "jnp.split(x, [1, 3], axis=1)", lambda x: jnp.split(x, [1, 3], axis=1),
         (_x(2, 5),)),
        ("tile", "jnp.tile(x, (2, 3))", lambda x: jnp.tile(x, (2, 3)), (_x(2, 3),)),
        ("pad", "lax.pad(x, 0.0, [(1, 2, 0), (-1, 1, 1)])",
         lambda x: lax.pad(x, np.float32(0), [(1, 2, 0), (-1, 1, 1)]), (_x(2, 4),)),
        ("slice", "x[1:3, 1:4], x[::2, 1::2]", lambda x: (x[1:3, 1:4], x[::2, 1::2]),
         (_x(4, 5),)),
        ("rev", "jnp.flip(x, (0, 1))", lambda x: jnp.flip(x, (0, 1)), (_x(2, 3),)),
]:
    probe(_name, _what, *_args)(_f)


@probe("dynamic_slice", "`lax.dynamic_slice(x, (i, 0), (2, 3))`, i traced",
       _x(4, 3), np.asarray(1, np.int32))
def _dynamic_slice(x, i):
    return lax.dynamic_slice(x, (i, 0), (2, 3))


@probe("dynamic_update_slice", "`lax.dynamic_update_slice(x, u, (i, 0))`, i traced",
       _x(4, 3), _x(2, 3), np.asarray(2, np.int32))
def _dynamic_update_slice(x, u, i):
    return lax.dynamic_update_slice(x, u, (i, jnp.int32(0)))


@probe("iota", "`x + jnp.arange(x.shape[0])[:, None]`, x.shape[0] at run time", _x(5, 3),
       poly=("b, 3",))
def _iota(x):
    return x + jnp.arange(x.shape[0], dtype=jnp.float32)[:, None]


@probe("dim_as_value", "`jnp.mean(x, axis=0)`, x.shape[0] at run time", _x(5, 3),
       poly=("b, 3",))
def _dim_as_value(x):
    return jnp.mean(x, axis=0)


PROBES["expand_dims"] = Probe(
    "expand_dims", None,
    note=f"no primitive of JAX {jax.__version__} has this name (jnp.expand_dims is "
         f"broadcast_in_dim, see its row): the lowering is not reachable")


# -- indexing ----------------------------------------------------------------------------------

@probe("gather", "jnp.take(x, i, axis=1), x[i, j]", _x(3, 4), _i(0, 4, 5), _i(0, 3, 5))
def _gather(x, i, j):
    return jnp.take(x, i, axis=1), x[j, i]


@probe("scatter", "x.at[i].set(u)", _x(4, 3), np.asarray([2, 0], np.int32), _x(2, 3))
def _scatter(x, i, u):
    return x.at[i].set(u)


for _kind, _method in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"),
                       ("min", "min"), ("max", "max")]:
    def _scatter_kind(x, i, u, _method=_method):
        return getattr(x.at[i], _method)(u)

    probe(f"scatter-{_kind}", f"`x.at[i].{_method}(u)`, i with a repeated index",
          _x(4, 3), np.asarray([2, 0, 2], np.int32), _x(3, 3),
          aliases=(f"scatter_{_kind}",))(_scatter_kind)


# -- linear algebra, convolution, pooling ------------------------------------------------------

@probe("dot_general", "x @ w, jnp.einsum('bij,bjk->bik', a, b)", _x(2, 3), _x(3, 4),
       _x(2, 3, 4), _x(2, 4, 5))
def _dot_general(x, w, a, b):
    return x @ w, jnp.einsum("bij,bjk->bik", a, b)


@probe("conv_general_dilated", "`lax.conv_general_dilated(x, w, (1, 1), 'SAME')`, NHWC / HWIO",
       _x(1, 5, 5, 2), _x(3, 3, 2, 4))
def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


for _name, _init, _op in [("reduce_window_max", -np.inf, lax.max),
                          ("reduce_window_min", np.inf, lax.min),
                          ("reduce_window_sum", 0.0, lax.add)]:
    def _pool(x, _init=_init, _op=_op):
        return lax.reduce_window(x, np.float32(_init), _op, (1, 2, 2, 1), (1, 2, 2, 1),
                                 "VALID")

    probe(_name, f"`lax.reduce_window(x, {_init}, lax.{_op.__name__}, ...)`, 2x2 window, stride 2",
          _x(1, 4, 4, 2))(_pool)


@probe("cholesky", "`jnp.linalg.cholesky(x @ x.T + 3 * jnp.eye(3))`", _x(3, 3))
def _cholesky(x):
    return jnp.linalg.cholesky(x @ x.T + 3 * jnp.eye(3))


@probe("triangular_solve", "jax.scipy.linalg.solve_triangular(a, b, lower=True)",
       _x(3, 3), _x(3, 2))
def _triangular_solve(a, b):
    return jax.scipy.linalg.solve_triangular(jnp.tril(a) + 3 * jnp.eye(3), b, lower=True)


@probe("lu", "`jax.scipy.linalg.lu_factor(x[::-1] + 3 * jnp.eye(3))` (rows reversed: it "
       "pivots)", _x(3, 3))
def _lu(x):
    return jax.scipy.linalg.lu_factor(x[::-1] + 3 * jnp.eye(3))


@probe("lu_pivots_to_permutation", "`lax.linalg.lu_pivots_to_permutation(pivots, 3)` of "
       "lu_factor(x[::-1] + 3 * jnp.eye(3))", _x(3, 3))
def _lu_pivots(x):
    pivots = jax.scipy.linalg.lu_factor(x[::-1] + 3 * jnp.eye(3))[1]
    return lax.linalg.lu_pivots_to_permutation(pivots, 3)


@probe("custom_linear_solve", "`jnp.linalg.solve(a + 3 * jnp.eye(3), b)`", _x(3, 3), _x(3, 2))
def _custom_linear_solve(a, b):
    return jnp.linalg.solve(a + 3 * jnp.eye(3), b)


@probe("geqrf", "`geqrf(x)` (LAPACK's packed QR; jax._src.lax.linalg: not public)",
       _x(4, 3))
def _geqrf(x):
    from jax._src.lax.linalg import geqrf

    return geqrf(x)


@probe("householder_product", "`lax.linalg.householder_product(a, taus)` of geqrf(x): Q",
       _x(4, 3))
def _householder_product(x):
    from jax._src.lax.linalg import geqrf

    return lax.linalg.householder_product(*geqrf(x))


@probe("eigh", "`jnp.linalg.eigh(x @ x.T)[0]` (the eigenvalues)", _x(3, 3))
def _eigh(x):
    return jnp.linalg.eigh(x @ x.T)[0]


@probe("qr", "jnp.abs(jnp.linalg.qr(x)[1])", _x(3, 3))
def _qr(x):
    return jnp.abs(jnp.linalg.qr(x)[1])


@probe("svd", "jnp.linalg.svd(x, compute_uv=False)", _x(3, 4))
def _svd(x):
    return jnp.linalg.svd(x, compute_uv=False)


@probe("fft", "jnp.fft.rfft(x).real", _x(2, 8))
def _fft(x):
    return jnp.fft.rfft(x).real


# -- control flow ------------------------------------------------------------------------------

@probe("while", "`lax.fori_loop(0, n, lambda i, s: s * 0.5 + jnp.sin(s), x)`, n traced",
       _x(2, 3), np.asarray(4, np.int32))
def _while(x, n):
    return lax.fori_loop(0, n, lambda i, s: s * 0.5 + jnp.sin(s), x)


@probe("cond", "`lax.cond(jnp.sum(x) > 0, jnp.sin, jnp.cos, x)`, "
       "`lax.switch(i, [jnp.sin, jnp.cos, jnp.tanh], x)`", _x(2, 3), np.asarray(2, np.int32))
def _cond(x, i):
    return (lax.cond(jnp.sum(x) > 0, jnp.sin, jnp.cos, x),
            lax.switch(i, [jnp.sin, jnp.cos, jnp.tanh], x))


@probe("scan", "`lax.scan(lambda c, r: (c + r, c * r), jnp.zeros(3), x)`", _x(4, 3))
def _scan(x):
    return lax.scan(lambda c, r: (c + r, c * r), jnp.zeros(3, jnp.float32), x)


# -- random numbers ----------------------------------------------------------------------------

@probe("rng_bit_generator", "`lax.rng_bit_generator(key, (2, 3))`, key traced",
       np.asarray([1, 2, 3, 4], np.uint32))
def _rng_bit_generator(key):
    return lax.rng_bit_generator(key, (2, 3))[1]


@probe("random_bits", "`jax.random.uniform(key, (2, 3))`, key traced (dropout at run time)",
       np.asarray([0, 42], np.uint32))
def _random_bits(key):
    return jax.random.uniform(key, (2, 3))


# -- the sweep ---------------------------------------------------------------------------------

def frontend_primitives() -> set[str]:
    """The primitive names of the JAX frontend's lowering table (QAT `jit:` markers left out)."""
    import tensorforge.frontends.jax.lift  # noqa: F401  (registers every lowering)
    from tensorforge.frontends.jax.ops import TABLE

    return {k for k in TABLE if not k.startswith("jit:")}


def _specs(p: Probe) -> list:
    """The probe's example args for tracing: its arrays, or ShapeDtypeStructs with the
    run-time dims of `poly`."""
    if not p.poly:
        return list(p.args)
    scope = jax.export.SymbolicScope()
    return [jax.ShapeDtypeStruct(jax.export.symbolic_shape(s, scope=scope), a.dtype)
            if s else a for a, s in zip(p.args, p.poly)]


def primitives_of(fn, args) -> set[str]:
    """Every primitive in `jax.make_jaxpr(fn)(*args)`, sub-jaxprs included."""
    found: set[str] = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            found.add(eqn.primitive.name)
            for v in eqn.params.values():
                for sub in v if isinstance(v, (tuple, list)) else (v,):
                    if hasattr(sub, "eqns"):
                        walk(sub)
                    elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def new_row(p: Probe) -> dict:
    """The row of probe `p` before it runs."""
    return {"primitive": p.primitive, "aliases": list(p.aliases), "what": p.what,
            "targets": {}, "max_rel": {}, "errors": {}, "ir_ops": [], "dims": "",
            "anchor": "", "note": p.note, "seconds": None}


def run_one(name: str, emit=None) -> dict:
    """Converts and verifies probe `name` on every target, then runs the anchor; its row.
    `emit(kind, payload)` hears of each stage as it ends (the worker prints them, so that a
    crash in the anchor keeps our results)."""
    p = PROBES[name]
    row = new_row(p)
    emit = emit or (lambda kind, payload: None)
    if p.fn is None:
        return row
    try:
        found = primitives_of(p.fn, _specs(p))
        if p.primitive not in found:
            row["errors"]["probe"] = f"the probe's jaxpr has no {p.primitive} ({sorted(found)})"
    except Exception as e:
        row["errors"]["probe"] = f"cannot trace the probe: {type(e).__name__}: {_first_line(e)}"
    if row["errors"]:
        return row
    start = time.perf_counter()
    try:
        _ours(p, row)
    except Exception as e:      # a bug of the sweep itself, or a verification that raised
        row["errors"]["probe"] = f"the sweep failed: {type(e).__name__}: {_first_line(e)}"
    row["seconds"] = round(time.perf_counter() - start, 2)
    emit("row", row)
    row["anchor"] = anchor(p, on_litert=lambda: emit("litert", name))
    return row


def _ours(p: Probe, row: dict) -> None:
    """tensorforge on every target at once; when that fails, each target alone (so that the
    row tells which one fails)."""
    import tensorforge

    given = dict(zip(p.names, p.args))
    with tempfile.TemporaryDirectory() as tmp:
        for targets in ("all", *TARGETS):
            try:
                result = tensorforge.convert(p.fn, target=targets, output=Path(tmp) / targets,
                                             verify=True, example_args=_specs(p),
                                             verify_inputs=given, progress=False)
            except Exception as e:
                if targets == "all":
                    continue
                row["targets"][targets] = "fails"
                row["errors"][targets] = _reason(e)
                continue
            v = result.verification
            row["ir_ops"] = sorted({n.op for n in result.module.main.walk()} - {"constant"})
            row["dims"] = ", ".join(f"{i.name}: [{', '.join(map(str, i.type.shape))}]"
                                    for i in result.module.main.inputs) if p.poly else ""
            for t in TARGETS if targets == "all" else (targets,):
                rows = [r for r in v.rows if r.runtime == t]
                row["max_rel"][t] = max(r.max_rel for r in rows)
                row["targets"][t] = "ok" if all(r.ok for r in rows) else "wrong"
            bad_ir = [r for r in v.rows if r.runtime == "ir" and not r.ok]
            if bad_ir:
                row["errors"]["ir"] = f"the IR interpreter is off by {bad_ir[0].max_rel:.1e}"
            if targets == "all":
                return


def _reason(e: BaseException) -> str:
    from tensorforge.ir.errors import TensorforgeError

    if isinstance(e, TensorforgeError):
        return _first_problem(e)
    return f"{type(e).__name__}: {_first_line(e)}"


# -- the anchor: jax2tf, then TFLiteConverter (builtins only), run in LiteRT --------------------

def anchor(p: Probe, on_litert=None) -> str:
    """`ok`, `wrong result (...)`, `fails to convert: ...` or `fails in LiteRT: ...`
    (`on_litert()` is called when the conversion is done and LiteRT is about to run it)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from jax.experimental import jax2tf

    poly = p.poly or (None,) * len(p.args)
    specs = [tf.TensorSpec([None if isinstance(d, str) else d for d in _dims(s, a)],
                           tf.as_dtype(a.dtype), name=f"x{i}")
             for i, (a, s) in enumerate(zip(p.args, poly))]
    stderr = _StderrCapture()
    try:
        fn = tf.function(jax2tf.convert(p.fn, with_gradient=False,
                                        polymorphic_shapes=[f"({s})" if s else None
                                                            for s in poly]),
                         input_signature=specs, autograph=False)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [fn.get_concrete_function()], fn)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        with stderr:
            flat = converter.convert()
    except Exception as e:
        # MLIR prints the first cause (such as StableHLO it cannot read) on stderr only.
        return f"fails to convert: {_converter_reason(e, stderr.text)}"
    if on_litert is not None:
        on_litert()
    try:
        interpreter = Interpreter(model_content=flat)
        inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        for i, a in enumerate(p.args):
            interpreter.resize_tensor_input(inputs[f"x{i}"], a.shape)
        interpreter.allocate_tensors()
        for i, a in enumerate(p.args):
            interpreter.set_tensor(inputs[f"x{i}"], a)
        interpreter.invoke()
        outputs = sorted(interpreter.get_output_details(), key=lambda d: _suffix(d["name"]))
        got = [interpreter.get_tensor(d["index"]) for d in outputs]
    except Exception as e:
        return f"fails in LiteRT: {_first_line(e)[:160]}"
    try:
        want = [np.asarray(w) for w in
                jax.tree_util.tree_leaves(p.fn(*[jnp.asarray(a) for a in p.args]))]
    except Exception as e:
        return f"JAX fails: {type(e).__name__}: {_first_line(e)[:160]}"
    if len(got) != len(want):
        return f"wrong result ({len(got)} outputs for {len(want)})"
    worst = max(errors(g, w)[1] for g, w in zip(got, want))
    return "ok" if worst <= RTOL else f"wrong result ({worst:.1e})"


def _dims(spec: str | None, a: np.ndarray) -> list:
    """The dims of `spec` ("b, 3"), or those of `a`."""
    if not spec:
        return list(a.shape)
    return [int(d) if d.strip().isdigit() else d.strip() for d in spec.split(",")]


def _suffix(name: str) -> int:
    """Identity -> 0, Identity_3 -> 3: the order of a converted function's outputs."""
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


_CONVERTER_REASONS = [
    (re.compile(r"'(vhlo\.\w+)' op is not part of the vhlo support yet"),
     "no TFLite lowering of StableHLO {0}"),
    (re.compile(r"unregistered operation '([\w.]+)'"),
     "its StableHLO ({0}) is newer than the converter reads"),
    (re.compile(r"Flex ops: ([^\n]+)"), "needs TF (Flex) ops {0}"),
    (re.compile(r"Custom ops: ([^\n]+)"), "needs custom ops {0}"),
]


class _StderrCapture:
    """Collects what is written to file descriptor 2 (where MLIR writes) while in the block,
    into `text`."""

    text = ""

    def __enter__(self):
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()


def _converter_reason(e: BaseException, log: str = "") -> str:
    """A short reason out of the converter's (very long) MLIR error and its stderr `log`."""
    text = log + "\n" + str(e)
    for pattern, short in _CONVERTER_REASONS:
        m = pattern.search(text)
        if m:
            return short.format(m.group(1).strip()[:100])
    for m in re.finditer(r"error: ([^\n]+)", text):
        if "failed while converting" not in m.group(1):
            return m.group(1).strip()[:160]
    return f"{type(e).__name__}: {_first_line(e)[:160]}"


# -- batches of probes in subprocesses ---------------------------------------------------------

def _worker(names: list[str]) -> None:
    """Runs probes `names` in order, printing each stage: our row (`row`), LiteRT about to
    run the anchor's model (`litert`), the anchor's outcome (`anchor`)."""
    def emit(kind, payload):
        print(f"{MARK}{kind} {json.dumps(payload)}", flush=True)

    for name in names:
        row = run_one(name, emit)
        if PROBES[name].fn is None or "probe" in row["errors"]:
            emit("row", row)
        emit("anchor", {"primitive": name, "anchor": row["anchor"]})


def _run_batch(names: list[str]) -> tuple[dict, set, set, str]:
    """Runs probes `names` in one worker process. Returns the rows it printed (with the
    anchor's outcome when it got that far), the probes it finished, those whose anchor
    reached LiteRT, and why the process stopped early ("" if it did not)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "tensorforge.tools.sweeps.jax_primitives", "--batch",
           ",".join(names)]
    timeout = PROBE_TIMEOUT_S * (len(names) + 1)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        out, why = proc.stdout, ""
        if proc.returncode < 0:
            why = f"crashes ({signal.Signals(-proc.returncode).name})"
        elif proc.returncode != 0:
            why = f"exits with status {proc.returncode}: " + \
                (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        why = f"hangs (timed out after {timeout} s)"
    rows, litert, done = {}, set(), set()
    for line in out.splitlines():
        if not line.startswith(MARK):
            continue
        kind, payload = line[len(MARK):].split(" ", 1)
        payload = json.loads(payload)
        if kind == "row":
            rows[payload["primitive"]] = payload
        elif kind == "litert":
            litert.add(payload)
        elif kind == "anchor" and payload["primitive"] in rows:
            rows[payload["primitive"]]["anchor"] = payload["anchor"]
            done.add(payload["primitive"])
    return rows, done, litert, why or "stops without a word"


def run_all(names: list[str], log=print) -> list[dict]:
    """Every probe of `names`, in batches of worker processes. Probes run in order, so when a
    worker dies the probe it was running is known: its row says where it crashed or hung (in
    our conversion, or in the anchor's converter or LiteRT), and the rest of the batch runs
    in a new worker."""
    rows, pending = {}, list(names)
    while pending:
        batch = pending[:BATCH]
        printed, finished, litert, why = _run_batch(batch)
        for name in batch:
            if name in finished:
                rows[name] = printed[name]
            else:               # the probe the worker died on
                row = printed.get(name) or new_row(PROBES[name])
                if name in printed:
                    stage = "fails in LiteRT" if name in litert else "fails to convert"
                    row["anchor"] = f"{stage}: {why}"
                else:
                    row["errors"]["probe"] = f"converting it {why}"
                rows[name] = row
            row = rows[name]
            log(f"[{len(rows)}/{len(names)}] {name}: {'pass' if passes(row) else 'FAIL'} "
                f"{'; '.join(sorted(set(row['errors'].values())))} | anchor: {row['anchor']}")
            if name not in finished:
                break
        pending = [n for n in pending if n not in rows]
    return [rows[n] for n in sorted(rows)]


# -- the page ----------------------------------------------------------------------------------

def probed(row: dict) -> bool:
    """False for names this JAX never emits (listed, not counted)."""
    return PROBES[row["primitive"]].fn is not None if row["primitive"] in PROBES else True


def passes(row: dict) -> bool:
    """Every target converts and verifies within the float32 contract."""
    return all(row.get("targets", {}).get(t) == "ok" for t in TARGETS)


def _cell(row: dict, t: str) -> str:
    status = row.get("targets", {}).get(t)
    if status == "wrong":
        return f"wrong result ({row['max_rel'][t]:.1e})"
    return status or ("n/a" if not probed(row) else "-")


def _note(row: dict) -> str:
    parts = [row["what"]] if row.get("what") else []
    if row.get("dims"):
        parts.append(f"run-time dims {row['dims']}")
    if row.get("note"):
        parts.append(row["note"])
    errors = dict(row.get("errors", {}))
    for key in ("probe", "ir"):
        if key in errors:
            parts.append(errors.pop(key))
    by_reason: dict[str, list[str]] = {}
    for t, reason in errors.items():
        by_reason.setdefault(reason, []).append(t)
    for reason, ts in by_reason.items():
        parts.append(reason if len(ts) == len(TARGETS) else f"{', '.join(ts)}: {reason}")
    return "; ".join(parts).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> str:
    """The markdown page."""
    counted = [r for r in rows if probed(r)]
    n_ok = sum(passes(r) for r in counted)
    n_anchor = sum(r.get("anchor") == "ok" for r in counted)
    lines = [
        BANNER.replace("tensorforge.tools.docgen", "tensorforge.tools.sweeps.jax_primitives")
        .rstrip("\n"), "",
        "# JAX primitive coverage", "",
        f"One tiny jax.numpy / lax program per JAX primitive (JAX {jax.__version__}): every "
        f"primitive the JAX frontend lowers, the call-like ones it inlines, and some that "
        f"users hit and it does not lower yet. Each program is checked to contain its "
        f"primitive, converted to TFLite, SavedModel and TF.js with `verify=True`, and every "
        f"artifact run in LiteRT, TensorFlow and Node.js `@tensorflow/tfjs` against JAX on the "
        f"same inputs; a target is `ok` when every output is within 1e-4 of the largest "
        f"value (`wrong result` gives the relative error). The IR ops are those of the "
        f"converted module, constants left out. The anchor is jax2tf (`with_gradient=False`) "
        f"in a `tf.function`, then TFLiteConverter with `TFLITE_BUILTINS` only, run in LiteRT "
        f"against JAX with the same tolerance. Regenerate with `{COMMAND}` "
        f"(`--only a,b` runs some probes).", "",
        f"**{n_ok} of {len(counted)} primitives convert to every target**; "
        f"jax2tf + TFLiteConverter: {n_anchor} of {len(counted)} "
        f"(names this JAX never emits are listed but not counted).", "",
        "| primitive | IR ops | TFLite | SavedModel | TF.js | jax2tf + TFLiteConverter | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["primitive"]):
        names = ", ".join(f"`{n}`" for n in [r["primitive"], *r.get("aliases", [])])
        ops = ", ".join(r.get("ir_ops", [])) or "-"
        anchor_cell = (r.get("anchor") or ("n/a" if not probed(r) else "-")).replace("|", "\\|")
        lines.append(f"| {names} | {ops} | {' | '.join(_cell(r, t) for t in TARGETS)} | "
                     f"{anchor_cell} | {_note(r)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated primitives (default: all probes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown table to write")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--batch", help=argparse.SUPPRESS)   # the worker: these probes
    args = parser.parse_args(argv)
    if args.batch:
        _worker(args.batch.split(","))
        return 0
    names = args.only.split(",") if args.only else sorted(PROBES)
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        parser.error(f"no probe for {', '.join(unknown)} (probes: {', '.join(sorted(PROBES))})")
    start = time.perf_counter()
    unprobed = [run_one(n) for n in names if PROBES[n].fn is None]
    rows = run_all([n for n in names if PROBES[n].fn is not None]) + unprobed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(rows))
    if args.json:
        args.json.write_text(json.dumps(sorted(rows, key=lambda r: r["primitive"]), indent=1))
    counted = [r for r in rows if probed(r)]
    print(f"{sum(passes(r) for r in counted)} of {len(counted)} convert to every target "
          f"(anchor: {sum(r.get('anchor') == 'ok' for r in counted)}); wrote {args.out} in "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
