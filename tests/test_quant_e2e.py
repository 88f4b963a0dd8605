"""Quantization end to end on the bundled digits CNN: per-layer/op/tensor overrides change
the emitted TFLite tensors (and resolve() says the same), every target runs the quantized
model, the CLI drives it, and bad input fails early with every problem named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb

import tensorforge
from tensorforge import quantization as tq
from tensorforge.ir.errors import ConversionError
from tensorforge.tools.convert import optimize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODEL = EXAMPLES / "digits_cnn.keras"


@pytest.fixture(scope="module")
def digits():
    data = np.load(EXAMPLES / "digits_test.npz")
    return data["x"], data["y"]


@pytest.fixture(scope="module")
def samples(digits):
    x, _ = digits
    return [x[i:i + 1] for i in range(64)]


@pytest.fixture(scope="module")
def module():
    return optimize(tensorforge.from_keras(str(MODEL)), None)


def flatbuffer(path):
    return fb.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)


def op_tensors(model, scope_prefix: str, code: str):
    """(inputs, outputs) tensors of the first operator `code` whose output name starts with
    `scope_prefix`."""
    sg = model.subgraphs[0]
    for op in sg.operators:
        name = model.operatorCodes[op.opcodeIndex].builtinCode
        if name != getattr(fb.BuiltinOperator, code):
            continue
        out = sg.tensors[op.outputs[0]]
        if out.name.decode().startswith(scope_prefix):
            return ([sg.tensors[i] if i >= 0 else None for i in op.inputs],
                    [sg.tensors[i] for i in op.outputs])
    raise AssertionError(f"no {code} for {scope_prefix}")


def test_overrides_change_emitted_tensors_and_resolve_shows_them(tmp_path, samples, module):
    cfg = tq.QuantizationConfigurationMap("int8")
    # per layer: dw2 weights per tensor
    cfg.set_config("dw2", tq.LayerConfiguration(
        weight_config=tq.QuantizationConfiguration(bits=8, symmetric=True,
                                                   granularity="per_tensor"),
        activation_config=tq.QuantizationConfiguration(bits=8, symmetric=False)))
    # per op within a layer: fc1's result calibrated with a percentile (a tighter range)
    cfg.set_config("fc1", op_type="matmul", config={
        "return": tq.QuantizationConfiguration(bits=8, symmetric=False,
                                               calibration="percentile", percentile=99.0)})
    # per tensor: the model input quantized symmetrically (zero point 0)
    cfg.set_tensor_config("image", tq.QuantizationConfiguration(bits=8, symmetric=True))
    table = cfg.resolve(module).table()
    assert "per_tensor" in next(line for line in table.splitlines()
                                if line.startswith("dw2") and "filter" in line)
    assert "percentile" in next(line for line in table.splitlines()
                                if line.startswith("fc1") and "return" in line)

    base = tensorforge.convert(str(MODEL), target="tflite", output=tmp_path / "base.tflite",
                               quantization="int8", calibration_data=samples, progress=False)
    tuned = tensorforge.convert(str(MODEL), target="tflite", output=tmp_path / "tuned.tflite",
                                quantization=cfg, calibration_data=samples, progress=False)
    b, t = flatbuffer(base.paths["tflite"]), flatbuffer(tuned.paths["tflite"])

    # dw2 filter: one distinct scale instead of one per channel
    (_, w_base, _), _ = op_tensors(b, "dw2", "DEPTHWISE_CONV_2D")
    (_, w_tuned, _), _ = op_tensors(t, "dw2", "DEPTHWISE_CONV_2D")
    assert len(set(np.round(w_base.quantization.scale, 12))) > 1
    assert len(set(np.round(w_tuned.quantization.scale, 12))) == 1
    # fc1 output: the percentile range is narrower, so the scale is smaller
    _, (fc_base,) = op_tensors(b, "fc1", "FULLY_CONNECTED")
    _, (fc_tuned,) = op_tensors(t, "fc1", "FULLY_CONNECTED")
    assert fc_tuned.quantization.scale[0] < fc_base.quantization.scale[0]
    # the input: zero point 0 (symmetric) instead of the asymmetric default
    (x_base, *_), _ = op_tensors(b, "conv1", "CONV_2D")
    (x_tuned, *_), _ = op_tensors(t, "conv1", "CONV_2D")
    assert x_base.quantization.zeroPoint[0] != 0
    assert x_tuned.quantization.zeroPoint[0] == 0


def test_keep_layer_float(tmp_path, samples):
    cfg = tq.QuantizationConfigurationMap("int8")
    cfg.set_config("probs", None)
    result = tensorforge.convert(str(MODEL), target="tflite", output=tmp_path / "m.tflite",
                                 quantization=cfg, calibration_data=samples, progress=False)
    model = flatbuffer(result.paths["tflite"])
    (x, w, _), (y,) = op_tensors(model, "probs", "FULLY_CONNECTED")
    assert x.type == w.type == y.type == fb.TensorType.FLOAT32
    (_, w1, _), _ = op_tensors(model, "fc1", "FULLY_CONNECTED")
    assert w1.type == fb.TensorType.INT8


def test_every_target_runs_the_quantized_model(tmp_path, samples, digits):
    x, y = digits
    result = tensorforge.convert(str(MODEL), target="all", output=tmp_path / "out",
                                 quantization="int8", calibration_data=samples, verify=True,
                                 progress=False)
    assert result.verification.ok, result.verification.table()
    runtimes = {r.runtime for r in result.verification.rows}
    assert {"tflite", "savedmodel", "tfjs"} <= runtimes
    import tensorflow as tf

    fn = tf.saved_model.load(str(result.paths["savedmodel"])).signatures["serving_default"]
    probs = fn(image=tf.constant(x))["probs"].numpy()
    assert np.mean(np.argmax(probs, -1) == y) >= 0.97


def test_unknown_scheme_and_key_name_the_valid_ones(module):
    with pytest.raises(ConversionError) as err:
        tensorforge.convert(str(MODEL), target="tflite", output="/nonexistent/x.tflite",
                            quantization="int9")
    message = str(err.value)
    assert "int8" in message and "dynamic-int8" in message
    cfg = tq.QuantizationConfigurationMap("int8")
    cfg.set_config("conv_1", None)
    with pytest.raises(ConversionError) as err:
        cfg.resolve(module)
    assert "conv_1" in str(err.value) and "conv1" in str(err.value)


def test_bad_calibration_data_is_rejected_before_any_work(tmp_path, digits, monkeypatch):
    x, _ = digits
    bad = [x[:1], x[:1, :4], x[:1].astype(np.float64)]

    def boom(*a, **k):
        raise AssertionError("calibration ran on bad data")

    monkeypatch.setattr("tensorforge.tools.quantize.quantize_module", boom)
    out = tmp_path / "m.tflite"
    with pytest.raises(ConversionError) as err:
        tensorforge.convert(str(MODEL), target="tflite", output=out, quantization="int8",
                            calibration_data=bad, progress=False)
    message = str(err.value)
    assert "image" in message and "float32" in message and "8, 8, 1" in message.replace(
        "[", "").replace("]", "") or "8,8,1" in message
    assert "sample 1" in message and "sample 2" in message
    assert not out.exists()


def test_static_scheme_without_data_says_what_is_needed(tmp_path):
    with pytest.raises(ConversionError, match="calibration"):
        tensorforge.convert(str(MODEL), target="tflite", output=tmp_path / "m.tflite",
                            quantization="int8", progress=False)
    assert not (tmp_path / "m.tflite").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tensorforge.tools.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_compile_with_quant_config_and_report(tmp_path, digits):
    x, _ = digits
    data = tmp_path / "calib.npz"
    np.savez(data, image=x[:32])
    cfg = tq.QuantizationConfigurationMap("int8")
    cfg.set_config("probs", None)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    out = tmp_path / "m.tflite"
    r = _cli("compile", str(MODEL), "--target", "tflite", "-o", str(out), "--quantize", "int8",
             "--quant-config", str(tmp_path / "cfg.json"), "--calibration-data", str(data),
             "--verify")
    assert r.returncode == 0, r.stderr
    assert out.exists() and "tflite" in r.stdout
    (_, w, _), _ = op_tensors(flatbuffer(out), "probs", "FULLY_CONNECTED")
    assert w.type == fb.TensorType.FLOAT32

    report = tmp_path / "report"
    r = _cli("quant-report", str(MODEL), "--quantize", "int8", "--quant-config",
             str(tmp_path / "cfg.json"), "--calibration-data", str(data), "-o", str(report))
    assert r.returncode == 0, r.stderr
    text = (report / "report.md").read_text()
    assert "SQNR" in text and "`fc1`" in text
    assert "probs" in text.split("## Nodes left in float")[1]
    assert (report / "sqnr.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_quantization_input_is_one_clear_error(tmp_path, digits):
    x, _ = digits
    data = tmp_path / "calib.npz"
    np.savez(data, pixels=x[:4])
    r = _cli("compile", str(MODEL), "-o", str(tmp_path / "m.tflite"), "--quantize", "int8",
             "--calibration-data", str(data))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "pixels" in r.stderr and "image" in r.stderr
    r = _cli("compile", str(MODEL), "-o", str(tmp_path / "m.tflite"), "--quantize", "int7")
    assert r.returncode == 1 and "int8" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scheme": "int8", "calls": [{"key": "conv1", "bogus": 1}]}))
    r = _cli("compile", str(MODEL), "-o", str(tmp_path / "m.tflite"), "--quant-config",
             str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "m.tflite").exists()


def test_opt_pipeline_quantizes_with_calibration_data(tmp_path):
    src = EXAMPLES / "small_cnn.tfir"
    data = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    from tensorforge.ir.text import parse_module

    module = parse_module(src.read_text())
    (inp,) = module.main.inputs
    shape = [d if isinstance(d, int) else 16 for d in inp.type.shape]
    np.savez(data, rng.standard_normal(shape).astype(np.float32))
    pipeline = f"canonicalize,quantize{{scheme=int8,calibration-data={data}}},lower-quantized"
    r = _cli("opt", str(src), "--passes", pipeline, "--verify-each")
    assert r.returncode == 0, r.stderr
    assert "conv2d(" in r.stdout and ": i8[" in r.stdout and "quant<" in r.stdout
    r = _cli("opt", str(src), "--passes", "quantize{scheme=int8}")
    assert r.returncode == 1 and "calibration-data" in r.stderr and "Traceback" not in r.stderr


# -- verification that can fail -------------------------------------------------------------

def test_int8_verification_counts_steps_and_reports_sqnr(tmp_path, samples):
    """A good int8 model: the artifact within a few output steps of the quantized IR, the
    quantized model's SQNR against float reported and checked against a threshold the user
    sets (an impossible one fails)."""
    result = tensorforge.convert(str(MODEL), target="tflite", output=tmp_path / "m.tflite",
                                 quantization="int8", calibration_data=samples, verify=True,
                                 progress=False)
    v = result.verification
    assert v.ok, v.table()
    (float_row,) = [r for r in v.rows if r.runtime.startswith("ir")]
    assert float_row.sqnr_db > 30 and float_row.min_sqnr_db == 5.0
    (artifact,) = [r for r in v.rows if r.runtime == "tflite"]
    assert artifact.steps is not None and 1 <= artifact.steps <= 2
    assert "SQNR dB" in v.table() and "steps" in v.table()
    strict = tensorforge.convert(str(MODEL), target="tflite", output=tmp_path / "s.tflite",
                                 quantization="int8", calibration_data=samples, verify=True,
                                 progress=False, min_sqnr_db=200)
    assert not strict.verification.ok


def test_a_broken_int8_artifact_fails_verification(tmp_path, samples, monkeypatch):
    """The TFLite writer made to get the output scale wrong by 10%: every output is off by
    more than rounding can explain, and verification says NO."""
    from tensorforge.tools import convert as C

    target = C.TARGETS["tflite"]
    write = target.write

    def broken_write(module, path, **options):
        write(module, path, **options)
        model = flatbuffer(path)
        sg = model.subgraphs[0]
        out = sg.tensors[sg.outputs[0]]
        producer = next(op for op in sg.operators if sg.outputs[0] in op.outputs)
        src = sg.tensors[producer.inputs[0]]       # the int8 tensor the output dequantizes
        src.quantization.scale = [s * 1.1 for s in src.quantization.scale]
        assert out.type == fb.TensorType.FLOAT32
        from tensorforge.backends.tflite.writer import pack

        Path(path).write_bytes(pack(model))

    import dataclasses

    monkeypatch.setitem(C.TARGETS, "tflite", dataclasses.replace(target, write=broken_write))
    result = tensorforge.convert(str(MODEL), target="tflite", output=tmp_path / "m.tflite",
                                 quantization="int8", calibration_data=samples, verify=True,
                                 progress=False)
    rows = [r for r in result.verification.rows if r.runtime == "tflite"]
    assert not result.verification.ok and not all(r.ok for r in rows), \
        result.verification.table()


def test_a_collapsed_int8_output_is_flagged(tmp_path):
    """Outputs around 1e-20 (a random-weight network's logits can be) fall under the
    smallest quantization scale: int8 outputs a constant, and verification flags it instead of
    passing on a tolerance made of the error itself."""
    import keras

    inputs = keras.Input((8,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(4, name="tiny")(inputs))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 1e-20, (8, 4)).astype("f4"), np.zeros(4, "f4")])
    data = [rng.normal(size=(1, 8)).astype("f4") for _ in range(16)]
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 quantization="int8", calibration_data=data, verify=True,
                                 progress=False)
    v = result.verification
    (float_row,) = [r for r in v.rows if r.runtime.startswith("ir")]
    assert float_row.collapsed and not v.ok, v.table()
    assert "collapsed" in v.table()
