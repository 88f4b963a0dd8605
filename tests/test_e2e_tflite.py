"""Keras -> IR -> TFLite end to end: the artifact runs in the real LiteRT interpreter and
matches Keras (float32 within 1e-4 relative), through the Python API and the command line."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.tools.bench.models import application, transformer_encoder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits_cnn.keras"


def convert_and_check(model, tmp_path, **kw):
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 verify=True, **kw)
    v = result.verification
    assert {r.runtime for r in v.rows} == {"ir", "tflite"}
    assert v.ok, v.table()
    return result


def small_cnn():
    keras.utils.set_random_seed(1)
    x = keras.Input((16, 16, 3), name="pixels")
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(6.0, name="relu1")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = keras.layers.Conv2D(12, 1, activation="relu", name="pw")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(5, activation="softmax", name="logits")(h)
    return keras.Model(x, out, name="small_cnn")


def test_small_cnn_dynamic_batch(tmp_path):
    model = small_cnn()
    result = convert_and_check(model, tmp_path)
    interp = Interpreter(model_path=str(result.paths["tflite"]))
    [inp] = interp.get_input_details()
    assert list(inp["shape_signature"]) == [-1, 16, 16, 3]
    runner = interp.get_signature_runner("serving_default")
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 16, 16, 3)).astype(np.float32)
        got = runner(pixels=x)["logits"]
        want = np.asarray(model(x, training=False))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # batch norm and activations are folded and fused: no standalone MUL/ADD/RELU ops remain
    ops = [n.op for n in result.module.main]
    assert "batch_norm" not in ops and "relu6" not in ops


def test_bundled_digits_model_is_accurate_in_litert(tmp_path):
    result = convert_and_check(str(DIGITS), tmp_path)
    data = np.load(ROOT / "examples" / "digits_test.npz")
    runner = Interpreter(model_path=str(result.paths["tflite"])).get_signature_runner()
    out = runner(image=data["x"])["probs"]
    assert np.mean(out.argmax(-1) == data["y"]) > 0.95


def test_mobilenetv2(tmp_path):
    convert_and_check(application("MobileNetV2", (96, 96, 3)), tmp_path)


def test_transformer_encoder(tmp_path):
    keras.utils.set_random_seed(2)
    convert_and_check(transformer_encoder(2, 64, 4, seq_len=16, vocab=100), tmp_path)


def test_fp16_weights(tmp_path):
    keras.utils.set_random_seed(3)
    x = keras.Input((64,), name="features")
    h = keras.layers.Dense(256, activation="relu", name="fc1")(x)
    model = keras.Model(x, keras.layers.Dense(10, name="fc2")(h))
    f32 = tensorforge.convert(model, output=tmp_path / "a.tflite").artifacts["tflite"]
    result = tensorforge.convert(model, output=tmp_path / "b.tflite", fp16=True, verify=True)
    assert result.verification.ok, result.verification.table()
    assert len(result.artifacts["tflite"]) < 0.75 * len(f32)


def test_same_input_gives_byte_identical_output(tmp_path):
    model = small_cnn()
    a = tensorforge.convert(model, output=tmp_path / "a.tflite").artifacts["tflite"]
    b = tensorforge.convert(model, output=tmp_path / "b.tflite").artifacts["tflite"]
    assert a == b


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50", "EfficientNetB0"])
def test_applications_full_size(name, tmp_path):
    convert_and_check(application(name), tmp_path)


# -- command line -----------------------------------------------------------------------------

def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "tensorforge", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_compile_verify_and_inspect(tmp_path):
    out = tmp_path / "digits.tflite"
    proc = cli("compile", DIGITS, "--target", "tflite", "-o", out, "--verify", "--time-passes")
    assert proc.returncode == 0, proc.stderr
    assert "verification against keras" in proc.stdout and "tflite" in proc.stdout
    assert "Pass execution timing report" in proc.stderr
    info = cli("inspect", out)
    assert info.returncode == 0, info.stderr
    assert "image" in info.stdout and "probs" in info.stdout and "CONV_2D" in info.stdout
    assert "[?,8,8,1]" in info.stdout
    keras_info = cli("inspect", DIGITS)
    assert "Conv2D" in keras_info.stdout and "parameters" in keras_info.stdout


def unsupported_model():
    class Weird(keras.layers.Layer):
        def call(self, x):
            import tensorflow as tf

            return tf.math.special.dawsn(x) + tf.math.lgamma(x)

    x = keras.Input((4,), name="x")
    return keras.Model(x, Weird(name="weird")(keras.layers.Dense(4, name="d")(x)))


def test_unsupported_ops_all_listed_and_nothing_written(tmp_path):
    out = tmp_path / "model.tflite"
    out.write_bytes(b"previous artifact")
    with pytest.raises(tensorforge.ConversionError) as info:
        tensorforge.convert(unsupported_model(), output=out)
    msg = str(info.value)
    assert "Dawsn" in msg and "Lgamma" in msg and "weird" in msg
    assert out.read_bytes() == b"previous artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_cli_bad_inputs_are_one_line_errors(tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a zip file")
    proc = cli("compile", corrupt, "-o", tmp_path / "x.tflite")
    assert proc.returncode == 1 and proc.stderr.startswith("tensorforge: error:")
    assert not (tmp_path / "x.tflite").exists()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    proc = cli("inspect", bad)
    assert proc.returncode == 1 and "not a TFLite flatbuffer" in proc.stderr
    proc = cli("compile", DIGITS, "--target", "onnx", "-o", tmp_path / "y")
    assert proc.returncode == 1 and "valid targets: tflite" in proc.stderr
