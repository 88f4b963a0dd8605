"""Keras -> IR -> SavedModel and TF.js, end to end: `tf.saved_model.load` and Node.js
@tensorflow/tfjs agree with Keras within 1e-4 relative (float32); uint8 weight compression
shrinks TF.js weights to about a quarter within the error it implies."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.tools.bench.models import application, transformer_encoder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits_cnn.keras"


def check_all_targets(model, out: Path):
    result = tensorforge.convert(model, target=["savedmodel", "tfjs"], output=out, verify=True)
    v = result.verification
    assert {r.runtime for r in v.rows} == {"ir", "savedmodel", "tfjs"}
    assert v.ok, v.table()
    for r in v.rows:
        assert r.max_rel <= 1e-4
    return result


def small_cnn():
    keras.utils.set_random_seed(4)
    x = keras.Input((12, 12, 3), name="pixels")
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(6.0, name="relu1")(h)
    h = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(h)
    h = keras.layers.AveragePooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(4, activation="softmax", name="probs")(h)
    return keras.Model(x, out, name="small_cnn")


def test_small_cnn_savedmodel_and_tfjs(tmp_path):
    result = check_all_targets(small_cnn(), tmp_path / "out")
    sm = result.paths["savedmodel"]
    import tensorflow as tf

    fn = tf.saved_model.load(str(sm)).signatures["serving_default"]
    assert fn.structured_input_signature[1]["pixels"].shape.as_list() == [None, 12, 12, 3]
    graph_ops = {op.type for op in fn.graph.get_operations()}
    assert "XlaCallModule" not in graph_ops
    assert (result.paths["tfjs"] / "model.json").exists()


def test_savedmodel_source_to_every_target(tmp_path):
    """A SavedModel source (its module metadata names the signature it came from) converts
    to every target and verifies, outputs keeping their signature names in TF.js too."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
        def serve(self, features):
            return {"scores": tf.nn.relu6(tf.matmul(features, self.w)),
                    "total": tf.reduce_sum(features, axis=1)}

    net = Net()
    tf.saved_model.save(net, str(tmp_path / "sm"), signatures={"serving_default": net.serve})
    result = tensorforge.convert(str(tmp_path / "sm"), target="all", output=tmp_path / "out",
                                 verify=True)
    assert {r.runtime for r in result.verification.rows} >= {"tflite", "savedmodel", "tfjs"}
    assert result.verification.ok, result.verification.table()


def test_mobilenetv2_all_targets(tmp_path):
    check_all_targets(application("MobileNetV2", (96, 96, 3)), tmp_path / "mnv2")


def test_transformer_encoder_all_targets(tmp_path):
    keras.utils.set_random_seed(5)
    check_all_targets(transformer_encoder(2, 64, 4, seq_len=16, vocab=100), tmp_path / "enc")


def test_tfjs_uint8_compression(tmp_path):
    model = application("MobileNetV2", (96, 96, 3))
    plain = tensorforge.convert(model, target="tfjs", output=tmp_path / "f32")
    small = tensorforge.convert(model, target="tfjs", output=tmp_path / "u8", verify=True,
                                tfjs_quantize="uint8")
    shard_bytes = lambda d: sum(p.stat().st_size for p in d.glob("*.bin"))  # noqa: E731
    ratio = shard_bytes(small.paths["tfjs"]) / shard_bytes(plain.paths["tfjs"])
    assert 0.24 < ratio < 0.27
    assert small.verification.ok, small.verification.table()


def test_tfjs_and_savedmodel_byte_identical(tmp_path):
    model = small_cnn()
    a = tensorforge.convert(model, target="tfjs", output=tmp_path / "a").paths["tfjs"]
    b = tensorforge.convert(model, target="tfjs", output=tmp_path / "b").paths["tfjs"]
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_failed_compile_leaves_nothing_and_clobbers_nothing(tmp_path):
    class Weird(keras.layers.Layer):
        def call(self, x):
            import tensorflow as tf

            return tf.math.lgamma(x)

    x = keras.Input((4,), name="x")
    bad = keras.Model(x, Weird(name="weird")(x))
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.json").write_text("{}")  # an earlier TF.js artifact
    with pytest.raises(tensorforge.ConversionError, match="Lgamma"):
        tensorforge.convert(bad, target="all", output=out)
    assert sorted(p.name for p in out.iterdir()) == ["model.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    # an output directory holding something else is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(tensorforge.ConversionError, match="refusing to replace"):
        tensorforge.convert(small_cnn(), target="savedmodel", output=other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_cli_all_targets_and_unknown_target(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tensorforge", "compile", str(DIGITS),
                           "--target", "all", "-o", str(tmp_path / "all"), "--verify"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for runtime in ("tflite", "savedmodel", "tfjs"):
        assert f"\n{runtime} " in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tensorforge", "compile", str(DIGITS),
                           "--target", "coreml", "-o", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "valid targets: tflite, savedmodel, tfjs, all" in proc.stderr
    assert "Traceback" not in proc.stderr
