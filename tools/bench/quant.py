"""Quantization benchmark: tensorforge full-integer post-training quantization vs
`tf.lite.TFLiteConverter` (Optimize.DEFAULT + representative_dataset + TFLITE_BUILTINS_INT8),
side by side in one process on the same models and the SAME 100 calibration samples.

Per model: quality of each int8 artifact in LiteRT (held-out accuracy for the digits CNN
trained here; output SQNR in dB against the float Keras model for the random-weight models),
conversion + calibration seconds, LiteRT latency (2 threads, batch 1) and artifact bytes, each
with the ratio tensorforge / TFLiteConverter (goals: SQNR >= anchor, seconds <= 1.0,
latency <= 1.0).

`TENSORFORGE_BENCH_QUANT_MODELS=digits,MobileNetV2` restricts the run to a subset (keys:
digits, MobileNetV2, ResNet50, encoder), for development."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .models import condition_batchnorm, digits_cnn, digits_split

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CALIBRATION_SAMPLES = 100
HELD_OUT = 16           # random held-out inputs for SQNR
LATENCY_REPEATS = 30
BN_STATS_BATCH = 16     # calibration samples whose batch statistics become the BN statistics

QUANT_MODELS = ("digits", "MobileNetV2", "ResNet50", "encoder")
LABELS = {"digits": "digits CNN (trained)", "MobileNetV2": "MobileNetV2 (224)",
          "ResNet50": "ResNet50 (224)", "encoder": "encoder4 (d=256, 4 heads)"}


def selected_models(names=None) -> list[str]:
    """The model keys to run: `names`, else $TENSORFORGE_BENCH_QUANT_MODELS (comma separated,
    case-insensitive), else all of QUANT_MODELS."""
    if names is None:
        env = os.environ.get("TENSORFORGE_BENCH_QUANT_MODELS", "").strip()
        names = [n.strip() for n in env.split(",") if n.strip()] if env else list(QUANT_MODELS)
    by_lower = {k.lower(): k for k in QUANT_MODELS}
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown:
        raise ValueError(f"unknown quantization bench model(s) {unknown}; "
                         f"choose from {list(QUANT_MODELS)}")
    return [by_lower[n.lower()] for n in names]


# ---------------------------------------------------------------------------------- models

def _prepare(key: str) -> dict:
    """Builds (and for digits trains) one model; returns it with its calibration samples
    (list of batch-1 arrays), held-out inputs and labels/reference outputs."""
    import keras

    from .models import transformer_encoder

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if key == "digits":
        x_train, y_train, x_test, y_test = digits_split()
        model = digits_cnn()
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
        return {"model": model, "calib": [x_train[i:i + 1] for i in range(CALIBRATION_SAMPLES)],
                "x_test": x_test, "y_test": y_test}
    if key == "encoder":
        model = transformer_encoder(4, 256, 4)
        seq_len, vocab = model.inputs[0].shape[1], 1000
        data = rng.integers(0, vocab, (CALIBRATION_SAMPLES + HELD_OUT, seq_len)).astype(np.int32)
    else:
        model = getattr(keras.applications, key)(weights=None, input_shape=(224, 224, 3),
                                                 classifier_activation=None)
        data = rng.uniform(-1, 1, (CALIBRATION_SAMPLES + HELD_OUT, 224, 224, 3)) \
            .astype(np.float32)
        condition_batchnorm(model, data[:BN_STATS_BATCH])
    calib = [data[i:i + 1] for i in range(CALIBRATION_SAMPLES)]
    held = data[CALIBRATION_SAMPLES:]
    want = np.asarray(model(held, training=False))
    return {"model": model, "calib": calib, "held": held, "want": want}


# ------------------------------------------------------------------------------ converters

def anchor_int8(model, calib) -> tuple[bytes, str]:
    """TFLiteConverter full-integer PTQ (float I/O, like tensorforge's default) on `calib`;
    falls back to also allowing float TFLITE_BUILTINS when full-int fails. Returns the
    flatbuffer and a note ("" or the fallback reason)."""
    import tensorflow as tf

    def run(ops) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s] for s in calib)
        converter.target_spec.supported_ops = ops
        return converter.convert()

    try:
        return run([tf.lite.OpsSet.TFLITE_BUILTINS_INT8]), ""
    except Exception as e:  # noqa: BLE001 -- reported in the row
        reason = _one_line(e)
        return (run([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]),
                f"anchor: full-int failed ({reason}); fell back to +TFLITE_BUILTINS")


def tensorforge_int8(model, calib) -> bytes:
    """tensorforge int8 PTQ (float I/O) calibrated on `calib`; returns the .tflite bytes."""
    from ..convert import convert

    with tempfile.TemporaryDirectory() as tmp:
        result = convert(model, target="tflite", output=Path(tmp) / "m.tflite",
                         quantization="int8", calibration_data=calib, progress=False)
        return result.paths["tflite"].read_bytes()


def anchor_float(model) -> bytes:
    """Plain TFLiteConverter float conversion (the float accuracy reference)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


# -------------------------------------------------------------------------------- measures

def _run_all(data: bytes, xs: np.ndarray) -> np.ndarray:
    """Runs a LiteRT model one sample at a time (batch 1, 2 threads) over `xs`."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=2)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]["index"]
    outs = []
    for i in range(len(xs)):
        interp.set_tensor(inp["index"], xs[i:i + 1].astype(inp["dtype"]))
        interp.invoke()
        outs.append(np.array(interp.get_tensor(out), dtype=np.float32))
    return np.concatenate(outs)


def sqnr_db(got: np.ndarray, want: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `got` against `want`, in dB."""
    want = want.astype(np.float64)
    noise = np.sum((got.astype(np.float64) - want) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(want ** 2) / noise))


