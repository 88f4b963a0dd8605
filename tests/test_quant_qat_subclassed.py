"""QAT on a subclassed Keras model (qat/keras_inplace.py): layers intercepted in place, batch
norms folded into the conv before them during training, and the int8 LiteRT artifact
computing what was trained (scikit-learn's 8x8 digits, a few epochs)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
litert = pytest.importorskip("ai_edge_litert.interpreter")

import tensorforge  # noqa: E402
from tensorforge import quantization as tq  # noqa: E402
from tensorforge.qat.keras import QATConv2D, QATDense  # noqa: E402
from tensorforge.qat.keras_inplace import QATFoldedBatchNormalization, QATReLU  # noqa: E402
from op_helpers import tflite_ops  # noqa: E402

pytestmark = pytest.mark.skipif(keras.config.backend() != "tensorflow",
                                reason="QAT needs the Keras TensorFlow backend")

SPEC = [tf.TensorSpec([None, 8, 8, 1], tf.float32)]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int32)
    idx = np.random.default_rng(0).permutation(len(x))
    x, y = x[idx], y[idx]
    return x[:1440], y[:1440], x[1440:], y[1440:]     # 1440 train (45 batches), 357 test


class DigitsCNN(keras.Model):
    """conv -> BN -> ReLU layer, conv(bias) -> BN -> tf.nn.relu, pool, flatten, dense."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)
        self.bn1 = keras.layers.BatchNormalization()
        self.relu1 = keras.layers.ReLU()
        self.conv2 = keras.layers.Conv2D(32, 3, padding="same")
        self.bn2 = keras.layers.BatchNormalization()
        self.pool = keras.layers.MaxPooling2D()
        self.flatten = keras.layers.Flatten()
        self.fc = keras.layers.Dense(10)

    def call(self, x, training=False):
        x = self.relu1(self.bn1(self.conv1(x), training=training))
        x = tf.nn.relu(self.bn2(self.conv2(x), training=training))
        return self.fc(self.flatten(self.pool(x)))


def _compile(m):
    m.compile(optimizer=keras.optimizers.Adam(3e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """(float accuracy, QAT model, its logits on the test set, the int8 .tflite path)."""
    xtr, ytr, xte, yte = digits
    keras.utils.set_random_seed(0)
    model = _compile(DigitsCNN(name="digits_cnn"))
    model.fit(xtr, ytr, epochs=5, batch_size=32, verbose=0)
    float_acc = _acc(np.asarray(model(xte, training=False)), yte)
    bn1_var_before = model.bn1.moving_variance.numpy().copy()
    cfg = tq.QuantizationConfigurationMap(tq.scheme_registry.get_scheme("pixel_8bit_qat"))
    qat = tq.apply_quantization_on_model(model, cfg)
    qat.fit(xtr, ytr, epochs=3, batch_size=32, verbose=0)
    # The folded batch norm's moving statistics kept following the batches.
    assert not np.allclose(model.bn1.moving_variance.numpy(), bn1_var_before)
    path = tmp_path_factory.mktemp("qat_sub") / "digits_int8.tflite"
    tensorforge.convert(qat, target="tflite", output=str(path), input_signature=SPEC)
    return float_acc, qat, np.asarray(qat(xte, training=False)), path


def _acc(logits, y):
    return float(np.mean(np.argmax(logits, -1) == y))


def _run_tflite(path, x):
    it = litert.Interpreter(str(path))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(out["index"]), set(tflite_ops(path))


def test_layers_intercepted_in_place(trained):
    _, qat, _, _ = trained
    assert isinstance(qat, DigitsCNN)           # the same model object, its own call()
    assert type(qat.conv1) is QATConv2D and type(qat.conv2) is QATConv2D
    assert type(qat.bn1) is QATFoldedBatchNormalization and qat.conv1._folded_bn is qat.bn1
    assert type(qat.bn2) is QATFoldedBatchNormalization and qat.conv2._folded_bn is qat.bn2
    assert type(qat.relu1) is QATReLU and type(qat.fc) is QATDense
    # Fake-quants: the model input (before conv1), the ends of the conv chains (after relu1,
    # after bn2), and the dense's input (tf.nn.relu, pool and flatten are not seen by
    # layers: a range of its own) and output.
    assert qat.conv1.input_quant is not None and qat.conv1.output_quant is None
    assert qat.relu1.output_quant is not None and qat.bn2.output_quant is not None
    assert qat.conv2.input_quant is None
    assert qat.fc.input_quant is not None and qat.fc.output_quant is not None


def test_int8_artifact_computes_what_was_trained(trained, digits):
    float_acc, qat, ref, path = trained
    _, _, xte, yte = digits
    got, ops = _run_tflite(path, xte)
    # BN is folded: no MUL/ADD/SUB/RSQRT of a float batch norm, no float conv.
    assert ops <= {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "RELU", "MAX_POOL_2D", "RESHAPE",
                   "FULLY_CONNECTED"}, ops
    assert not ops & {"MUL", "ADD", "SUB", "RSQRT", "BATCH_NORMALIZATION"}
    qat_acc, int8_acc = _acc(ref, yte), _acc(got, yte)
    print(f"float {float_acc:.4f}  qat {qat_acc:.4f}  int8 litert {int8_acc:.4f}")
    assert qat_acc > 0.9
    assert abs(int8_acc - qat_acc) <= 0.005
    fq = qat.fc.output_quant
    step = (float(fq.range_max.numpy()) - float(fq.range_min.numpy())) / 255
    diff = np.abs(got - ref)
    assert diff.max() <= step * 1.01, diff.max() / step      # within one output step


def test_weights_round_trip_and_bn_freeze(trained, digits, tmp_path):
    _, qat, ref, _ = trained
    xtr, ytr, xte, _ = digits
    qat.save_weights(str(tmp_path / "qat.weights.h5"))
    again = DigitsCNN(name="digits_cnn")
    again(xte[:1])
    tq.apply_quantization_on_model(again, tq.QuantizationConfigurationMap("pixel_8bit_qat"))
    again.load_weights(str(tmp_path / "qat.weights.h5"))
    np.testing.assert_array_equal(np.asarray(again(xte, training=False)), ref)
    # A frozen batch norm (trainable=False) keeps its moving statistics during QAT.
    again.bn1.trainable = False
    var = again.bn1.moving_variance.numpy().copy()
    _compile(again).fit(xtr[:64], ytr[:64], epochs=1, batch_size=32, verbose=0)
    np.testing.assert_array_equal(again.bn1.moving_variance.numpy(), var)


def test_fold_off_keeps_bn_and_unbuilt_model_is_refused(digits):
    _, _, xte, _ = digits
    m = DigitsCNN(name="digits_cnn")
    with pytest.raises(tensorforge.ConversionError, match="has not been called"):
        tq.apply_quantization_on_model(m)
    tq.apply_quantization_on_model(m, fold_batch_norm=False, sample_inputs=xte[:1])
    assert type(m.bn1) is keras.layers.BatchNormalization
    assert type(m.conv1) is QATConv2D and getattr(m.conv1, "_folded_bn", None) is None
    assert m.conv1.output_quant is not None
