"""int8 on the layers that used to break it (Conv2DTranspose, Dense with a fused tanh, Dense
with a sigmoid) and a small UNet: each converts, runs in LiteRT with integer kernels, and
keeps at least TFLiteConverter's SQNR against the float model on the same calibration data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from ai_edge_litert import schema_py_generated as fb  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import tensorforge  # noqa: E402

L = keras.layers


def _unet():
    inputs = L.Input((32, 32, 3), name="image")
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="enc")(inputs)
    b = L.Conv2D(16, 3, padding="same", activation="relu", name="mid")(L.MaxPool2D()(a))
    up = L.Conv2DTranspose(8, 2, strides=2, name="up")(b)
    return keras.Model(inputs, L.Conv2D(2, 1, name="head")(L.Concatenate()([a, up])))


def _transpose():
    inputs = L.Input((8, 8, 4), name="image")
    h = L.Conv2DTranspose(6, 3, strides=2, padding="same", activation="relu", name="up")(inputs)
    return keras.Model(inputs, L.Conv2DTranspose(3, 3, strides=1, name="up2")(h))


def _dense(activation):
    def build():
        inputs = L.Input((16,), name="x")
        h = L.Dense(32, activation="relu", name="fc1")(inputs)
        return keras.Model(inputs, L.Dense(8, activation=activation, name="fc2")(h))
    return build


MODELS = {"conv2d_transpose": _transpose, "dense_tanh": _dense("tanh"),
          "dense_sigmoid": _dense("sigmoid"), "unet": _unet}


def _sqnr(want, got) -> float:
    return 10 * np.log10(np.sum(want.astype(np.float64) ** 2)
                         / max(np.sum((want - got).astype(np.float64) ** 2), 1e-30))


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=data)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    return np.concatenate([list(runner(**{name: row[None]}).values())[0] for row in x])


def _anchor(model, calibration) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([c] for c in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def _float_ops(data: bytes) -> set[str]:
    """Builtins of the artifact that compute on float32 tensors (besides (DE)QUANTIZE)."""
    model = fb.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    sg = model.subgraphs[0]
    out = set()
    for op in sg.operators:
        name = names[model.operatorCodes[op.opcodeIndex].builtinCode]
        if name not in ("QUANTIZE", "DEQUANTIZE") and any(
                sg.tensors[i].type == fb.TensorType.FLOAT32 for i in op.outputs):
            out.add(name)
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_int8_layer_runs_in_litert_at_least_as_well_as_the_anchor(tmp_path, name):
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    rng = np.random.default_rng(0)
    shape = tuple(model.inputs[0].shape[1:])
    calibration = [rng.uniform(-1, 1, (1, *shape)).astype(np.float32) for _ in range(32)]
    test = rng.uniform(-1, 1, (16, *shape)).astype(np.float32)
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 quantization="int8", calibration_data=calibration,
                                 verify=True, progress=False)
    assert result.verification.ok, result.verification.table()
    ours = result.artifacts["tflite"]
    assert _float_ops(ours) == set(), "every layer should run on integer kernels"
    want = model.predict(test, verbose=0)
    ours_sqnr = _sqnr(want, _run(ours, test))
    theirs_sqnr = _sqnr(want, _run(_anchor(model, calibration), test))
    print(f"{name}: SQNR tensorforge {ours_sqnr:.1f} dB, TFLiteConverter {theirs_sqnr:.1f} dB")
    assert ours_sqnr >= theirs_sqnr - 0.1, (ours_sqnr, theirs_sqnr)


class _Clip(L.Layer):
    def call(self, x):
        return keras.ops.clip(x, -0.7, 1.3)


def test_a_quantized_op_without_an_integer_kernel_runs_in_float_and_says_so(tmp_path):
    """clip(-0.7, 1.3) becomes minimum/maximum against constants whose params differ from
    the activation's, which TFLite's raw-code MINIMUM/MAXIMUM cannot run: the writer keeps
    those two ops float between DEQUANTIZE and QUANTIZE instead of failing, the result notes
    it, and the artifact still computes what the quantized IR does."""
    keras.utils.set_random_seed(0)
    inputs = L.Input((16,), name="x")
    model = keras.Model(inputs, L.Dense(4, name="out")(_Clip(name="clip")(
        L.Dense(8, name="fc")(inputs))))
    rng = np.random.default_rng(0)
    calibration = [rng.normal(size=(1, 16)).astype(np.float32) for _ in range(16)]
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 quantization="int8", calibration_data=calibration,
                                 verify=True, progress=False)
    assert result.verification.ok, result.verification.table()
    assert _float_ops(result.artifacts["tflite"]) == {"MINIMUM", "MAXIMUM"}
    notes = [n for n in result.notes if "runs in float" in n]
    assert len(notes) == 2 and all("clip/" in n for n in notes), result.notes


def test_int8_depthwise_with_a_depth_multiplier_runs_in_litert(tmp_path):
    """A per-tensor depthwise filter (depth multiplier 2) gets a per-tensor zero bias:
    XNNPACK refuses a per-channel bias beside a per-tensor filter."""
    keras.utils.set_random_seed(0)
    inputs = L.Input((8, 8, 3), name="image")
    model = keras.Model(inputs, L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False,
                                                  name="dw")(inputs))
    rng = np.random.default_rng(0)
    calibration = [rng.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32) for _ in range(16)]
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 quantization="int8", calibration_data=calibration,
                                 verify=True, progress=False)
    assert result.verification.ok, result.verification.table()
