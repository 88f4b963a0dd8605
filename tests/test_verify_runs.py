"""Verification runs each runtime once per artifact (all input sets in one load, TF.js in one
Node process started in the background) and reports the seconds each runtime took."""

from __future__ import annotations

import dataclasses

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

