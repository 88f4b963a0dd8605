"""Shape ops: NumPy kernels against TensorFlow, inference against the kernels, symbolic dims and
error messages."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tensorforge.ir.errors import InferenceError
from tensorforge.ir.ops import get_op
from tensorforge.ir.types import DType, TensorType

from op_helpers import f32, infer, run, ttype  # noqa: F401

RNG = np.random.default_rng(0)




def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# -- reshape -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,target", [
    ((2, 3, 4), (6, 4)), ((2, 3, 4), (-1,)), ((2, 3, 4), (4, -1)), ((2, 3, 4), (2, -1, 2)),
    ((24,), (1, 2, 1, 12)), ((), (1, 1)), ((1,), ()), ((0, 3), (3, 0)), ((0, 3), (-1, 3)),
])
def test_reshape_matches_tf(shape, target):
    x = rand(*shape)
    (out,) = run("reshape", [x], shape=target)
    np.testing.assert_array_equal(out, tf.reshape(x, target).numpy())


def test_reshape_symbolic():
    t = infer("reshape", [f32("batch", 7, 7, 8)], shape=(-1, 392))
    assert t[0].shape == ("batch", 392)
    # -1 is batch*2: not nameable.
    assert infer("reshape", [f32("batch", 7, 7, 8)], shape=(-1, 196))[0].shape == ("?", 196)
    # two symbols: unknown even when the static parts match
    assert infer("reshape", [f32("b", "s", 4)], shape=(-1, 4))[0].shape == ("?", 4)
    # no -1: the target is static
    assert infer("reshape", [f32("b", 4)], shape=(2, 8))[0].shape == (2, 8)


@pytest.mark.parametrize("types,target,msg", [
    ([f32(2, 3)], (4, 2), "6 elements"),
    ([f32(2, 3)], (4, -1), "not a multiple"),
    ([f32(2, 3)], (-1, -1), "more than one -1"),
    ([f32(2, 3)], (-2, 3), "< -1"),
    ([f32(0, 3)], (0, -1), "multiply to 0"),
    ([f32("b", 3)], (4,), "static part 3"),
])
def test_reshape_errors(types, target, msg):
    with pytest.raises(InferenceError, match=msg):
        infer("reshape", types, shape=target)


# -- transpose ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,perm", [
    ((2, 3), (1, 0)), ((2, 3, 4), (2, 0, 1)), ((2, 3, 4, 5), (0, 3, 1, 2)), ((), ()), ((5,), (0,)),
])
def test_transpose_matches_tf(shape, perm):
    x = rand(*shape)
    (out,) = run("transpose", [x], perm=perm)
    np.testing.assert_array_equal(out, tf.transpose(x, perm).numpy())


def test_transpose_moves_symbol():
    assert infer("transpose", [f32("batch", 3, 4)], perm=(2, 0, 1))[0].shape == (4, "batch", 3)


@pytest.mark.parametrize("perm", [(0, 0, 1), (0, 1), (0, 1, 3), (-1, 0, 1)])
def test_transpose_bad_perm(perm):
    with pytest.raises(InferenceError, match="not a permutation"):
        infer("transpose", [f32(2, 3, 4)], perm=perm)


# -- concat / split ----------------------------------------------------------------------------

@pytest.mark.parametrize("shapes,axis", [
    ([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 0)], 1), ([(2, 3, 4)], -1),
    ([(1, 2, 3), (1, 2, 5)], -1), ([(0, 3), (2, 3)], 0),
])
def test_concat_matches_tf(shapes, axis):
    xs = [rand(*s) for s in shapes]
    (out,) = run("concat", xs, axis=axis)
    np.testing.assert_array_equal(out, tf.concat(xs, axis).numpy())


def test_concat_symbolic():
    assert infer("concat", [f32("b", 3), f32("b", 5)], axis=1)[0].shape == ("b", 8)
    assert infer("concat", [f32("b", 3), f32("?", 5)], axis=1)[0].shape == ("b", 8)
    assert infer("concat", [f32("b", 3), f32(2, 3)], axis=0)[0].shape == ("?", 3)
    assert infer("concat", [f32("b", 3), f32(0, 3)], axis=0)[0].shape == ("b", 3)
    assert infer("concat", [f32("?", 3), f32(2, 3)], axis=1)[0].shape == (2, 6)


@pytest.mark.parametrize("types,axis,msg", [
    ([f32(2, 3), f32(2, 3, 1)], 0, "rank"),
    ([f32(2, 3), f32(3, 3)], 1, "dims 2 and 3 differ"),
    ([f32(2, 3), TensorType(DType.i32, (2, 3))], 0, "dtype"),
    ([f32(2, 3)], 2, "out of range"),
    ([], 0, "at least one"),
    ([f32()], 0, "rank >= 1"),
])
def test_concat_errors(types, axis, msg):
    with pytest.raises(InferenceError, match=msg):
        infer("concat", types, axis=axis)


@pytest.mark.parametrize("shape,axis,sizes", [
    ((6, 4), 0, (1, 2, 3)), ((6, 4), 1, (2, 2)), ((6, 4), -1, (4,)), ((3, 5), 1, (2, -1, 1)),
    ((3, 5), 0, (0, 3)),
])
def test_split_matches_tf(shape, axis, sizes):
    x = rand(*shape)
    outs = run("split", [x], axis=axis, sizes=sizes)
    want = tf.split(x, list(sizes), axis=axis)
    assert len(outs) == len(want)
    for o, w in zip(outs, want):
        np.testing.assert_array_equal(o, w.numpy())


def test_split_symbolic_and_errors():
    ts = infer("split", [f32("b", 4)], axis=0, sizes=(2, -1))
    assert [t.shape for t in ts] == [(2, 4), ("?", 4)]
    assert infer("split", [f32("b", 4)], axis=1, sizes=(1, 3))[1].shape == ("b", 3)
    with pytest.raises(InferenceError, match="sum to 5"):
        infer("split", [f32(6)], axis=0, sizes=(2, 3))
    with pytest.raises(InferenceError, match="more than the 6"):
        infer("split", [f32(6)], axis=0, sizes=(4, 3, -1))


# -- slice -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,begin,size", [
    ((4, 5), (1, 2), (2, 3)), ((4, 5), (0, 0), (-1, -1)), ((4, 5), (3, 1), (1, -1)),
    ((4, 5, 6), (1, 0, 2), (0, 5, 4)), ((4,), (4,), (0,)),
])
def test_slice_matches_tf(shape, begin, size):
    x = rand(*shape)
    (out,) = run("slice", [x], begin=begin, size=size)
    np.testing.assert_array_equal(out, tf.slice(x, begin, size).numpy())


def test_slice_symbolic_and_errors():
    assert infer("slice", [f32("b", 5)], begin=(0, 1), size=(-1, 2))[0].shape == ("b", 2)
    assert infer("slice", [f32("b", 5)], begin=(1, 1), size=(-1, 2))[0].shape == ("?", 2)
    with pytest.raises(InferenceError, match="cannot hold"):
        infer("slice", [f32(4, 5)], begin=(1, 2), size=(4, 1))
    with pytest.raises(InferenceError, match="one entry per dim"):
        infer("slice", [f32(4, 5)], begin=(1,), size=(1,))


# -- strided_slice -----------------------------------------------------------------------------

SS_CASES = [
    # (shape, begin, end, strides, masks as {name: value})
    ((5, 6), (1, 2), (4, 5), (1, 1), {}),
    ((5, 6), (0, 0), (0, 0), (1, 1), {"begin_mask": 3, "end_mask": 3}),
    ((5, 6), (-1, 0), (0, 0), (-1, 2), {"begin_mask": 1, "end_mask": 3}),
    ((5, 6), (4, 5), (0, 0), (-2, -3), {}),
    ((5, 6), (-1,), (0,), (1,), {"shrink_axis_mask": 1}),                     # x[-1]
    ((5, 6), (2, -2), (3, -1), (1, 1), {"shrink_axis_mask": 3}),              # x[2, -2]
    ((5, 6), (0, 1), (0, 2), (1, 1), {"new_axis_mask": 1}),                   # x[None, 1:2]
    ((2, 3, 4), (0, 1), (0, 2), (1, 1), {"ellipsis_mask": 1}),                # x[..., 1:2]
    ((2, 3, 4), (1, 0, 0), (2, 0, 3), (1, 1, -1),
     {"ellipsis_mask": 2, "shrink_axis_mask": 1}),                            # x[1, ..., 3::-1]
    ((2, 3, 4), (0, 0, 1), (0, 0, 2), (1, 1, 1),
     {"ellipsis_mask": 1, "new_axis_mask": 2}),                               # x[..., None, 1:2]
    ((2, 3, 4), (0, 0, 0), (0, 0, 0), (1, 1, 1),
     {"new_axis_mask": 5, "ellipsis_mask": 2}),                               # x[None, ..., None]
    ((2, 3, 4), (-10, 10), (10, -10), (1, -1), {}),                           # clamped, empty
    ((2, 3, 4), (5, -10), (-10, 10), (-1, 1), {}),
    ((7,), (6,), (-8,), (-2,), {}),                                           # x[6:-8:-2]
    ((3, 4), (1,), (0,), (1,), {"end_mask": 1, "shrink_axis_mask": 1}),
    ((3, 4), (0, 0), (0, 0), (1, 1), {"ellipsis_mask": 1, "shrink_axis_mask": 1}),
]


@pytest.mark.parametrize("shape,begin,end,strides,masks", SS_CASES)
def test_strided_slice_matches_tf(shape, begin, end, strides, masks):
    x = rand(*shape)
    (out,) = run("strided_slice", [x], begin=begin, end=end, strides=strides, **masks)
    want = tf.strided_slice(x, begin, end, strides, **masks).numpy()
    assert out.shape == want.shape
    np.testing.assert_array_equal(out, want)


def test_strided_slice_random_vs_tf():
    """Random specs: either TF and inference both reject, or the results agree."""
    rng = np.random.default_rng(1)
    agreed = rejected = 0
    for _ in range(400):
        rank = int(rng.integers(1, 4))
        shape = tuple(int(d) for d in rng.integers(0, 5, rank))
        n = int(rng.integers(1, rank + 3))
        begin = tuple(int(v) for v in rng.integers(-6, 7, n))
        end = tuple(int(v) for v in rng.integers(-6, 7, n))
        strides = tuple(int(v) for v in rng.choice([-3, -2, -1, 1, 2, 3], n))
        masks = {k: int(rng.integers(0, 1 << n)) for k in
                 ("begin_mask", "end_mask", "shrink_axis_mask", "new_axis_mask")}
        masks["ellipsis_mask"] = int(1 << int(rng.integers(0, n))) if rng.random() < 0.4 else 0
        x = rand(*shape)
        try:
            want = tf.strided_slice(x, begin, end, strides, **masks).numpy()
        except (tf.errors.InvalidArgumentError, ValueError):
            want = None
        spec = dict(begin=begin, end=end, strides=strides, **masks)
        if want is None:
            with pytest.raises(InferenceError):
                infer("strided_slice", [ttype(x)], **spec)
            rejected += 1
        else:
            (out,) = run("strided_slice", [x], **spec)
            assert out.shape == want.shape, (shape, spec)
            np.testing.assert_array_equal(out, want)
            agreed += 1
            # The same spec on a symbolic first dim: every result dim is either the concrete
            # size, the symbol standing for it, or unknown.
            sym = infer("strided_slice", [f32("s", *shape[1:])], **spec)[0]
            for got, conc in zip(sym.shape, want.shape):
                assert got in (conc, "?") or (got == "s" and conc == shape[0]), (shape, spec)
    assert agreed > 100 and rejected > 10


def test_strided_slice_symbolic():
    ss = dict(begin=(0, 1), end=(0, 3), strides=(1, 1), begin_mask=1, end_mask=1)
    assert infer("strided_slice", [f32("b", 5)], **ss)[0].shape == ("b", 2)
    rev = dict(begin=(0,), end=(0,), strides=(-1,), begin_mask=1, end_mask=1)
    assert infer("strided_slice", [f32("b", 5)], **rev)[0].shape == ("b", 5)
    assert infer("strided_slice", [f32("b", 5)],
                 begin=(1,), end=(0,), strides=(1,), end_mask=1)[0].shape == ("?", 5)
    assert infer("strided_slice", [f32("b", 5)], begin=(0,), end=(1,), strides=(1,),
                 shrink_axis_mask=1)[0].shape == (5,)


@pytest.mark.parametrize("spec,msg", [
    (dict(begin=(0,), end=(1,), strides=(0,)), "strides\\[0\\] is 0"),
    (dict(begin=(5,), end=(6,), strides=(1,), shrink_axis_mask=1), "out of bounds"),
    (dict(begin=(0, 0, 0), end=(1, 1, 1), strides=(1, 1, 1)), "only 2 dims"),
    (dict(begin=(0, 0), end=(1, 1), strides=(1, 1), ellipsis_mask=3), "more than one"),
    (dict(begin=(0,), end=(1, 2), strides=(1,)), "differ in length"),
])
def test_strided_slice_errors(spec, msg):
    with pytest.raises(InferenceError, match=msg):
        infer("strided_slice", [f32(5, 6)], **spec)


# -- pad ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["constant", "reflect", "symmetric"])
@pytest.mark.parametrize("shape,pads", [
    ((4, 5), ((1, 2), (3, 0))), ((3, 4, 5), ((0, 0), (2, 2), (1, 3))), ((4,), ((3, 3),)),
])
def test_pad_matches_tf(mode, shape, pads):
    x = rand(*shape)
    (out,) = run("pad", [x], pads=pads, mode=mode, value=1.5)
    kw = {"constant_values": 1.5} if mode == "constant" else {}
    want = tf.pad(x, pads, mode=mode.upper(), **kw).numpy()
    np.testing.assert_array_equal(out, want)


def test_pad_int_and_symbolic():
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    (out,) = run("pad", [x], pads=((1, 0), (0, 1)), value=7.0)
    np.testing.assert_array_equal(out, tf.pad(x, ((1, 0), (0, 1)), constant_values=7).numpy())
    assert infer("pad", [f32("b", 3)], pads=((0, 0), (1, 1)))[0].shape == ("b", 5)
    assert infer("pad", [f32("b", 3)], pads=((1, 0), (1, 1)))[0].shape == ("?", 5)
    with pytest.raises(InferenceError, match="exceeds 2"):
        infer("pad", [f32(3)], pads=((3, 0),), mode="reflect")
    with pytest.raises(InferenceError, match="rank 2"):
        infer("pad", [f32(3, 3)], pads=((1, 0),))


# -- gather ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pshape,ishape,axis,batch_dims", [
    ((5, 3), (4,), 0, 0), ((5, 3), (2, 2), 1, 0), ((2, 5, 3), (4,), -2, 0),
    ((2, 5, 3), (2, 4), 1, 1), ((2, 3, 5, 4), (2, 3, 6), 2, 2), ((2, 3, 5, 4), (2, 7), 3, 1),
    ((2, 5, 3), (2, 4), 1, -1), ((5,), (), 0, 0),
])
def test_gather_matches_tf(pshape, ishape, axis, batch_dims):
    params = rand(*pshape)
    n = pshape[axis]
    for dtype in (np.int32, np.int64):
        indices = RNG.integers(0, n, ishape).astype(dtype)
        (out,) = run("gather", [params, indices], axis=axis, batch_dims=batch_dims)
        want = tf.gather(params, indices, axis=axis, batch_dims=batch_dims).numpy()
        np.testing.assert_array_equal(out, want)


def test_gather_symbolic_and_errors():
    i64 = DType.i64
    t = infer("gather", [f32("v", 8), TensorType(i64, ("b", "s"))], axis=0)
    assert t[0].shape == ("b", "s", 8)
    t = infer("gather", [f32("b", 5, 3), TensorType(i64, (2, 4))], axis=1, batch_dims=1)
    assert t[0].shape == (2, 4, 3)
    with pytest.raises(InferenceError, match="must be >= batch_dims"):
        infer("gather", [f32(2, 5), TensorType(i64, (2, 4))], batch_dims=1)
    with pytest.raises(InferenceError, match="integers"):
        infer("gather", [f32(5), f32(2)])
    with pytest.raises(InferenceError, match="batch dim 0"):
        infer("gather", [f32(2, 5), TensorType(i64, (3, 4))], axis=1, batch_dims=1)


# -- broadcast_to / squeeze / expand_dims / tile -----------------------------------------------

@pytest.mark.parametrize("shape,target", [
    ((3,), (2, 3)), ((1, 3), (4, 3)), ((2, 1, 1), (2, 5, 3)), ((), (2, 2)), ((1,), (0,)),
])
def test_broadcast_to_matches_tf(shape, target):
    x = rand(*shape)
    (out,) = run("broadcast_to", [x], shape=target)
    np.testing.assert_array_equal(out, tf.broadcast_to(x, target).numpy())
    assert out.flags.writeable


def test_broadcast_to_errors():
    with pytest.raises(InferenceError, match="cannot broadcast"):
        infer("broadcast_to", [f32(2, 3)], shape=(3,))
    with pytest.raises(InferenceError, match="size 2"):
        infer("broadcast_to", [f32(2, 3)], shape=(4, 3))
    assert infer("broadcast_to", [f32("b", 3)], shape=(4, 3))[0].shape == (4, 3)


@pytest.mark.parametrize("shape,axes", [
    ((1, 3, 1, 2), ()), ((1, 3, 1, 2), (0,)), ((1, 3, 1, 2), (-2, 0)), ((1, 1), ()),
])
def test_squeeze_matches_tf(shape, axes):
    x = rand(*shape)
    (out,) = run("squeeze", [x], axes=axes)
    np.testing.assert_array_equal(out, tf.squeeze(x, list(axes) or None).numpy())


def test_squeeze_symbolic_and_errors():
    assert infer("squeeze", [f32("b", 1, 4)], axes=(1,))[0].shape == ("b", 4)
    with pytest.raises(InferenceError, match="give the axes"):
        infer("squeeze", [f32("b", 1, 4)])
    with pytest.raises(InferenceError, match="size 4, not 1"):
        infer("squeeze", [f32(1, 4)], axes=(1,))
    with pytest.raises(InferenceError, match="repeats"):
        infer("squeeze", [f32(1, 4)], axes=(0, -2))


@pytest.mark.parametrize("shape,axis", [((2, 3), 0), ((2, 3), 2), ((2, 3), -1), ((), 0)])
def test_expand_dims_matches_tf(shape, axis):
    x = rand(*shape)
    (out,) = run("expand_dims", [x], axis=axis)
    np.testing.assert_array_equal(out, tf.expand_dims(x, axis).numpy())


def test_expand_dims_errors():
    with pytest.raises(InferenceError, match="out of range for rank 3"):
        infer("expand_dims", [f32(2, 3)], axis=3)
    assert infer("expand_dims", [f32("b", 3)], axis=-1)[0].shape == ("b", 3, 1)


@pytest.mark.parametrize("shape,multiples", [
    ((2, 3), (1, 1)), ((2, 3), (2, 3)), ((2, 1, 3), (1, 4, 0)), ((), ()),
])
def test_tile_matches_tf(shape, multiples):
    x = rand(*shape)
    (out,) = run("tile", [x], multiples=multiples)
    np.testing.assert_array_equal(out, tf.tile(x, multiples).numpy())


def test_tile_symbolic():
    assert infer("tile", [f32("b", 3, "c")], multiples=(1, 2, 3))[0].shape == ("b", 6, "?")


# -- dtypes other than f32 ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [DType.bf16, DType.i4, DType.u8, DType.bool, DType.f16])
def test_shape_ops_keep_dtype(dtype):
    x = (np.arange(24) % 5).reshape(2, 3, 4).astype(np.int64).astype(dtype.np)
    run("reshape", [x], shape=(4, -1))
    run("transpose", [x], perm=(2, 1, 0))
    run("concat", [x, x], axis=1)
    run("split", [x], axis=2, sizes=(1, 3))
    run("strided_slice", [x], begin=(0, 1), end=(0, 0), strides=(1, -1), end_mask=2,
        shrink_axis_mask=1)
    run("pad", [x], pads=((0, 0), (1, 1), (0, 2)), value=1.0)
    run("pad", [x], pads=((0, 0), (1, 1), (0, 2)), mode="reflect")
    run("gather", [x, np.array([2, 0], np.int32)], axis=2)
    run("tile", [x], multiples=(1, 2, 1))
    run("broadcast_to", [x[:1]], shape=(3, 3, 4))