def _quality(key: str, prep: dict, data: bytes) -> float:
    if key == "digits":
        probs = _run_all(data, prep["x_test"])
        return float(np.mean(np.argmax(probs, -1) == prep["y_test"]))
    return sqnr_db(_run_all(data, prep["held"]), prep["want"])


def _measure(key: str, prep: dict, convert_fn) -> tuple[dict, bytes | None]:
    """Converts with `convert_fn` and measures quality, seconds and bytes; returns the
    measures and the flatbuffer. A failure at any step is recorded in "error", not raised."""
    side = {"sec": None, "quality": None, "latency_ms": None, "bytes": None, "error": None,
            "note": ""}
    data = None
    try:
        out, side["sec"] = _timed(convert_fn, prep["model"], prep["calib"])
        data, side["note"] = out if isinstance(out, tuple) else (out, "")
        side["bytes"] = len(data)
        side["quality"] = _quality(key, prep, data)
    except Exception as e:  # noqa: BLE001 -- the row reports it; the bench goes on
        side["error"] = _one_line(e, 400)
    return side, data


def paired_latency(models: dict[str, bytes], x: np.ndarray,
                   repeats: int = LATENCY_REPEATS) -> dict[str, float]:
    """Median LiteRT invoke milliseconds (2 threads, batch `x`) of each model, the models'
    invokes interleaved run by run. Why interleaved: this machine is shared, and measuring
    one model after the other lets a load change between them decide the ratio; each
    model's single-run timing is `convert._latency`'s (3 warm-up runs excluded)."""
    from ai_edge_litert.interpreter import Interpreter

    runners = {}
    for name, data in models.items():
        interp = Interpreter(model_content=data, num_threads=2)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        runners[name] = interp
    times: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(repeats + 3):
        for name, interp in runners.items():
            start = time.perf_counter()
            interp.invoke()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def _warm_up() -> None:
    """Converts a tiny model with both tools (untimed) so neither pays TensorFlow's one-off
    start-up costs inside the first measured row."""
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, "relu")(inputs)))
    calib = [np.random.default_rng(i).uniform(-1, 1, (1, 4)).astype(np.float32)
             for i in range(4)]
    for fn in (anchor_int8, tensorforge_int8):
        try:
            fn(model, calib)
        except Exception:  # noqa: BLE001 -- the real rows report failures
            pass


def bench_quantization(names=None) -> list[dict]:
    """Raw numbers of the quantization bench, one dict per model: "model" (key), "label",
    "metric" ("accuracy" or "SQNR dB"), "float" (float LiteRT accuracy for digits, else
    None), and "tensorforge" / "anchor" dicts with sec, quality, latency_ms, bytes, error
    (one-line message or None) and note."""
    _warm_up()
    rows = []
    for key in selected_models(names):
        prep = _prepare(key)
        row = {"model": key, "label": LABELS[key],
               "metric": "accuracy" if key == "digits" else "SQNR dB", "float": None}
        if key == "digits":
            row["float"] = _quality(key, prep, anchor_float(prep["model"]))
        row["anchor"], theirs = _measure(key, prep, anchor_int8)
        row["tensorforge"], ours = _measure(key, prep, tensorforge_int8)
        built = {who: data for who, data in (("anchor", theirs), ("tensorforge", ours))
                 if data is not None}
        x = prep["x_test"][:1] if key == "digits" else prep["held"][:1]
        try:
            for who, ms in paired_latency(built, x).items():
                row[who]["latency_ms"] = ms
        except Exception as e:  # noqa: BLE001 -- reported in the row
            for who in built:
                row[who]["error"] = row[who]["error"] or f"latency: {_one_line(e)}"
        rows.append(row)
    return rows


