"""Control flow and the rest of JAX, end to end: loops, branches, scans, scatters, sorting-free
sampling, RoPE, bf16 and PRNG programs converted to TFLite, SavedModel and TF.js and each
verified in LiteRT, TF and Node.js tfjs against JAX (`verify=True` runs all of them).

Scans longer than canonicalization's unroll limit (8) stay loops: those exercise WHILE in
TFLite, tf.while_loop in SavedModel and TF.js.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tensorforge  # noqa: E402
from op_helpers import tflite_ops  # noqa: E402
from tensorforge.ir import ConversionError, VerificationError  # noqa: E402
from tensorforge.ir.text import parse_module  # noqa: E402
from tensorforge.ir.verify import verify_module  # noqa: E402

RNG = np.random.default_rng(0)


def _convert(fn, args, tmp_path, name="m", **kw):
    result = tensorforge.convert(fn, target="all", output=tmp_path / name, verify=True,
                                 example_args=args, **kw)
    assert result.verification.ok, result.verification.table()
    assert set(row.runtime for row in result.verification.rows) == \
        {"ir", "tflite", "savedmodel", "tfjs"}
    return result


def _ops(result):
    return {n.op for n in result.module.main.walk()}


def test_flax_lstm_runs_everywhere(tmp_path):
    import flax.linen as nn

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.RNN(nn.LSTMCell(8))(x)[:, -1])

    model = Model()
    x = RNG.standard_normal((2, 12, 3)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), x)
    result = _convert(lambda v: model.apply(variables, v), [x], tmp_path)
    # The IR keeps the scan; SavedModel and TF.js get a while, TFLite its fused LSTM kernel
    # (tests/test_recurrent_fusion.py).
    assert "scan" in _ops(result)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in tflite_ops(result.paths["tflite"])


def test_scan_rnn_with_run_time_batch_and_length(tmp_path):
    w = RNG.standard_normal((4, 4)).astype(np.float32) * 0.5
    u = RNG.standard_normal((3, 4)).astype(np.float32)

    def rnn(xs):  # xs: [time, batch, 3]
        def step(h, x):
            h = jnp.tanh(h @ w + x @ u)
            return h, h.sum(-1)
        h0 = jnp.zeros((xs.shape[1], 4), xs.dtype)
        return jax.lax.scan(step, h0, xs)

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("t, b, 3"), jnp.float32)
    result = _convert(rnn, [spec], tmp_path)
    assert result.module.main.inputs[0].type.shape == ("t", "b", 3)
    assert "scan" in _ops(result)
    # verified at two sizes: one artifact serves every length and batch
    assert len({row.sizes for row in result.verification.rows}) == 2


def test_while_loop_with_a_data_dependent_exit(tmp_path):
    def halve_until_small(x):
        def cond(s):
            return jnp.max(jnp.abs(s[1])) > 0.1
        def body(s):
            return s[0] + 1, s[1] * 0.5
        return jax.lax.while_loop(cond, body, (jnp.int32(0), x))

    x = (RNG.standard_normal((3, 4)) * 10).astype(np.float32)
    result = _convert(halve_until_small, [x], tmp_path)
    steps = np.asarray(halve_until_small(x)[0])
    assert steps > 3  # the exit depends on the data
    assert "WHILE" in tflite_ops(result.paths["tflite"])


def test_nested_loops_with_a_branch_inside(tmp_path):
    """A while in a while with a cond inside: nested subgraphs in TFLite, nested functions in
    SavedModel and TF.js (whose loop bodies' constants must not collide by name)."""
    def nested(x):
        def outer(i, a):
            def inner(j, b):
                return jax.lax.cond(jnp.sum(b) > 0, lambda c: c * 0.9, lambda c: c + 0.1, b)
            return jax.lax.fori_loop(0, 10, inner, a) + 1.0
        return jax.lax.fori_loop(0, 12, outer, x)

    result = _convert(nested, [RNG.standard_normal(3).astype(np.float32)], tmp_path)
    [outer] = [n for n in result.module.main.walk() if n.op == "scan"][:1]
    assert any(n.op == "scan" for n in outer.regions[0].walk())


def test_cond_and_switch_on_data(tmp_path):
    def branchy(i, x):
        y = jax.lax.cond(jnp.sum(x) > 0, lambda a: a * 2.0, lambda a: jnp.sin(a) - 1.0, x)
        return jax.lax.switch(i, [lambda a: a + 1.0, lambda a: a * a, jnp.tanh], y)

    x = RNG.standard_normal((2, 5)).astype(np.float32)
    for k, index in enumerate((-3, 1, 2, 7)):  # out of range clamps, as lax.switch does
        result = _convert(branchy, [np.int32(index), x if k % 2 else -x], tmp_path, f"b{k}",
                          verify_inputs={"i": np.int32(index), "x": x if k % 2 else -x})
    assert "if" in _ops(result)
    assert "IF" in tflite_ops(result.paths["tflite"])


def test_kv_cache_writes_at_traced_positions(tmp_path):
    def update(cache, new, pos):  # cache [batch, max_len, dim]
        written = jax.lax.dynamic_update_slice(cache, new[:, None], (0, pos, 0))
        return written.at[:, pos + 1].add(new * 2.0)

    cache = RNG.standard_normal((2, 16, 4)).astype(np.float32)
    new = RNG.standard_normal((2, 4)).astype(np.float32)
    result = _convert(update, [cache, new, np.int32(5)], tmp_path,
                      verify_inputs={"cache": cache, "new": new, "pos": np.int32(5)})
    assert {"dynamic_update_slice", "scatter_nd_add"} <= _ops(result)
    ops = set(tflite_ops(result.paths["tflite"]))
    assert {"DYNAMIC_UPDATE_SLICE", "SCATTER_ND"} <= ops


def test_scatter_set_mul_min_max_and_take_along_axis(tmp_path):
    def indexing(x, i):
        y = x.at[:, i].set(1.0).at[i].mul(3.0).at[jnp.array([0, 2, 2])].max(0.25)
        y = y.at[1].min(-0.5)
        order = jnp.argmax(y, axis=1, keepdims=True)
        return jnp.take_along_axis(y, order, axis=1), y[jnp.array([0, 3]), jnp.array([1, 2])]

    x = RNG.standard_normal((4, 6)).astype(np.float32)
    _convert(indexing, [x, np.int32(2)], tmp_path,
             verify_inputs={"x": x, "i": np.int32(2)})


def test_top_k_sampling_logits(tmp_path):
    def top_k_filter(logits):
        values, _ = jax.lax.top_k(logits, 5)
        kth = values[..., -1:]
        masked = jnp.where(logits < kth, -1e9, logits)
        return jax.nn.softmax(masked, axis=-1)

    logits = RNG.standard_normal((2, 32)).astype(np.float32)
    result = _convert(top_k_filter, [logits], tmp_path)
    assert "TOPK_V2" in tflite_ops(result.paths["tflite"])


def _rope(x, positions):
    half = x.shape[-1] // 2
    freqs = 1.0 / (10000 ** (jnp.arange(half, dtype=jnp.float32) / half))
    angles = positions[:, None].astype(jnp.float32) * freqs[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def test_rope_decoder_block(tmp_path):
    d, heads = 16, 2
    wq, wk, wv, wo = (RNG.standard_normal((d, d)).astype(np.float32) * 0.2 for _ in range(4))

    def decoder(x):  # x: [batch, seq, d]
        b, s, _ = x.shape
        split = lambda t: t.reshape(b, s, heads, d // heads).transpose(0, 2, 1, 3)
        pos = jnp.arange(s)
        q, k, v = (split(x @ w) for w in (wq, wk, wv))
        q, k = _rope(q, pos), _rope(k, pos)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
        causal = jnp.tril(jnp.ones((s, s), bool))
        scores = jnp.where(causal, scores, -1e9)
        out = jax.nn.softmax(scores, axis=-1) @ v
        return x + out.transpose(0, 2, 1, 3).reshape(b, s, d) @ wo

    x = RNG.standard_normal((2, 8, d)).astype(np.float32)
    result = _convert(decoder, [x], tmp_path)
    assert not {"sin", "cos"} & _ops(result)  # static positions: rotary tables fold

    # run-time sequence length: the tables are computed in the graph (sin, cos of a range)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, s, 16"), jnp.float32)
    result = _convert(decoder, [spec], tmp_path, "dynamic")
    assert {"sin", "cos", "range"} <= _ops(result)


def test_bf16_mlp_is_computed_in_f32_and_says_so(tmp_path):
    w1 = RNG.standard_normal((6, 8)).astype(np.float32)
    w2 = RNG.standard_normal((8, 3)).astype(np.float32)

    def mlp(x):  # a bf16 model behind f32 boundaries, and a bf16 input
        h = jax.nn.gelu(x.astype(jnp.bfloat16) @ w1.astype(jnp.bfloat16))
        return (h @ w2.astype(jnp.bfloat16)).astype(jnp.float32)

    x = RNG.standard_normal((4, 6)).astype(np.float32)
    result = _convert(mlp, [x], tmp_path)
    assert any("bf16" in n for n in result.notes)
    err = max(r.max_rel for r in result.verification.rows if r.runtime == "tflite")
    assert 0 < err < 5e-2  # rounds less than the bf16 source: differs by bf16's epsilon

    def bf16_io(x):
        return jnp.tanh(x * 2).astype(jnp.bfloat16) + 1
    xb = x.astype(jnp.bfloat16)
    result = _convert(bf16_io, [xb], tmp_path, "io")
    assert "x: bf16" in " ".join(result.notes)


def test_dropout_from_a_fixed_key_folds(tmp_path):
    def dropout(x):
        keep = jax.random.bernoulli(jax.random.PRNGKey(42), 0.8, x.shape)
        return jnp.where(keep, x / 0.8, 0.0)

    x = RNG.standard_normal((4, 6)).astype(np.float32)
    result = _convert(dropout, [x], tmp_path)
    assert not {"while", "scan"} & _ops(result)


# -- bad input ---------------------------------------------------------------------------------

LOOP_CHANGES_SHAPE = """
graph @main(%x: f32[2]) -> (f32[2]) {
  %i = constant {value=dense<i32[]: [0]>} : i32[]
  %n, %y = while(%i, %x) : i32[], f32[2] loc="model.py:7" {
    graph @cond(%k: i32[], %v: f32[2]) -> (bool[]) {
      %three = constant {value=dense<i32[]: [3]>} : i32[]
      %go = less(%k, %three) : bool[]
      return %go
    }
    graph @body(%k: i32[], %v: f32[2]) -> (i32[], f32[4]) {
      %one = constant {value=dense<i32[]: [1]>} : i32[]
      %k2 = add(%k, %one) : i32[]
      %w = concat(%v, %v) {axis=0} : f32[4]
      return %k2, %w
    }
  }
  return %y
}
"""


def test_loop_whose_state_changes_shape_is_refused_cleanly(tmp_path):
    module = parse_module(LOOP_CHANGES_SHAPE, "loop.tfir")
    with pytest.raises(VerificationError) as info:
        verify_module(module)
    text = str(info.value)
    assert "while: body result 1: f32[4] does not fit f32[2]" in text
    assert "model.py:7" in text

    src = tmp_path / "loop.tfir"
    src.write_text(LOOP_CHANGES_SHAPE)
    out = tmp_path / "out.tflite"
    proc = subprocess.run([sys.executable, "-m", "tensorforge", "compile", str(src),
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "does not fit" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_unsupported_primitive_inside_a_loop_names_the_line():
    def f(x):
        return jax.lax.fori_loop(0, 20, lambda i, a: jax.lax.igamma(a, a) + a, x)

    with pytest.raises(ConversionError) as info:
        from tensorforge.frontends.jax import from_jax

        from_jax(f, [np.ones(3, np.float32)])
    [diag] = [d for d in info.value.diagnostics if "igamma" in d.message]
    assert "has no IR lowering" in diag.message and __file__ in diag.loc


SHARDED_LOOP = r"""
import json, os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import numpy as np, jax, jax.numpy as jnp
import tensorforge
from tensorforge import sharding as ts
from tensorforge.backends.jax_sharding import compile_sharded
from tensorforge.tools.convert import optimize

rng = np.random.default_rng(0)
w1, w2 = rng.standard_normal((16, 32), np.float32), rng.standard_normal((32, 16), np.float32)

def f(x):
    h = jnp.tanh(x @ w1) @ w2
    return jax.lax.scan(lambda c, r: (jnp.tanh(c + r), c), jnp.zeros(16), h)[1]

x = rng.standard_normal((12, 16)).astype(np.float32)
module = optimize(tensorforge.from_jax(f, [x]), None)
plan = ts.shard(module, ts.create_layout_map(module, ts.Mesh({"batch": 2, "model": 4})),
                batch=12)
(want,) = tensorforge.run_graph(module.main, [x])
(got,) = compile_sharded(plan, example_inputs=[x])(x)
print(json.dumps({"ops": sorted({n.op for n in module.main}),
                  "err": float(np.max(np.abs(np.asarray(got) - want)))}))
"""


def test_a_sharded_plan_with_a_loop_runs_on_simulated_devices():
    proc = subprocess.run([sys.executable, "-c", SHARDED_LOOP], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "scan" in out["ops"] and out["err"] < 1e-5
