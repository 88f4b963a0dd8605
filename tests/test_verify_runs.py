"""Verification runs each runtime once per artifact (all input sets in one load, TF.js in one
Node process started in the background) and reports the seconds each runtime took."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import tensorforge
from tensorforge.tools import convert as C


def test_each_artifact_is_loaded_once_for_all_sizes_and_timed(tmp_path, monkeypatch):
    import keras

    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(4, name="d")(inputs))
    calls = {}
    for t, target in list(C.TARGETS.items()):
        def counted(path, feeds, names, _run=target.run, _t=t):
            calls[_t] = calls.get(_t, 0) + 1
            assert len(feeds) == 2      # both sizes at once
            return _run(path, feeds, names)
        monkeypatch.setitem(C.TARGETS, t, dataclasses.replace(target, run=counted))
    rng = np.random.default_rng(0)
    sets = [{"x": rng.standard_normal((n, 3)).astype(np.float32)} for n in (1, 4)]
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify_inputs=sets)
    v = result.verification
    assert v.ok, v.table()
    assert calls == {"tflite": 1, "savedmodel": 1, "tfjs": 1}
    assert list(v.seconds) == ["keras", "ir", "tflite", "savedmodel", "tfjs"]
    assert all(s >= 0 for s in v.seconds.values())
    assert v.details["tfjs"].startswith("Node.js, ")
    assert "seconds per runtime: keras " in v.table()


def test_tfjs_runs_on_wasm_and_cpu_alike(tmp_path):
    """The Node harness's two backends give the same outputs (to float32 rounding)."""
    from tensorforge.tools.node_runner import start_feeds_in_node
    from tensorforge.tools.verify import input_names, output_names

    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 12)
    result = tensorforge.convert(lambda a: (a @ a.T) * 0.5 + 1.0, target="tfjs",
                                 output=tmp_path / "js", example_args=[x])
    [name] = input_names(result.module)
    outs = {}
    for backend in ("wasm", "cpu"):
        run = start_feeds_in_node(result.paths["tfjs"], [{name: x}],
                                  output_names(result.module), backend=backend)
        [got] = run.wait()
        assert not isinstance(got, Exception), got
        assert {d["backend"] for d in run.details} == {backend}
        outs[backend] = got[0]
    np.testing.assert_allclose(outs["wasm"], outs["cpu"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs["cpu"], (x @ x.T) * 0.5 + 1.0, rtol=1e-5, atol=1e-5)



def test_harness_exchanges_raw_values_exactly(tmp_path):
    """Inputs and outputs cross to Node as raw float32/int32/bool bytes: NaN, infinities,
    integers and booleans arrive and come back unchanged."""
    import jax.numpy as jnp

    from tensorforge.tools.node_runner import start_feeds_in_node
    from tensorforge.tools.verify import input_names, output_names

    x = np.array([[np.nan, np.inf, -np.inf, 1.5], [-0.0, 3.25, -7.0, 1e-30]], np.float32)
    k = np.array([[1, -2, 3, 2**20], [0, 5, -6, 7]], np.int32)
    m = np.array([[True, False, True, False], [False, False, True, True]])
    result = tensorforge.convert(lambda a, b, c: (a * 1.0, b * 1, jnp.logical_not(c)),
                                 target="tfjs", output=tmp_path / "js", example_args=[x, k, m])
    feed = dict(zip(input_names(result.module), (x, k, m)))
    run = start_feeds_in_node(result.paths["tfjs"], [feed], output_names(result.module),
                              backend="cpu")
    [got] = run.wait()
    assert not isinstance(got, Exception), got
    np.testing.assert_array_equal(got[0], x)
    assert got[0].dtype == np.float32
    np.testing.assert_array_equal(got[1], k)
    assert got[2].dtype == np.bool_
    np.testing.assert_array_equal(got[2], ~m)


def _dense_model():
    import keras

    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, keras.layers.Dense(4, name="d")(inputs))