# ---------------------------------------------------------------- quantized training

QT_STEPS, QT_BATCH = 300, 64


def _litert_accuracy(data: bytes, x, y) -> float:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data).get_signature_runner("serving_default")
    (name,) = runner.get_input_details()
    return float(np.mean(np.argmax(next(iter(runner(**{name: x}).values())), -1) == y))


def _qt_flax_row(xtr, ytr, xte, yte, conv: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen as nn

    import tensorforge
    from tensorforge.qat.quantized_training import (QuantizedConv, QuantizedDense,
                                                    quantized_training)

    class Net(nn.Module):
        qt: object = None

        @nn.compact
        def __call__(self, x, train=False):
            if conv:
                x = QuantizedConv(16, (3, 3), qt=self.qt, activation=nn.relu,
                                  quantize_input=True, name="conv0")(x, train)
                x = QuantizedConv(16, (3, 3), strides=2, qt=self.qt, activation=nn.relu,
                                  name="conv1")(x, train)
                x = x.reshape(x.shape[0], -1)
            x = QuantizedDense(64, qt=self.qt, activation=nn.relu, quantize_input=not conv,
                               name="fc0")(x, train)
            return QuantizedDense(10, qt=self.qt, name="fc1")(x, train)

    if conv:
        xtr, xte = xtr.reshape(-1, 8, 8, 1), xte.reshape(-1, 8, 8, 1)
    idx = np.random.default_rng(0).integers(0, len(xtr), (QT_STEPS, QT_BATCH))

    def train(model):
        v = model.init(jax.random.key(0), xtr[:QT_BATCH])
        params, stats = v["params"], v.get("quant_stats", {})
        opt = optax.adam(3e-3)
        state = opt.init(params)

        @jax.jit
        def step(params, stats, state, xb, yb):
            def loss(p):
                logits, upd = model.apply({"params": p, "quant_stats": stats}, xb, train=True,
                                          mutable=["quant_stats"])
                return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), upd
            (_, upd), g = jax.value_and_grad(loss, has_aux=True)(params)
            updates, state = opt.update(g, state, params)
            return optax.apply_updates(params, updates), upd.get("quant_stats", stats), state

        times = []
        for i in range(QT_STEPS):
            start = time.perf_counter()
            params, stats, state = jax.block_until_ready(
                step(params, stats, state, xtr[idx[i]], ytr[idx[i]]))
            times.append(time.perf_counter() - start)
        v = {"params": params, **({"quant_stats": stats} if stats else {})}
        acc = float(np.mean(np.argmax(model.apply(v, xte), -1) == yte))
        return v, acc, statistics.median(times[10:])

    _, acc_f, t_f = train(Net(None))
    qt = quantized_training()
    vq, acc_q, t_q = train(Net(qt))
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, " + ("8, 8, 1" if conv else "64")),
                                jnp.float32)
    with tempfile.TemporaryDirectory() as tmp:
        result = tensorforge.convert(Net(qt.for_export()).apply, target="tflite",
                                     output=Path(tmp) / "m.tflite", example_args=[spec],
                                     params=vq, progress=False)
        acc_i = _litert_accuracy(result.paths["tflite"].read_bytes(), xte, yte)
    return {"model": f"Flax {'CNN' if conv else 'MLP'}", "float": acc_f, "quantized": acc_q,
            "int8_litert": acc_i, "step_ms_float": t_f * 1e3, "step_ms_quantized": t_q * 1e3}


def _qt_keras_row(xtr, ytr, xte, yte) -> dict:
    import keras

    import tensorforge
    from tensorforge.qat.quantized_training import quantized_training
    from tensorforge.qat.quantized_training_keras import to_qat_model

    xtr, xte = xtr.reshape(-1, 8, 8, 1), xte.reshape(-1, 8, 8, 1)

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential([
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(64, activation="relu", name="fc1"),
            keras.layers.Dense(10, activation="softmax", name="probs")], name="cnn")

    idx = np.random.default_rng(0).integers(0, len(xtr), (QT_STEPS, QT_BATCH))

    def train(model):
        model.compile(optimizer=keras.optimizers.Adam(3e-3),
                      loss="sparse_categorical_crossentropy", jit_compile=False)
        times = []
        for i in range(QT_STEPS):
            start = time.perf_counter()
            model.train_on_batch(xtr[idx[i]], ytr[idx[i]])
            times.append(time.perf_counter() - start)
        acc = float(np.mean(np.argmax(model.predict(xte, verbose=0), -1) == yte))
        return acc, statistics.median(times[10:])

    acc_f, t_f = train(build())
    qmodel = quantized_training(build())
    acc_q, t_q = train(qmodel)
    with tempfile.TemporaryDirectory() as tmp:
        result = tensorforge.convert(to_qat_model(qmodel), target="tflite",
                                     output=Path(tmp) / "k.tflite", progress=False)
        acc_i = _litert_accuracy(result.paths["tflite"].read_bytes(), xte, yte)
    return {"model": "Keras CNN", "float": acc_f, "quantized": acc_q, "int8_litert": acc_i,
            "step_ms_float": t_f * 1e3, "step_ms_quantized": t_q * 1e3}


