"""Calibration for post-training quantization: observers (passes/quantize/observers.py),
data checking and the calibration driver (passes/quantize/calibrate.py), and the TensorFlow
probe runner (backends/tf_probe.py).

Observers are checked against NumPy on the same data; the driver against the interpreter and
the TF runner on the small CNN every backend test uses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from op_helpers import small_cnn_graph

from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph
from tensorforge.passes.quantize.calibrate import (calibrate, check_calibration_data,
                                                   interpreter_runner)
from tensorforge.passes.quantize.observers import (METHODS, MseObserver, NoDataError,
                                                   PercentileObserver, make_observer,
                                                   weight_range)

RNG = np.random.default_rng(1234)


def feed(obs, batches):
    for b in batches:
        obs.update(b)
    return obs


def quant_mse(x: np.ndarray, lo: float, hi: float, bits: int = 8) -> float:
    """Actual MSE of asymmetric fake-quantization of x with range [lo, hi] (0 included)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    levels = 2 ** bits - 1
    s = (hi - lo) / levels
    q = np.clip(np.round((x - lo) / s), 0, levels)
    return float(np.mean((q * s + lo - x) ** 2))


def growing_batches(n_batches=100, size=2000, seed=0):
    """Batches whose spread grows, so histogram observers must widen their range often."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(size) * (1 + i) + 0.1 * i).astype(np.float32)
            for i in range(n_batches)]


# -- observers ---------------------------------------------------------------------------------

def test_minmax_exact_and_symmetric():
    batches = [RNG.standard_normal((3, 7)).astype(np.float32) * (i + 1) for i in range(20)]
    allx = np.concatenate([b.ravel() for b in batches])
    assert feed(make_observer("minmax"), batches).range() == (float(allx.min()),
                                                               float(allx.max()))
    a = float(np.abs(allx).max())
    assert feed(make_observer("minmax", symmetric=True), batches).range() == (-a, a)


def test_observers_ignore_non_finite_and_need_data():
    obs = make_observer("minmax")
    with pytest.raises(NoDataError):
        obs.range()
    obs.update(np.array([np.nan, np.inf, -np.inf], np.float32))
    with pytest.raises(NoDataError):
        obs.range()
    obs.update(np.array([1.0, np.nan, -2.0, np.inf], np.float32))
    assert obs.range() == (-2.0, 1.0)
    for method in ("percentile", "mse"):
        o = make_observer(method)
        o.update(np.array([np.inf, 3.0, -1.0, np.nan], np.float32))
        lo, hi = o.range()
        assert -1.0 <= lo <= hi <= 3.0


def test_moving_average_matches_ema():
    batches = [RNG.standard_normal(50) * (i + 1) for i in range(10)]
    obs = feed(make_observer("moving_average", momentum=0.8), batches)
    lo, hi = batches[0].min(), batches[0].max()
    for b in batches[1:]:
        lo, hi = 0.8 * lo + 0.2 * b.min(), 0.8 * hi + 0.2 * b.max()
    np.testing.assert_allclose(obs.range(), (lo, hi), rtol=1e-12)
    assert make_observer("moving_average").momentum == 0.9


def test_percentile_within_one_bin_with_range_growth():
    batches = growing_batches()
    allx = np.concatenate(batches).astype(np.float64)
    for p in (99.99, 99.9, 99.0):
        obs = feed(make_observer("percentile", percentile=p), batches)
        lo, hi = obs.range()
        want_lo, want_hi = np.percentile(allx, [100 - p, p])
        assert abs(lo - want_lo) <= obs.width and abs(hi - want_hi) <= obs.width, (p, lo, hi)
        # the histogram covers everything seen and kept every element
        assert obs.start <= allx.min() and obs.start + obs.bins * obs.width >= allx.max()
        assert obs.counts.sum() == allx.size
    sym = feed(make_observer("percentile", symmetric=True, percentile=99.9), batches)
    lo, hi = sym.range()
    assert lo == -hi
    assert abs(hi - np.percentile(np.abs(allx), 99.9)) <= sym.width


def test_percentile_constant_first_batch_then_growth():
    obs = make_observer("percentile", percentile=99.0)
    obs.update(np.zeros(1000, np.float32))            # e.g. a ReLU that never fired
    x = RNG.standard_normal(100_000).astype(np.float32) * 1e4
    obs.update(x)
    allx = np.concatenate([np.zeros(1000), x])
    want = np.percentile(allx, [1.0, 99.0])
    assert np.all(np.abs(np.array(obs.range()) - want) <= obs.width)


def test_histogram_memory_bounded():
    obs = make_observer("mse", bins=512)
    sizes = set()
    for i, b in enumerate(growing_batches(100, 500)):
        obs.update(b * (1.05 ** i))
        sizes.add((obs.counts.size, obs.counts.nbytes))
    assert sizes == {(512, 512 * 8)}


def test_mse_inside_minmax_and_better_on_heavy_tails():
    x = RNG.standard_t(2, size=100_000).astype(np.float32)
    obs = feed(make_observer("mse"), np.array_split(x, 20))
    lo, hi = obs.range()
    assert x.min() <= lo < 0 < hi <= x.max()
    assert (lo, hi) != (float(x.min()), float(x.max()))
    assert quant_mse(x, lo, hi) < 0.8 * quant_mse(x, float(x.min()), float(x.max()))
    sym = feed(make_observer("mse", symmetric=True), [x]).range()
    assert sym[0] == -sym[1] and 0 < sym[1] <= np.abs(x).max()


def test_mse_keeps_full_range_for_uniform_data():
    # nothing to gain from clipping a uniform distribution at 8 bits
    x = RNG.uniform(-1, 3, 200_000).astype(np.float32)
    lo, hi = feed(make_observer("mse"), [x]).range()
    assert lo < -0.95 and hi > 2.95


def test_make_observer_options_and_errors():
    assert isinstance(make_observer("percentile", percentile=99.9), PercentileObserver)
    assert make_observer("mse", bins=256).counts.size == 256
    assert isinstance(make_observer("mse"), MseObserver)
    with pytest.raises(ConversionError, match="unknown calibration method 'kl'.*minmax"):
        make_observer("kl")
    with pytest.raises(ConversionError, match="percentile"):
        make_observer("percentile", percentile=20)


def test_weight_range_per_tensor_and_per_channel():
    w = RNG.standard_normal((3, 3, 4, 8)).astype(np.float32)
    assert weight_range(w) == (float(w.min()), float(w.max()))
    a = float(np.abs(w).max())
    assert weight_range(w, None, True) == (-a, a)
    lo, hi = weight_range(w, 3)
    np.testing.assert_array_equal(lo, w.min(axis=(0, 1, 2)))
    np.testing.assert_array_equal(hi, w.max(axis=(0, 1, 2)))
    lo, hi = weight_range(w, -2, symmetric=True)
    np.testing.assert_array_equal(hi, np.abs(w).max(axis=(0, 1, 3)))
    np.testing.assert_array_equal(lo, -hi)


# -- observer properties (hypothesis) ----------------------------------------------------------

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
arrays = hnp.arrays(np.float32, st.integers(1, 400), elements=finite)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(arrays, st.integers(1, 8), st.sampled_from([90.0, 99.0, 99.99, 100.0]))
def test_ranges_cover_percentile_clipped_data(x, pieces, p):
    batches = np.array_split(x, min(pieces, x.size))
    x64 = x.astype(np.float64)
    # order statistics, not np.percentile's interpolation between them: the histogram's
    # estimator differs from that one by more than a bin on discrete data (one -1, 99 zeros)
    plo = np.percentile(x64, 100 - p, method="higher")
    phi = np.percentile(x64, p, method="lower")
    for method in METHODS:
        obs = feed(make_observer(method, percentile=p), batches)
        lo, hi = obs.range()
        assert lo <= hi
        if method == "minmax" or (method == "moving_average" and len(batches) == 1):
            assert lo <= x.min() and hi >= x.max()
        elif method == "percentile":
            slack = obs.width + 1e-9 * max(1.0, abs(plo), abs(phi))
            assert lo <= plo + slack and hi >= phi - slack
            assert lo >= x.min() and hi <= x.max()
        elif method == "mse":
            assert x.min() <= lo and hi <= x.max()


@PROPS
@given(arrays, st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_batching_invariance(x, cuts):
    bounds = np.cumsum(cuts)
    batches = [b for b in np.split(x, bounds[bounds < x.size]) if b.size]
    assert feed(make_observer("minmax"), batches).range() == \
        feed(make_observer("minmax"), [x]).range()
    many = feed(make_observer("percentile"), batches)
    one = feed(make_observer("percentile"), [x])
    assert many.counts.sum() == one.counts.sum() == x.size
    assert (many.lo, many.hi) == (one.lo, one.hi)


# -- calibration data checks -------------------------------------------------------------------

def cnn_module(batch="batch") -> Module:
    return Module([small_cnn_graph(batch)])


def two_input_module() -> Module:
    g = Graph()
    a = g.add_input(TensorType(DType.f32, ("batch", 4)), "a")
    b = g.add_input(TensorType(DType.f32, ("batch", 4)), "b")
    s = g.add("add", [a, b], scope="sum").output
    g.set_outputs([g.add("relu", [s], scope="act").output])
    return Module([g])


def img(n=1, seed=0, size=16):
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def test_check_accepts_arrays_lists_dicts_and_generator_functions():
    m = cnn_module()
    x = img()
    for data in ([x, x], [[x]], [(x,)], [{"image": x}], lambda: (img(2, i) for i in range(3))):
        samples = check_calibration_data(m, data)
        assert all(len(s) == 1 and s[0].dtype == np.float32 for s in samples)
    samples = check_calibration_data(two_input_module(), [{"b": np.ones((2, 4), np.float32),
                                                          "a": np.zeros((2, 4), np.float32)}])
    assert samples[0][0].sum() == 0 and samples[0][1].sum() == 8   # graph-input order


def test_check_lists_every_bad_sample_with_signature():
    m = cnn_module()
    good = img()
    data = [good, img().astype(np.float64), good, img(size=8), [good, good],
            {"picture": good}, img().astype(np.int32), "nope"]
    with pytest.raises(ConversionError) as err:
        check_calibration_data(m, data)
    msg = str(err.value)
    assert msg.startswith("calibration data does not match the model signature")
    assert "image: float32[batch,16,16,3]" in msg
    assert "6 of 8 samples" in msg
    assert "sample 0" not in msg and "sample 2" not in msg
    assert "sample 1: input 'image': dtype float64, expected float32 (cast to float32)" in msg
    assert "sample 3: input 'image': shape (1, 8, 8, 3) does not fit [batch,16,16,3]" in msg
    assert "sample 4: has 2 arrays, the model takes 1 input" in msg
    assert "sample 5: keys ['picture']: missing image; unknown picture" in msg
    assert "sample 6: input 'image': dtype int32, expected float32" in msg
    assert "sample 7: is a str" in msg


def test_check_caps_the_list_and_checks_symbols_across_inputs():
    m = two_input_module()
    bad = [np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32)]  # batch 2 vs 3
    with pytest.raises(ConversionError) as err:
        check_calibration_data(m, [bad] * 25)
    msg = str(err.value)
    assert "a: float32[batch,4], b: float32[batch,4]" in msg
    assert "25 of 25 samples" in msg and "and 15 more bad samples" in msg
    assert len(err.value.diagnostics) == 11
    assert "sample 9: input 'b': shape (3, 4) does not fit [batch,4]" in msg
    # the symbol binds per sample: different batch sizes in different samples are fine
    ok = [[np.zeros((n, 4), np.float32)] * 2 for n in (1, 5)]
    assert len(check_calibration_data(m, ok)) == 2


def test_check_rejects_empty_and_non_iterables():
    m = cnn_module()
    with pytest.raises(ConversionError, match="signature .*image: float32.*empty"):
        check_calibration_data(m, [])
    with pytest.raises(ConversionError, match="empty"):
        check_calibration_data(m, lambda: iter(()))
    with pytest.raises(ConversionError, match="expected an iterable of samples"):
        check_calibration_data(m, img())


# -- the calibration driver --------------------------------------------------------------------

def probed(module: Module):
    g = module.main
    return [g.inputs[0]] + [n.output for n in g if n.op != "constant"]


def test_interpreter_capture_is_backwards_compatible():
    g = small_cnn_graph()
    x = img(2)
    outs = run_graph(g, [x])
    assert isinstance(outs, list) and len(outs) == 1
    vals = probed(Module([g]))
    outs2, caps = run_graph(g, [x], capture=vals)
    np.testing.assert_array_equal(outs[0], outs2[0])
    assert caps[0] is x or np.array_equal(caps[0], x)
    assert [c.shape for c in caps][-1] == (2, 10)
    with pytest.raises(ConversionError, match="not in graph"):
        run_graph(g, [x], capture=[small_cnn_graph().inputs[0]])


def test_calibrate_batched_equals_one_by_one_and_matches_numpy():
    m = cnn_module()
    vals = probed(m)
    data = [img(1, i) for i in range(20)] + [img(3, 99)]
    one = calibrate(m, data, {v: "minmax" for v in vals}, batch_size=1, progress=False)
    batched = calibrate(m, data, {v: "minmax" for v in vals}, batch_size=8, progress=False)
    for v in vals:
        np.testing.assert_allclose(one[v], batched[v], rtol=1e-5, atol=1e-6)
    allx = np.concatenate(data)
    assert one[vals[0]] == (float(allx.min()), float(allx.max()))
    # the softmax output is a probability
    lo, hi = one[vals[-1]]
    assert 0 <= lo <= hi <= 1


def test_calibrate_static_batch_runs_one_by_one():
    m = cnn_module(batch=1)
    vals = probed(m)
    data = [img(1, i) for i in range(5)]
    calls = []

    def counting_runner(module, values):
        run = interpreter_runner(module, values)
        return lambda inputs: calls.append(inputs[0].shape) or run(inputs)

    calibrate(m, data, {v: "percentile" for v in vals}, runner=counting_runner, batch_size=4)
    assert calls == [(1, 16, 16, 3)] * 5


def test_calibrate_observer_objects_and_errors():
    m = two_input_module()
    a, b = m.main.inputs
    out = m.main.outputs[0]
    obs = make_observer("moving_average", momentum=0.5)
    data = [[np.full((1, 4), float(i), np.float32), np.zeros((1, 4), np.float32)]
            for i in range(4)]
    r = calibrate(m, data, {a: "minmax", out: obs}, batch_size=2, progress=False)
    assert r[a] == (0.0, 3.0)
    # runs of 2 rows: [0, 1] then [2, 3] -> lo = 0.5·0 + 0.5·2, hi = 0.5·1 + 0.5·3
    assert r[out] == (1.0, 2.0) and obs is not None
    with pytest.raises(ConversionError, match="not in the graph"):
        calibrate(m, data, {two_input_module().main.inputs[0]: "minmax"})
    nan = [[np.full((1, 4), np.nan, np.float32), np.zeros((1, 4), np.float32)]]
    with pytest.raises(ConversionError, match="no usable values") as err:
        calibrate(m, nan, {a: "minmax", out: "mse"}, progress=False)
    assert "%a never took a finite value" in str(err.value)


def test_tf_runner_matches_interpreter():
    pytest.importorskip("tensorflow")
    from tensorforge.backends.tf_probe import tf_runner

    m = Module([small_cnn_graph(max_pool=True)])
    vals = probed(m)
    data = [img(1, i) for i in range(24)] + [img(2, 50)]
    for method in ("minmax", "percentile", "mse"):
        ri = calibrate(m, data, {v: method for v in vals}, progress=False)
        rt = calibrate(m, data, {v: method for v in vals}, runner=tf_runner, progress=False)
        for v in vals:
            scale = max(1e-6, *map(abs, ri[v]))
            if method == "minmax":
                np.testing.assert_allclose(rt[v], ri[v], rtol=1e-5, atol=1e-5 * scale)
            else:   # histogram answers may move by float noise at a bin edge: < 1 bin
                np.testing.assert_allclose(rt[v], ri[v], atol=scale * 2 / 2048)
    probe = tf_runner(m, vals[:2])
    outs, caps = probe.run_all([img(4)])
    np.testing.assert_allclose(outs[0], run_graph(m.main, [img(4)])[0], rtol=1e-4, atol=1e-6)
    assert caps[0].shape == (4, 16, 16, 3) and caps[1].shape == (4, 8, 8, 8)


def test_histogram_grows_downward_only():
    # regression: growing below the range must size the new bins from the old top edge
    obs = make_observer("percentile")
    obs.update(np.array([0.0, 1.0], np.float32))
    obs.update(np.array([-4.0], np.float32))
    assert obs.counts.size == 2048 and obs.counts.sum() == 3
    assert obs.start <= -4.0 and obs.start + 2048 * obs.width >= 1.0