def test_tfjs_starts_before_the_other_artifacts_are_written(tmp_path, monkeypatch):
    """Under verification, the TF.js artifact is written first and Node starts on it at once
    (it runs while the other artifacts are written); the writers' notes keep target order."""
    events = []
    for t, target in list(C.TARGETS.items()):
        def write(module, path, _w=target.write, _t=t, **options):
            events.append(f"write {_t}")
            options["notes"].append(f"note {_t}")
            return _w(module, path, **options)

        def run(path, feeds, names, _r=target.run, _t=t):
            events.append(f"run {_t}")
            return _r(path, feeds, names)
        monkeypatch.setitem(C.TARGETS, t, dataclasses.replace(target, write=write, run=run))
    result = tensorforge.convert(_dense_model(), target="all", output=tmp_path / "m",
                                 verify=True)
    assert result.verification.ok, result.verification.table()
    assert events[:3] == ["write tfjs", "run tfjs", "write tflite"]
    assert [n for n in result.notes if n.startswith("note ")] == [
        "note tflite", "note savedmodel", "note tfjs"]
    # Unverified, the targets are written in their own order.
    events.clear()
    tensorforge.convert(_dense_model(), target="all", output=tmp_path / "n")
    assert events == ["write tflite", "write savedmodel", "write tfjs"]


def test_a_failed_write_stops_the_node_run_it_started(tmp_path, monkeypatch):
    """When a later artifact fails to write, the TF.js run already started is stopped, the
    verification's threads end and nothing is left behind."""
    import threading

    from tensorforge.ir.errors import ConversionError

    pending = []
    tfjs = C.TARGETS["tfjs"]

    def run(path, feeds, names):
        pending.append(tfjs.run(path, feeds, names))
        return pending[-1]

    def fail(module, path, **options):
        raise ConversionError("no SavedModel today")
    monkeypatch.setitem(C.TARGETS, "tfjs", dataclasses.replace(tfjs, run=run))
    monkeypatch.setitem(C.TARGETS, "savedmodel",
                        dataclasses.replace(C.TARGETS["savedmodel"], write=fail))
    try:
        tensorforge.convert(_dense_model(), target="all", output=tmp_path / "m", verify=True)
    except ConversionError as e:
        assert "no SavedModel today" in str(e)
    else:
        raise AssertionError("the failed write did not raise")
    [node] = pending
    assert node._run._run._proc.poll() is not None       # Node was stopped
    assert not any(t.name == "tensorforge-verify" for t in threading.enumerate())
    assert list(tmp_path.iterdir()) == []


def test_a_warm_node_process_serves_the_next_run_and_is_stopped_when_untaken(tmp_path,
                                                                           monkeypatch):
    """`warm_node` starts Node ahead (tfjs loaded, WASM ready); the next run of the same
    thread takes that process (no new one is spawned) and gives the outputs a cold run gives;
    a nested block starts no second process, another thread does not take it, a warm process
    nobody took is stopped when the block ends, and one whose stdin ends exits by itself."""
    import subprocess
    import threading

    from tensorforge.tools import node_runner as N
    from tensorforge.tools.verify import input_names, output_names

    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    result = tensorforge.convert(lambda a: a * 2.0 + 1.0, target="tfjs",
                                 output=tmp_path / "js", example_args=[x])
    feed = {input_names(result.module)[0]: x}
    names = output_names(result.module)
    [cold] = N.start_feeds_in_node(result.paths["tfjs"], [feed], names).wait()

    spawned = []
    real_popen = subprocess.Popen

    def popen(args, *a, **k):
        spawned.append(args[-1])
        return real_popen(args, *a, **k)

    monkeypatch.setattr(N.subprocess, "Popen", popen)
    with N.warm_node():
        with N.warm_node():                 # nested: the outer block's process serves
            assert spawned == ["--serve"]
        warm_proc = N._slot.get().node.proc
        other = []
        thread = threading.Thread(target=lambda: other.append(N._take_warm()))
        thread.start()
        thread.join()
        assert other == [None]              # another thread starts its own
        run = N.start_feeds_in_node(result.paths["tfjs"], [feed], names)
        [warm] = run.wait()
        assert spawned == ["--serve"]       # the warm process ran it
        assert N._slot.get().node is None
    assert N._slot.get() is None
    assert warm_proc.poll() == 0
    np.testing.assert_array_equal(warm[0], cold[0])
    assert {d["backend"] for d in run.details} == {"wasm"}

    with N.warm_node():
        untaken = N._slot.get().node
    assert untaken.proc.poll() is not None and not untaken.stdout_path.exists()
    assert untaken.proc.stdin.closed

    idle = N._WarmNode()
    idle.proc.stdin.close()                 # end of input without a request: a quiet exit
    assert idle.proc.wait(timeout=60) == 0
    idle.close()