def bench_quantized_training() -> list[dict]:
    """Quantized training (`tq.quantized_training`, int8 forward and backward products) against
    float training of the same model on the same sklearn digits batches, steps and seed: one
    dict per model with the held-out accuracy of the float model ("float"), the
    quantized-trained model ("quantized") and its calibration-free int8 LiteRT artifact
    ("int8_litert"), and the median train-step milliseconds after warm-up (jit / tf.function)
    of both ("step_ms_float", "step_ms_quantized"; ratio = quantized / float)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)
    split = (x[:1400], y[:1400], x[1400:], y[1400:])
    rows = [_qt_flax_row(*split, conv=False), _qt_flax_row(*split, conv=True),
            _qt_keras_row(*split)]
    for r in rows:
        r["step_ratio"] = r["step_ms_quantized"] / r["step_ms_float"]
    return rows


# ---------------------------------------------------------------------------------- table

def _pair(a, b, fmt) -> str:
    show = lambda v: "—" if v is None else fmt(v)  # noqa: E731
    return f"{show(a)} / {show(b)}"


def _ratio(a, b, digits: int = 2) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.{digits}f}"


def quantization_table(console, names=None) -> list[dict]:
    """Runs `bench_quantization` and prints it as one rich Table; returns the rows."""
    from rich.table import Table

    rows = bench_quantization(names)
    table = Table(title="int8 post-training quantization: tensorforge vs TFLiteConverter "
                        f"(same process, same {CALIBRATION_SAMPLES} calibration samples; "
                        "ratio = tensorforge / TFLiteConverter; goals: quality >= anchor, "
                        "seconds and latency ratio <= 1.0)")
    for col in ("model", "metric", "float", "int8 (tf / anchor)", "convert+calib s (tf / anchor)",
                "ratio", "LiteRT ms, 2 threads", "ratio", "bytes (tf / anchor)", "ratio",
                "notes"):
        table.add_column(col, justify="left" if col in ("model", "notes") else "right",
                         overflow="fold")
    for r in rows:
        t, a = r["tensorforge"], r["anchor"]
        qfmt = (lambda v: f"{v:.4f}") if r["metric"] == "accuracy" else (lambda v: f"{v:.1f}")
        notes = [n for n in (a["note"],) if n]
        notes += [f"{who} FAILED: {s['error']}" for who, s in (("tensorforge", t), ("anchor", a))
                  if s["error"]]
        table.add_row(r["label"], r["metric"],
                      "—" if r["float"] is None else f"{r['float']:.4f}",
                      _pair(t["quality"], a["quality"], qfmt),
                      _pair(t["sec"], a["sec"], lambda v: f"{v:.2f}"), _ratio(t["sec"], a["sec"]),
                      _pair(t["latency_ms"], a["latency_ms"],
                            lambda v: f"{v:.3f}" if v < 1 else f"{v:.2f}"),
                      _ratio(t["latency_ms"], a["latency_ms"]),
                      _pair(t["bytes"], a["bytes"], lambda v: f"{v:,}"),
                      _ratio(t["bytes"], a["bytes"], 3), "; ".join(notes))
    console.print(table)
    return rows


if __name__ == "__main__":
    from rich.console import Console

    quantization_table(Console(width=max(Console().width, 200)))


def quantized_training_table(console) -> list[dict]:
    """Runs `bench_quantized_training` and prints it as one rich Table; returns the rows."""
    from rich.table import Table

    rows = bench_quantized_training()
    table = Table(title=(
        "Quantized training (int8 products forward and backward) vs float training, sklearn "
        "digits, same batches, steps and seed; int8 LiteRT artifact converted without "
        "calibration; step time = median after warm-up (this CPU has no int8 matrix units)"))
    for col in ("model", "float acc", "quantized-training acc", "int8 LiteRT acc",
                "step ms float / quantized", "ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['float']:.3f}", f"{r['quantized']:.3f}",
                      f"{r['int8_litert']:.3f}",
                      f"{r['step_ms_float']:.2f} / {r['step_ms_quantized']:.2f}",
                      f"{r['step_ratio']:.2f}")
    console.print(table)
    return rows
