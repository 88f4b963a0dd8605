"""Conversion benchmark: tensorforge vs `tf.lite.TFLiteConverter.from_keras_model`, side by side
in one process on the same Keras models.

For each model: conversion seconds, artifact bytes, LiteRT latency (2 threads, median of
repeated invokes) and max abs error against Keras, each reported with the ratio
tensorforge / TFLiteConverter (goals: seconds <= 0.1, bytes <= 1.0, latency <= 1.0)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .models import BENCH_MODELS, RECURRENT_BENCH_MODELS, application, tiny_kerashub_bert

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _sample(model, seed=0):
    rng = np.random.default_rng(seed)
    x = model.inputs[0]
    shape = [1 if d is None else d for d in x.shape]
    if "int" in str(x.dtype):
        return rng.integers(0, 1000, shape).astype(np.int32)
    return rng.standard_normal(shape).astype(np.float32)


def _latency(data: bytes, x: np.ndarray, repeats: int = 200) -> tuple[float, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=2)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    if list(inp["shape"]) != list(x.shape):
        interp.resize_tensor_input(inp["index"], x.shape)
        interp.allocate_tensors()
    out_index = interp.get_output_details()[0]["index"]
    times = []
    for i in range(repeats + 3):
        interp.set_tensor(inp["index"], x)
        start = time.perf_counter()
        interp.invoke()
        if i >= 3:  # warm-up runs excluded
            times.append(time.perf_counter() - start)
    return statistics.median(times), interp.get_tensor(out_index)


def bench_model(name: str, build) -> dict:
    import tensorflow as tf

    from ..convert import convert

    model = build()
    x = _sample(model)
    want = np.asarray(model(x, training=False))

    start = time.perf_counter()
    theirs = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    t_theirs = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ours = convert(model, target="tflite", output=Path(tmp) / "m.tflite").artifacts["tflite"]
        t_ours = time.perf_counter() - start

    lat_theirs, out_theirs = _latency(theirs, x)
    lat_ours, out_ours = _latency(ours, x)
    return {"model": name,
            "sec": (t_ours, t_theirs), "bytes": (len(ours), len(theirs)),
            "latency_ms": (lat_ours * 1e3, lat_theirs * 1e3),
            "err": (float(np.max(np.abs(out_ours - want))),
                    float(np.max(np.abs(out_theirs - want))))}


def bench_conversion(names=None) -> list[dict]:
    return [bench_model(n, BENCH_MODELS[n]) for n in (names or BENCH_MODELS)]


def bench_recurrent(names=None) -> list[dict]:
    """Keras recurrent layers at a fixed [1, time, features] on both sides (TFLite's fused
    sequence kernels need a static batch): tensorforge with input_shapes against
    TFLiteConverter on the frozen concrete function of that shape. (from_keras_model, with a
    dynamic batch, cannot convert stacked Keras 3 LSTMs without Select TF ops; at a fixed
    shape it writes a WHILE loop.)"""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2

    from ..convert import convert

    rows = []
    for name in names or RECURRENT_BENCH_MODELS:
        model = RECURRENT_BENCH_MODELS[name]()
        x = _sample(model)
        want = np.asarray(model(x, training=False))
        start = time.perf_counter()
        fn = tf.function(lambda t: model(t, training=False))
        concrete = convert_variables_to_constants_v2(
            fn.get_concrete_function(tf.TensorSpec(x.shape, tf.float32)))
        theirs = tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert()
        t_theirs = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            ours = convert(model, target="tflite", output=Path(tmp) / "m.tflite",
                           input_shapes={model.inputs[0].name: x.shape},
                           progress=False).artifacts["tflite"]
            t_ours = time.perf_counter() - start
        lat_theirs, out_theirs = _latency(theirs, x)
        lat_ours, out_ours = _latency(ours, x)
        rows.append({"model": name, "sec": (t_ours, t_theirs),
                     "bytes": (len(ours), len(theirs)),
                     "latency_ms": (lat_ours * 1e3, lat_theirs * 1e3),
                     "err": (float(np.max(np.abs(out_ours - want))),
                             float(np.max(np.abs(out_theirs - want))))})
    return rows


TFJS_BENCH_MODELS = {
    "MobileNetV2": lambda: BENCH_MODELS["MobileNetV2"](),
    "ResNet50": lambda: BENCH_MODELS["ResNet50"](),
    "ConvNeXtTiny (96x96)": lambda: application("ConvNeXtTiny", (96, 96, 3)),
    "BERT (tiny KerasHub BertBackbone)": tiny_kerashub_bert,
}


def bench_tfjs(name: str = "MobileNetV2", build=None, repeats: int = 2) -> dict:
    """Keras -> TF.js conversion seconds beside tensorforge's own Keras -> TFLite conversion of
    the same model in the same process (best of `repeats`, alternating; goal: TF.js <= 1.5 x
    TFLite), and the TF.js bytes with float32 and uint8-compressed weights. (No external
    anchor: the `tensorflowjs` pip package does not install beside TF 2.21, REFERENCES.md.)"""
    from ..convert import convert

    model = (build or TFJS_BENCH_MODELS.get(name) or BENCH_MODELS[name])()
    row = {"model": name}
    best = {"tfjs": float("inf"), "tflite": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        convert(model, target="tflite", output=Path(tmp) / "warm.tflite", progress=False)
        for i in range(repeats):
            for target in ("tflite", "tfjs"):
                start = time.perf_counter()
                result = convert(model, target=target, output=Path(tmp) / f"{target}{i}",
                                 progress=False)
                best[target] = min(best[target], time.perf_counter() - start)
        row["direct"] = not [n for n in result.notes if n.startswith("tfjs:")]
        row["sec"] = (best["tfjs"], best["tflite"])
        for quantize in (None, "uint8"):
            out = convert(model, target="tfjs", output=Path(tmp) / str(quantize),
                          tfjs_quantize=quantize, progress=False).paths["tfjs"]
            row[quantize or "float32"] = sum(p.stat().st_size for p in out.iterdir())
    return row


def bench_jax_model(name: str, build) -> dict:
    """tensorforge (jaxpr -> IR -> TFLite) vs jax2tf.convert + TFLiteConverter
    .from_concrete_functions on one Flax model: seconds, LiteRT latency, error vs JAX."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    from ..convert import convert

    apply, variables, x = build()
    want = np.asarray(apply(variables, x))

    def anchor() -> bytes:
        tf_fn = tf.function(jax2tf.convert(lambda inp: apply(variables, inp),
                                           with_gradient=False),
                            input_signature=[tf.TensorSpec(x.shape, tf.float32)],
                            autograph=False)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [tf_fn.get_concrete_function()], tf_fn)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        return converter.convert()

    def tensorforge_() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return convert(apply, target="tflite", output=Path(tmp) / "m.tflite",
                           example_args=[x], params=variables).artifacts["tflite"]

    # Best of two runs each, alternating, so neither side profits from the other's warm-up.
    t_theirs = t_ours = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        theirs = anchor()
        t_theirs = min(t_theirs, time.perf_counter() - start)
        start = time.perf_counter()
        ours = tensorforge_()
        t_ours = min(t_ours, time.perf_counter() - start)

    lat_ours, out_ours = _latency(ours, x)
    try:
        lat_theirs, out_theirs = _latency(theirs, x)
        err_theirs = float(np.max(np.abs(out_theirs - want)))
    except Exception:  # e.g. the anchor needed Flex ops the plain interpreter lacks
        lat_theirs, err_theirs = float("nan"), float("nan")
    return {"model": name, "sec": (t_ours, t_theirs), "bytes": (len(ours), len(theirs)),
            "latency_ms": (lat_ours * 1e3, lat_theirs * 1e3),
            "err": (float(np.max(np.abs(out_ours - want))), err_theirs)}