def test_a_missing_harness_is_reported_once_per_block(monkeypatch):
    """When Node cannot be set up as the block begins, runs in the block raise that error
    instead of installing again."""
    from tensorforge.ir.errors import ConversionError
    from tensorforge.tools import node_runner as N

    calls = []

    def missing(force=False):
        calls.append(1)
        raise ConversionError("running TF.js models needs node on PATH")

    monkeypatch.setattr(N, "ensure_harness", missing)
    with N.warm_node():
        try:
            N.start_feeds_in_node(Path("unused"), [{}], [])
        except ConversionError as e:
            assert "needs node" in str(e)
        else:
            raise AssertionError("no error")
    assert calls == [1]


def _counting_layers():
    """Keras layers that count their eager calls (the reference runs; traced calls are not
    counted): one that works per item, one that mixes the items of a batch."""
    import keras
    import tensorflow as tf

    class Counted(keras.layers.Layer):
        eager_calls = 0

        def call(self, x):
            if not tf.inside_function():
                type(self).eager_calls += 1
            return self.compute(x)

    class PerItem(Counted):
        def compute(self, x):
            return keras.ops.tanh(x) * 2.0

    class BatchCentered(Counted):
        def compute(self, x):
            return x - keras.ops.mean(x, axis=0, keepdims=True)

    return PerItem, BatchCentered


def test_the_reference_runs_once_on_input_sets_that_differ_only_in_batch(tmp_path):
    import keras

    PerItem, _ = _counting_layers()
    x = keras.Input((5,), name="x")
    model = keras.Model(x, keras.layers.Dense(3)(PerItem()(x)))
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    v = result.verification
    assert v.ok, v.table()
    assert {r.sizes for r in v.rows} == {"batch=2", "batch=1"}
    assert PerItem.eager_calls == 1     # batches 2 and 1 as one batch of 3


def test_a_model_mixing_its_batch_is_checked_on_each_set_alone(tmp_path):
    """The stacked reference is only a shortcut: a model whose items depend on each other
    (here: centered on the batch mean) gives other values per set, so each set whose
    runtimes do not match its slice is run alone, and the check passes as it should."""
    import keras

    _, BatchCentered = _counting_layers()
    x = keras.Input((4,), name="x")
    model = keras.Model(x, BatchCentered()(x))
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    v = result.verification
    assert v.ok, v.table()
    assert BatchCentered.eager_calls == 3   # stacked, then each of the two sets alone


def _module(dim0):
    from tensorforge.ir import DType, Graph, Module, TensorType

    g = Graph("main")
    x = g.add_input(TensorType(DType.f32, (dim0, 3)), "x")
    g.set_outputs([g.add("neg", [x]).outputs[0]])
    return Module([g])


def test_reference_sets_are_stacked_only_when_they_differ_in_batch_alone():
    calls = []

    def run(feed):
        calls.append(feed["x"].shape)
        return [feed["x"] * 2]

    batched = _module("batch")
    sets = [{"x": np.ones((2, 3), np.float32)}, {"x": np.ones((1, 5), np.float32)}]
    outs, stacked = C._run_reference(run, batched, sets)
    assert not stacked and calls == [(2, 3), (1, 5)]
    calls.clear()
    sets[1]["x"] = np.full((1, 3), 3.0, np.float32)
    outs, stacked = C._run_reference(run, batched, sets)
    assert stacked and calls == [(3, 3)]
    np.testing.assert_array_equal(outs[0][0], np.full((2, 3), 2.0))
    np.testing.assert_array_equal(outs[1][0], np.full((1, 3), 6.0))
    calls.clear()       # dim 0 is not a run-time batch: never concatenated
    outs, stacked = C._run_reference(run, _module(2), [sets[0], dict(sets[0])])
    assert not stacked and calls == [(2, 3), (2, 3)]


def test_a_reference_refusing_the_stacked_batch_runs_each_set():
    calls = []

    def run(feed):
        calls.append(feed["x"].shape[0])
        if feed["x"].shape[0] > 2:
            raise ValueError("this model runs batches of up to 2")
        return [feed["x"] + 1]

    sets = [{"x": np.zeros((2, 3), np.float32)}, {"x": np.zeros((1, 3), np.float32)}]
    outs, stacked = C._run_reference(run, _module("batch"), sets)
    assert not stacked and calls == [3, 2, 1]
    np.testing.assert_array_equal(outs[1][0], np.ones((1, 3)))


