"""Collective ops (ir/ops/collective.py) and the SPMD interpreter (ir/spmd.py): each collective
against a NumPy reference on 1-D and 2-D meshes, algebraic properties, type inference errors,
sharding helpers, and a Megatron-style MLP run device by device against the global program."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge.ir.errors import ConversionError, InferenceError
from tensorforge.ir.graph import Graph
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.ops import get_op
from tensorforge.ir.ops.collective import CROSS_DEVICE
from tensorforge.ir.spmd import (device_coords, mesh_groups, run_spmd, shard_array, unshard)
from tensorforge.ir.types import DType, Layout, TensorType

from op_helpers import f32, infer, rand, run


def _one_op_graph(op, local_shape, dtype=DType.f32, **attrs):
    g = Graph()
    x = g.add_input(TensorType(dtype, local_shape), "x")
    g.set_outputs([g.add(op, [x], attrs).output])
    return g


def _spmd_one(op, mesh, xs, **attrs):
    """Runs a single collective on per-device operands `xs`; returns per-device results."""
    g = _one_op_graph(op, xs[0].shape, DType.from_numpy(xs[0].dtype), **attrs)
    return [outs[0] for outs in run_spmd(g, mesh, [[x] for x in xs])]


# -- mesh groups -------------------------------------------------------------------------------

def test_mesh_groups_and_coords():
    assert mesh_groups({"x": 4}, "x") == [[0, 1, 2, 3]]
    mesh = {"a": 2, "b": 4}
    # Row-major: device = a * 4 + b.
    assert device_coords(6, mesh) == {"a": 1, "b": 2}
    assert mesh_groups(mesh, "b") == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert mesh_groups(mesh, "a") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    with pytest.raises(ConversionError, match="'c' is not in the mesh"):
        mesh_groups(mesh, "c")


# -- each collective vs NumPy ------------------------------------------------------------------

MESHES = [({"x": 4}, "x"), ({"a": 2, "b": 4}, "a"), ({"a": 2, "b": 4}, "b")]


def _groups_ref(mesh, axis):
    """Groups computed independently of mesh_groups: devices sharing all other coordinates."""
    n = int(np.prod(list(mesh.values())))
    keyed: dict = {}
    for d in range(n):
        c = device_coords(d, mesh)
        key = tuple(v for k, v in c.items() if k != axis)
        keyed.setdefault(key, []).append((c[axis], d))
    return [[d for _, d in sorted(m)] for m in keyed.values()]


@pytest.mark.parametrize("mesh,axis", MESHES)
@pytest.mark.parametrize("kind", ["sum", "max", "min", "mean"])
def test_all_reduce(mesh, axis, kind):
    n = int(np.prod(list(mesh.values())))
    xs = [rand(3, 5, seed=d) for d in range(n)]
    ys = _spmd_one("all_reduce", mesh, xs, axis=axis, axis_size=mesh[axis], reduce=kind)
    fn = {"sum": np.sum, "max": np.max, "min": np.min, "mean": np.mean}[kind]
    for group in _groups_ref(mesh, axis):
        want = fn(np.stack([xs[d] for d in group]), axis=0)
        for d in group:
            np.testing.assert_allclose(ys[d], want, rtol=1e-6, atol=1e-6)
            assert ys[d].dtype == np.float32


def test_all_reduce_int_mean_truncates():
    xs = [np.array([3, -3, 1], np.int32), np.array([0, 0, 0], np.int32)]
    ys = _spmd_one("all_reduce", {"x": 2}, xs, axis="x", axis_size=2, reduce="mean")
    np.testing.assert_array_equal(ys[0], [1, -1, 0])
    assert ys[1].dtype == np.int32


@pytest.mark.parametrize("mesh,axis", MESHES)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_all_gather(mesh, axis, dim):
    n = int(np.prod(list(mesh.values())))
    xs = [rand(2, 3, seed=d) for d in range(n)]
    ys = _spmd_one("all_gather", mesh, xs, axis=axis, axis_size=mesh[axis], dim=dim)
    for group in _groups_ref(mesh, axis):
        want = np.concatenate([xs[d] for d in group], axis=dim)
        for d in group:
            np.testing.assert_array_equal(ys[d], want)


@pytest.mark.parametrize("mesh,axis", MESHES)
@pytest.mark.parametrize("kind", ["sum", "max"])
def test_reduce_scatter(mesh, axis, kind):
    n = int(np.prod(list(mesh.values())))
    k = mesh[axis]
    xs = [rand(2, 4 * k, seed=d) for d in range(n)]
    ys = _spmd_one("reduce_scatter", mesh, xs, axis=axis, axis_size=k, dim=1, reduce=kind)
    fn = np.sum if kind == "sum" else np.max
    for group in _groups_ref(mesh, axis):
        full = fn(np.stack([xs[d] for d in group]), axis=0)
        for i, d in enumerate(group):
            np.testing.assert_allclose(ys[d], full[:, 4 * i:4 * (i + 1)], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mesh,axis", MESHES)
@pytest.mark.parametrize("split,concat", [(0, 1), (1, 0), (1, 1)])
def test_all_to_all(mesh, axis, split, concat):
    n = int(np.prod(list(mesh.values())))
    k = mesh[axis]
    xs = [rand(2 * k, 3 * k, seed=d) for d in range(n)]
    ys = _spmd_one("all_to_all", mesh, xs, axis=axis, axis_size=k, split_dim=split,
                   concat_dim=concat)
    for group in _groups_ref(mesh, axis):
        for j, d in enumerate(group):
            # Device j of the group gets chunk j of every member, in member order.
            want = np.concatenate([np.split(xs[s], k, axis=split)[j] for s in group],
                                  axis=concat)
            np.testing.assert_array_equal(ys[d], want)


# -- properties --------------------------------------------------------------------------------

_mesh_st = st.sampled_from([({"x": 1}, "x"), ({"x": 2}, "x"), ({"x": 4}, "x"),
                            ({"a": 2, "b": 3}, "a"), ({"a": 2, "b": 3}, "b")])


@settings(max_examples=30, deadline=None)
@given(mesh_axis=_mesh_st, rows=st.integers(1, 3), cols=st.integers(1, 3),
       dim=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_all_gather_of_local_slices_is_identity(mesh_axis, rows, cols, dim, seed):
    mesh, axis = mesh_axis
    k, n = mesh[axis], int(np.prod(list(mesh.values())))
    shape = [rows, cols]
    shape[dim] *= k
    full = rand(*shape, seed=seed)
    layout = [None, None]
    layout[dim] = axis
    xs = shard_array(full, tuple(layout), mesh)   # each device's local slice
    ys = _spmd_one("all_gather", mesh, xs, axis=axis, axis_size=k, dim=dim)
    for d in range(n):
        np.testing.assert_array_equal(ys[d], full)


@settings(max_examples=30, deadline=None)
@given(mesh_axis=_mesh_st, rows=st.integers(1, 3), chunk=st.integers(1, 3),
       kind=st.sampled_from(["sum", "max", "min", "mean"]), seed=st.integers(0, 2**16))
def test_reduce_scatter_is_slice_of_all_reduce(mesh_axis, rows, chunk, kind, seed):
    mesh, axis = mesh_axis
    k, n = mesh[axis], int(np.prod(list(mesh.values())))
    xs = [rand(rows, chunk * k, seed=seed + d) for d in range(n)]
    attrs = {"axis": axis, "axis_size": k, "reduce": kind}
    scattered = CROSS_DEVICE["reduce_scatter"](xs, {**attrs, "dim": 1}, mesh_groups(mesh, axis))
    reduced = CROSS_DEVICE["all_reduce"](xs, attrs, mesh_groups(mesh, axis))
    for d in range(n):
        i = device_coords(d, mesh)[axis]
        np.testing.assert_array_equal(scattered[d], reduced[d][:, chunk * i:chunk * (i + 1)])


@settings(max_examples=30, deadline=None)
@given(mesh_axis=_mesh_st, a=st.integers(1, 2), b=st.integers(1, 2), c=st.integers(1, 3),
       dims=st.sampled_from([(0, 1), (1, 0), (0, 2), (2, 1), (1, 1)]), seed=st.integers(0, 99))
def test_all_to_all_twice_swapped_is_identity(mesh_axis, a, b, c, dims, seed):
    mesh, axis = mesh_axis
    k, n = mesh[axis], int(np.prod(list(mesh.values())))
    split, concat = dims
    shape = [a, b, c]
    shape[split] *= k
    xs = [rand(*shape, seed=seed + d) for d in range(n)]
    g = Graph()
    x = g.add_input(f32(*shape), "x")
    y = g.add("all_to_all", [x], {"axis": axis, "axis_size": k, "split_dim": split,
                                  "concat_dim": concat}).output
    z = g.add("all_to_all", [y], {"axis": axis, "axis_size": k, "split_dim": concat,
                                  "concat_dim": split}).output
    g.set_outputs([z])
    assert z.type == x.type
    outs = run_spmd(g, mesh, [[x_] for x_ in xs])
    for d in range(n):
        np.testing.assert_array_equal(outs[d][0], xs[d])


# -- type inference ----------------------------------------------------------------------------

def test_inference_shapes():
    assert infer("all_reduce", [f32(2, 3)], axis="m", axis_size=4)[0] == f32(2, 3)
    assert infer("all_gather", [f32(2, 3)], axis="m", axis_size=4, dim=-1)[0] == f32(2, 12)
    assert infer("reduce_scatter", [f32(8, 3)], axis="m", axis_size=4, dim=0)[0] == f32(2, 3)
    assert infer("all_to_all", [f32(8, 3)], axis="m", axis_size=4, split_dim=0,
                 concat_dim=1)[0] == f32(2, 12)
    assert infer("all_to_all", [f32(8, 3)], axis="m", axis_size=4, split_dim=0,
                 concat_dim=0)[0] == f32(8, 3)
    # A symbol times axis_size has no name; over one device it is kept.
    sym = TensorType(DType.f32, ("b", 3))
    assert infer("all_gather", [sym], axis="m", axis_size=2, dim=0)[0].shape == ("?", 3)
    assert infer("all_gather", [sym], axis="m", axis_size=1, dim=0)[0].shape == ("b", 3)
    assert infer("reduce_scatter", [sym], axis="m", axis_size=2, dim=0)[0].shape == ("?", 3)


@pytest.mark.parametrize("op,attrs,types,message", [
    ("reduce_scatter", {"dim": 1}, [f32(2, 6)], r"dim 1 of f32\[2,6\] has size 6, which is not "
                                                r"divisible by axis_size 4 \(mesh axis 'm'\)"),
    ("all_to_all", {"split_dim": 0, "concat_dim": 1}, [f32(6, 2)],
     "split_dim 0 .* not divisible by axis_size 4"),
    ("all_gather", {"dim": 2}, [f32(2, 6)], "all_gather dim 2 out of range for rank 2"),
    ("reduce_scatter", {"dim": -3}, [f32(2, 8)], "reduce_scatter dim -3 out of range"),
    ("all_to_all", {"split_dim": 0, "concat_dim": 5}, [f32(8, 2)],
     "all_to_all concat_dim 5 out of range"),
    ("all_gather", {"dim": 0}, [f32()], "rank >= 1"),
    ("all_reduce", {}, [TensorType(DType.bool, (4,))], "bool"),
])
def test_inference_errors(op, attrs, types, message):
    with pytest.raises(InferenceError, match=message):
        infer(op, types, axis="m", axis_size=4, **attrs)


def test_inference_rejects_bad_axis_size():
    with pytest.raises(InferenceError, match="axis_size must be >= 1, got 0"):
        infer("all_reduce", [f32(2)], axis="m", axis_size=0)
    op = get_op("all_reduce")
    assert op.attr_problems(op.complete_attrs({"axis": "m", "axis_size": 2, "reduce": "prod"}))
    assert "collective" in op.traits and "no_fold" in op.traits


# -- single-device kernels ---------------------------------------------------------------------

def test_single_device_kernel_identity_on_size_one_axis():
    x = rand(4, 2)
    np.testing.assert_array_equal(run("all_reduce", [x], axis="m", axis_size=1)[0], x)
    np.testing.assert_array_equal(run("all_gather", [x], axis="m", axis_size=1, dim=0)[0], x)
    np.testing.assert_array_equal(
        run("reduce_scatter", [x], axis="m", axis_size=1, dim=1)[0], x)
    np.testing.assert_array_equal(
        run("all_to_all", [x], axis="m", axis_size=1, split_dim=0, concat_dim=1)[0], x)


def test_single_device_interpreter_points_at_run_spmd():
    g = _one_op_graph("all_reduce", (4,), axis="model", axis_size=4)
    with pytest.raises(ConversionError, match="reference kernel failed") as e:
        run_graph(g, [rand(4)])
    assert "ir.spmd.run_spmd" in str(e.value) and "'model'" in str(e.value)


def test_run_spmd_reports_mesh_and_input_problems_together():
    g = Graph()
    x = g.add_input(f32(4), "x")
    y = g.add("all_reduce", [x], {"axis": "model", "axis_size": 2}).output
    z = g.add("all_reduce", [y], {"axis": "data", "axis_size": 2}).output
    g.set_outputs([z])
    with pytest.raises(ConversionError) as e:
        run_spmd(g, {"model": 4}, [[rand(4)], [rand(4)], [rand(3)], [rand(4).astype(np.float64)]])
    msg = str(e.value)
    assert "axis_size 2 but mesh axis 'model' has 4 devices" in msg
    assert "'data', which is not in the mesh" in msg
    assert "device 2: input x: shape (3,)" in msg and "device 3: input x: dtype float64" in msg
    with pytest.raises(ConversionError, match="has 4 devices, got inputs for 2"):
        run_spmd(g, {"model": 4}, [[rand(4)]] * 2)


# -- shard_array / unshard ---------------------------------------------------------------------

def test_shard_unshard_roundtrip_and_errors():
    mesh = {"batch": 2, "model": 4}
    x = rand(4, 8, 3)
    for axes in [("batch", "model", None), (None, "batch", None), ("model", None, None),
                 (None, None, None), Layout(("model", "batch", None))]:
        shards = shard_array(x, axes, mesh)
        assert len(shards) == 8
        np.testing.assert_array_equal(unshard(shards, axes, mesh), x)
    shards = shard_array(x, ("batch", "model", None), mesh)
    np.testing.assert_array_equal(shards[6], x[2:4, 4:6])   # device 6 = (batch 1, model 2)
    with pytest.raises(ConversionError) as e:
        shard_array(rand(3, 8), ("batch", "nope", None), mesh)
    assert "has 3 dims" in str(e.value) and "'nope'" in str(e.value)
    with pytest.raises(ConversionError, match="size 3, not divisible by mesh axis 'batch'"):
        shard_array(rand(3, 8), ("batch", None), mesh)
    with pytest.raises(ConversionError, match="two dims over mesh axis 'model'"):
        shard_array(rand(4, 4), ("model", "model"), mesh)


def test_unshard_detects_disagreeing_replicas():
    mesh = {"batch": 2, "model": 4}
    x = rand(4, 6) * 100
    shards = shard_array(x, ("batch", None), mesh)
    shards[5] = shards[5] + 1e-5                         # within 1e-6 relative of ~300: fine
    np.testing.assert_allclose(unshard(shards, ("batch", None), mesh), x)
    shards[6] = shards[6] + 1.0                          # device 6 = (batch 1, model 2)
    shards[3] = shards[3] * np.nan
    with pytest.raises(ConversionError) as e:
        unshard(shards, ("batch", None), mesh)
    msg = str(e.value)
    assert "device 6 {'batch': 1, 'model': 2} disagrees with device 4" in msg
    assert "device 3 {'batch': 0, 'model': 3} disagrees with device 0" in msg


# -- end to end: Megatron MLP ------------------------------------------------------------------

def test_megatron_mlp_matches_global_program():
    mesh = {"batch": 2, "model": 4}
    b, h, f = 6, 8, 16
    x, w1, w2 = rand(b, h, seed=1), rand(h, f, seed=2) * 0.3, rand(f, h, seed=3) * 0.3
    layouts = {"x": ("batch", None), "w1": (None, "model"), "w2": ("model", None),
               "y": ("batch", None)}

    # The local program: per-device shapes, one all_reduce over "model" after the row-parallel
    # matmul (each device holds a partial sum of y).
    g = Graph()
    xl = g.add_input(f32(b // 2, h), "x")
    w1l = g.add_input(f32(h, f // 4), "w1")
    w2l = g.add_input(f32(f // 4, h), "w2")
    hid = g.add("relu", [g.add("matmul", [xl, w1l]).output]).output
    part = g.add("matmul", [hid, w2l]).output
    y = g.add("all_reduce", [part], {"axis": "model", "axis_size": 4}, names=["y"]).output
    g.set_outputs([y])

    per_arg = [shard_array(a, layouts[k], mesh) for k, a in (("x", x), ("w1", w1), ("w2", w2))]
    per_device = [list(args) for args in zip(*per_arg)]
    outs = run_spmd(g, mesh, per_device)
    got = unshard([o[0] for o in outs], layouts["y"], mesh)

    want = np.maximum(x.astype(np.float64) @ w1, 0) @ w2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    # Without the all_reduce the model-axis replicas hold different partial sums: unshard says so.
    g.set_outputs([part])
    partial = [o[0] for o in run_spmd(g, mesh, per_device)]
    with pytest.raises(ConversionError, match="replicas of a sharded tensor disagree"):
        unshard(partial, layouts["y"], mesh)
