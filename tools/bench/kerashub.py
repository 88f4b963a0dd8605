"""KerasHub benchmark: tensorforge vs TFLiteConverter on a small decoder (Llama) and encoder
(BERT), side by side in one process.

TFLiteConverter.from_keras_model fails on KerasHub models; the anchor is the path that works,
`tf.function(model).get_concrete_function(specs)` + `from_concrete_functions`, with static
[1, 64] specs (its dynamic-shape Llama needs Flex ops). tensorforge's artifact keeps batch and
sequence dynamic and is resized to the same [1, 64] for the latency run; a second row per
model converts ours with `input_shapes` to a static [1, 64] too, which shows what the
run-time shape computation costs.
Reported per model: conversion seconds (best of two, alternating), LiteRT latency (2 threads,
median of repeated invokes at batch 1, sequence 64, both artifacts resized the same way) and
max abs error against Keras, each with the ratio tensorforge / anchor (goals: seconds <= 0.2,
latency <= 1.0)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH, SEQ = 1, 64
_TEXT = dict(vocabulary_size=1000, num_layers=4, hidden_dim=128, intermediate_dim=256)


def _models() -> dict:
    import keras_hub

    return {
        "Llama decoder (4 layers, 128 wide, GQA 4/2)": lambda: keras_hub.models.LlamaBackbone(
            num_query_heads=4, num_key_value_heads=2, **_TEXT),
        "BERT encoder (4 layers, 128 wide)": lambda: keras_hub.models.BertBackbone(
            num_heads=4, max_sequence_length=128, **_TEXT),
    }


def _feeds(model) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for t in model.inputs:
        if "mask" in t.name:
            out[t.name] = np.ones((BATCH, SEQ), np.int32)
        elif "segment" in t.name:
            out[t.name] = rng.integers(0, 2, (BATCH, SEQ)).astype(np.int32)
        else:
            out[t.name] = rng.integers(0, 1000, (BATCH, SEQ)).astype(np.int32)
    return out


def _frozen(concrete):
    """The function with Keras' variables folded in: TF 2.21's converter otherwise keeps them
    as uninitialized resource variables (VAR_HANDLE / READ_VARIABLE), and the model computes
    garbage."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    return convert_variables_to_constants_v2(concrete)


def _anchor(model) -> bytes:
    import tensorflow as tf

    # Static [1, 64]: with run-time dims TFLiteConverter leaves Llama's StridedSlice to the
    # Flex delegate (ERROR_NEEDS_FLEX_OPS), which the plain interpreter lacks.
    specs = {t.name: tf.TensorSpec((BATCH, SEQ), t.dtype, name=t.name) for t in model.inputs}
    fn = tf.function(lambda d: model(d, training=False))
    concrete = fn.get_concrete_function(specs)
    return tf.lite.TFLiteConverter.from_concrete_functions([_frozen(concrete)],
                                                           model).convert()


def _latency(data: bytes, feeds: dict, repeats: int = 30) -> tuple[float, np.ndarray]:
    """Median invoke seconds and the first output, inputs matched to the model's tensors by
    name (the anchor prefixes them with the function's argument name)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=2)
    details = interp.get_input_details()
    by_index = {}
    for d in details:
        key = next(k for k in feeds if d["name"].endswith(k) or f"{k}:" in d["name"]
                   or d["name"].split(":")[0].endswith(k))
        by_index[d["index"]] = feeds[key]
        interp.resize_tensor_input(d["index"], list(feeds[key].shape))
    interp.allocate_tensors()
    outs = interp.get_output_details()
    # The sequence output: the largest result (BERT also returns a pooled one).
    out_index = max(outs, key=lambda o: len(o["shape_signature"]))["index"]
    times = []
    for i in range(repeats + 3):
        for index, x in by_index.items():
            interp.set_tensor(index, x)
        start = time.perf_counter()
        interp.invoke()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times), interp.get_tensor(out_index)


def bench_kerashub() -> list[dict]:
    """One row per model: seconds, bytes, latency and error, tensorforge and anchor."""
    from ..convert import convert

    rows = []
    for name, build in _models().items():
        model = build()
        feeds = _feeds(model)
        want = model(feeds)
        want = np.asarray(want["sequence_output"] if isinstance(want, dict) else want)
        t_ours = t_theirs = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            theirs = _anchor(model)
            t_theirs = min(t_theirs, time.perf_counter() - start)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                ours = convert(model, target="tflite", output=Path(tmp) / "m.tflite",
                               progress=False).artifacts["tflite"]
                t_ours = min(t_ours, time.perf_counter() - start)
        # Our artifact frozen to [1, 64] as well (input_shapes): what dynamic shapes cost.
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            static = convert(model, target="tflite", output=Path(tmp) / "s.tflite",
                             input_shapes={k: (BATCH, SEQ) for k in feeds},
                             progress=False).artifacts["tflite"]
            t_static = time.perf_counter() - start
        lat_theirs, out_theirs = _latency(theirs, feeds)
        err_theirs = float(np.max(np.abs(out_theirs - want)))
        for label, data, seconds in ((name, ours, t_ours),
                                     (f"{name}, static [1, 64]", static, t_static)):
            lat, out = _latency(data, feeds)
            rows.append({"model": label, "sec": (seconds, t_theirs),
                         "bytes": (len(data), len(theirs)),
                         "latency_ms": (lat * 1e3, lat_theirs * 1e3),
                         "err": (float(np.max(np.abs(out - want))), err_theirs)})
    return rows
