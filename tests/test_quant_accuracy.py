"""Accuracy of quantized artifacts in LiteRT: a CNN trained here on scikit-learn's digits,
quantized with each scheme, must stay within the issue's budget of the float model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter

import tensorforge
from tensorforge import quantization as tq
from tensorforge.tools.bench.models import digits_cnn, digits_split


@pytest.fixture(scope="module")
def digits():
    return digits_split()


@pytest.fixture(scope="module")
def trained(digits):
    x_train, y_train, x_test, y_test = digits
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    float_acc = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
    assert float_acc >= 0.95, f"the float model only reaches {float_acc:.3f}"
    return model, float_acc


def litert_accuracy(path, x, y) -> float:
    interp = Interpreter(model_path=str(path))
    runner = interp.get_signature_runner("serving_default")
    (in_name,) = runner.get_input_details()
    probs = runner(**{in_name: x})
    return float(np.mean(np.argmax(next(iter(probs.values())), -1) == y))


def calibration_samples(x_train, n=100):
    return [x_train[i:i + 1] for i in range(n)]


def tensor_types(path) -> set[int]:
    model = fb.ModelT.InitFromPackedBuf(open(path, "rb").read(), 0)
    return {t.type for t in model.subgraphs[0].tensors}


@pytest.mark.parametrize("scheme, budget", [
    ("int8", 0.01), ("dynamic-int8", 0.01), ("int16x8", 0.01),
])
def test_ptq_accuracy_in_litert(tmp_path, digits, trained, scheme, budget):
    x_train, _, x_test, y_test = digits
    model, float_acc = trained
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 quantization=scheme,
                                 calibration_data=calibration_samples(x_train),
                                 progress=False)
    acc = litert_accuracy(result.paths["tflite"], x_test, y_test)
    print(f"{scheme}: float {float_acc:.4f}, LiteRT {acc:.4f}")
    assert acc >= float_acc - budget, (scheme, float_acc, acc)
    types = tensor_types(result.paths["tflite"])
    if scheme == "int8":
        assert fb.TensorType.INT8 in types and fb.TensorType.INT32 in types
    elif scheme == "int16x8":
        assert fb.TensorType.INT16 in types and fb.TensorType.INT64 in types
    else:
        assert fb.TensorType.INT8 in types and fb.TensorType.FLOAT32 in types


def test_int8_keeps_unquantizable_ops_float_and_reports_them(digits, trained):
    x_train, *_ = digits
    model, _ = trained
    module = tensorforge.from_keras(model)
    cfg = tq.QuantizationConfigurationMap("int8")
    cfg.set_config("probs", None)
    from tensorforge.tools.convert import optimize

    result = tq.quantize_module(optimize(module, None), cfg,
                                calibration_samples(x_train, 8), progress=False)
    floats = {scope for scope, _, _ in result.float_nodes()}
    assert "probs" in floats


def test_qat_accuracy_in_litert(tmp_path, digits, trained):
    """Two epochs of quantization-aware training from the float weights, then the int8
    artifact from the learned ranges (no calibration data)."""
    x_train, y_train, x_test, y_test = digits
    model, float_acc = trained
    keras.utils.set_random_seed(1)
    qat = tq.apply_quantization_on_model(model, tq.QuantizationConfigurationMap("int8-qat"))
    qat.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    qat.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    result = tensorforge.convert(qat, target="tflite", output=tmp_path / "qat.tflite",
                                 progress=False)
    acc = litert_accuracy(result.paths["tflite"], x_test, y_test)
    print(f"QAT: float {float_acc:.4f}, LiteRT int8 {acc:.4f}")
    assert acc >= float_acc - 0.005, (float_acc, acc)
    model_fb = fb.ModelT.InitFromPackedBuf(result.paths["tflite"].read_bytes(), 0)
    sg = model_fb.subgraphs[0]
    conv_codes = {getattr(fb.BuiltinOperator, c) for c in ("CONV_2D", "DEPTHWISE_CONV_2D",
                                                           "FULLY_CONNECTED")}
    int8_ops = [op for op in sg.operators
                if model_fb.operatorCodes[op.opcodeIndex].builtinCode in conv_codes
                and sg.tensors[op.inputs[0]].type == fb.TensorType.INT8]
    assert len(int8_ops) >= 3   # conv1, dw2, fc1 compute on int8