def bench_jax() -> list[dict]:
    from .models import JAX_BENCH_MODELS

    return [bench_jax_model(n, b) for n, b in JAX_BENCH_MODELS.items()]


def tfjs_table(console) -> list[dict]:
    """Prints the Keras -> TF.js vs own Keras -> TFLite table (`bench_tfjs`, best of 2 per
    model; a model that fails becomes an error row); returns its rows."""
    from rich.table import Table

    from .rows import measure_row

    table = Table(title="Keras -> TF.js graph model vs tensorforge's own Keras -> TFLite (same "
                        "process, best of 2; ratio = TF.js / TFLite, goal <= 1.5)")
    for col in ("model", "convert s (TF.js / TFLite)", "ratio", "written", "bytes float32",
                "bytes uint8"):
        table.add_column(col, justify="left" if col == "model" else "right")
    rows = []
    for name in TFJS_BENCH_MODELS:
        r = measure_row(console, table, name, bench_tfjs, 5)
        rows.append(r)
        if "error" in r:
            continue
        a, b = r["sec"]
        table.add_row(name, f"{a:.2f} / {b:.2f}", f"{a / b:.2f}",
                      "from the IR" if r["direct"] else "via TensorFlow",
                      f"{r['float32']:,}", f"{r['uint8']:,}")
    console.print(table)
    return rows
