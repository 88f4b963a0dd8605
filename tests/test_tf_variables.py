"""frontends/tf/variables.py: variables read for lifting, many in one TF op
(`_ReadVariablesOp`), the rest one by one: the values are the variables' own (every dtype,
scalars and empty tensors too), read-only, read once per lift, and unaffected by later
assignments to the variables."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tensorforge.frontends.tf import variables as V  # noqa: E402


def _variables():
    rng = np.random.default_rng(0)
    return [tf.Variable(rng.standard_normal((3, 4)).astype(np.float32)),
            tf.Variable(rng.integers(-9, 9, (5,)).astype(np.int64)),
            tf.Variable(np.float16(1.5)),
            tf.Variable(np.array([True, False])),
            tf.Variable(np.zeros((0, 2), np.float32)),
            tf.Variable(rng.standard_normal((2, 2, 2)).astype(np.float64))]


def _reads(variables):
    return [(v.handle, v.dtype.as_datatype_enum) for v in variables]


def _counting_batched_reads(monkeypatch) -> list:
    """Records the number of variables of each `_ReadVariablesOp` that runs."""
    from tensorflow.python.eager import execute

    batched, real = [], execute.execute

    def counted(op_name, num_outputs, inputs, attrs, ctx, name=None):
        out = real(op_name, num_outputs, inputs, attrs, ctx, name)
        if op_name == "_ReadVariablesOp":
            batched.append(len(inputs))
        return out

    monkeypatch.setattr(execute, "execute", counted)
    return batched


def test_read_together_gives_each_variables_value_in_one_op(monkeypatch):
    batched = _counting_batched_reads(monkeypatch)
    variables = _variables()
    values = V.read_variables(_reads(variables))
    assert batched == [len(variables)]
    for v, got in zip(variables, values):
        want = v.numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert not got.flags.writeable


def test_variables_of_a_widely_shared_shape_are_read_when_asked(monkeypatch):
    batched = _counting_batched_reads(monkeypatch)
    singles = []
    monkeypatch.setattr(V, "read_variable", lambda h, d, _real=V.read_variable:
                        singles.append(h) or _real(h, d))
    monkeypatch.setattr(V, "SHARED_SHAPE_READ_ALONE", 2)
    shared = [tf.Variable(np.full((3, 4), k, np.float32)) for k in range(3)]
    own = [tf.Variable(np.zeros((5,), np.float32)), tf.Variable(np.zeros((6,), np.int32))]
    values = V.VariableValues()
    values.prefetch(_reads(shared + own))
    assert batched == [2] and singles == []
    for v in shared + own:
        np.testing.assert_array_equal(values.get(v.handle, v.dtype.as_datatype_enum), v.numpy())
    assert singles == [v.handle for v in shared]        # read once each, when asked


@pytest.mark.parametrize("alone", [-1, 2, 10**9])
def test_prefetched_values_are_read_once_and_kept(alone, monkeypatch):
    monkeypatch.setattr(V, "SHARED_SHAPE_READ_ALONE", alone)
    variables = _variables() + [tf.Variable(np.full((3, 4), k, np.float32)) for k in range(4)]
    values = V.VariableValues()
    values.prefetch(_reads(variables) + _reads(variables[:2]))      # repeats read once
    got = [values.get(h, d) for h, d in _reads(variables)]
    assert all(a is b for a, b in zip(got, [values.get(h, d) for h, d in _reads(variables)]))
    for v, value in zip(variables, got):
        np.testing.assert_array_equal(value, v.numpy())
    before = [np.array(g) for g in got]
    for v in variables:     # training afterwards: TF copies before writing a shared buffer
        if v.dtype == tf.float32 and v.shape.num_elements():
            v.assign(tf.fill(v.shape, 7.0))
    for value, old in zip(got, before):
        np.testing.assert_array_equal(value, old)


def test_reads_the_batched_op_cannot_run_fall_back_to_one_by_one(monkeypatch):
    from tensorflow.python.eager import execute

    def refuse(*args, **kwargs):
        raise RuntimeError("no _ReadVariablesOp here")

    monkeypatch.setattr(execute, "execute", refuse)
    variables = _variables()
    for v, got in zip(variables, V.read_variables(_reads(variables))):
        np.testing.assert_array_equal(got, v.numpy())



def test_a_read_that_fails_is_left_to_the_lift_that_asks_for_it():
    v = tf.Variable(np.ones((2, 2), np.float32))
    wrong = tf.int32.as_datatype_enum     # a read as another dtype: TF refuses it
    values = V.VariableValues()
    values.prefetch([(v.handle, wrong), (v.handle, v.dtype.as_datatype_enum)])  # no raise
    np.testing.assert_array_equal(values.get(v.handle, v.dtype.as_datatype_enum), v.numpy())
    with pytest.raises(Exception):
        values.get(v.handle, wrong)