def test_a_runtime_that_failed_does_not_make_the_reference_rerun():
    want = [np.ones((2, 3))]
    checks = [("tflite", RuntimeError("could not load"), 1e-3),
              ("savedmodel", [np.ones((2, 3))], 1e-3)]
    assert C._all_within(checks, want)
    checks.append(("tfjs", [np.full((2, 3), 2.0)], 1e-3))
    assert not C._all_within(checks, want)


def test_a_savedmodel_source_is_the_reference_beside_its_savedmodel_artifact(tmp_path,
                                                                              monkeypatch):
    """A SavedModel converted to every target has a source and an artifact of one kind: the
    reference is the source's own run (the artifact's outputs once stood in for it), and
    the two are timed apart. An artifact giving wrong outputs fails its rows alone."""
    import tensorflow as tf

    class Scale(tf.Module):
        def __init__(self):
            self.w = tf.Variable([[1.0, -2.0], [0.5, 3.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.tanh(tf.matmul(x, self.w))}

    module = Scale()
    tf.saved_model.save(module, str(tmp_path / "src"),
                        signatures={"serving_default": module.__call__})
    target = C.TARGETS["savedmodel"]

    def off_by_one(path, feeds, names):
        return [[o + 1.0 for o in outs] for outs in target.run(path, feeds, names)]

    monkeypatch.setitem(C.TARGETS, "savedmodel", dataclasses.replace(target, run=off_by_one))
    result = tensorforge.convert(str(tmp_path / "src"), target="all", output=tmp_path / "m",
                                 verify=True, progress=False)
    v = result.verification
    assert {r.runtime for r in v.rows if not r.ok} == {"savedmodel"}, v.table()
    assert {"source savedmodel", "ir", "savedmodel"} <= set(v.seconds)
    # The quantized check times them apart too.
    monkeypatch.setitem(C.TARGETS, "savedmodel", target)
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((1, 2)).astype(np.float32) for _ in range(8)]
    q = tensorforge.convert(str(tmp_path / "src"), target=["tflite", "savedmodel"],
                            output=tmp_path / "q", quantization="int8",
                            calibration_data=samples, verify=True, progress=False)
    assert list(q.verification.seconds)[:2] == ["source savedmodel", "ir"]
    assert "savedmodel" in q.verification.seconds


def test_the_ir_runs_in_float32_only_where_it_is_not_the_reference(tmp_path, monkeypatch):
    import keras

    from tensorforge.frontends.keras import from_keras
    from tensorforge.tools import verify as V

    modes = []
    real = V.run_ir
    monkeypatch.setattr(V, "run_ir", lambda m, feed, float32=False:
                        modes.append(float32) or real(m, feed, float32=float32))
    x = keras.Input((6,), name="x")
    model = keras.Model(x, keras.layers.Dense(3, activation="tanh")(x))
    v = tensorforge.convert(model, target="tflite", output=tmp_path / "k.tflite",
                            verify=True, progress=False).verification
    assert v.ok and v.reference == "keras" and modes and all(modes)     # checked: float32
    modes.clear()
    v = tensorforge.convert(from_keras(model), target="tflite", output=tmp_path / "m.tflite",
                            verify=True, progress=False).verification
    assert v.ok and v.reference == "IR interpreter" and modes and not any(modes)


def test_run_ir_sets_its_accumulation_whatever_the_caller_set():
    """`run_ir(float32=True)` computes in float32 arithmetic, `float32=False` in float64 even
    inside a caller's float32 block (the reference must not follow the caller)."""
    from tensorforge.ir import DType, Graph, Module, TensorType
    from tensorforge.ir.ops.nn import float_accumulation
    from tensorforge.tools import verify as V

    g = Graph("main")
    x = g.add_input(TensorType(DType.f32, (1, 1, 3, 1)), "x")
    f = g.constant(np.ones((1, 3, 1, 1), np.float32))
    g.set_outputs([g.add("depthwise_conv2d", [x, f], {"padding": "VALID"}).outputs[0]])
    feed = {"x": np.array([1e8, 3.0, 3.0], np.float32).reshape(1, 1, 3, 1)}
    assert V.run_ir(Module([g]), feed, float32=True)[0].ravel().tolist() == [1e8]
    with float_accumulation(np.float32):
        assert V.run_ir(Module([g]), feed)[0].ravel().tolist() == [100000008.0]
