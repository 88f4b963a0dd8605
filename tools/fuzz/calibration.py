"""Calibration data: valid, mutated and malformed `.npz` files (not a zip, empty, an `.npy`,
flipped bytes, truncation, object arrays, wrong names, dtypes, ranks and sample counts,
headers that lie about their size) are read against a small module's inputs, checked, and a
couple of samples run through the calibrating interpreter."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import numpy as np

from . import Campaign, Case
from .mutate import mutate_bytes

MODULE = """\
graph @main(%x: f32[batch,3], %"odd name": f32[batch,3]) -> (f32[batch,3]) {
  %a = add(%x, %"odd name") : f32[batch,3]
  %r = relu(%a) : f32[batch,3]
  return %r
}
"""

FILE = "calib.npz"


def _valid(rng: random.Random) -> dict[str, np.ndarray]:
    n = rng.choice([1, 2, 3])
    return {"x": rng.choice([np.float32] * 5 + [np.float64])(np.random.default_rng(rng.randrange(99))
                                                     .normal(size=(n, 3))),
            "odd name": np.ones((n, 3), np.float32)}


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _malformed(rng: random.Random) -> bytes:
    arrays = _valid(rng)
    op = rng.randrange(12)
    if op == 0:
        return b""
    if op == 1:
        return b"hello, not a zip"
    if op == 2:                               # an .npy where an .npz is expected
        buf = io.BytesIO()
        np.save(buf, arrays["x"])
        return buf.getvalue()
    if op == 3:                               # object arrays (pickle)
        buf = io.BytesIO()
        np.savez(buf, x=np.array([{"a": 1}, None], dtype=object), **{"odd name": arrays["odd name"]})
        return buf.getvalue()
    if op == 4:
        arrays["x"] = arrays["x"].astype(rng.choice([np.int8, np.complex64, np.bool_, "U3",
                                                     np.float16, np.uint64]))
    elif op == 5:
        arrays["x"] = arrays["x"][..., :rng.randint(0, 2)]
    elif op == 6:
        arrays["x"] = np.float32(rng.random())
    elif op == 7:
        arrays["x"] = arrays["x"][:0]
    elif op == 8:
        arrays = {f"arr_{i}": a for i, a in enumerate(arrays.values())}
    elif op == 9:
        arrays = {"x": arrays["x"], "y": arrays["x"]}
    elif op == 10:
        arrays["x"] = np.full_like(arrays["x"], rng.choice([np.nan, np.inf, 1e38, 0.0]))
    else:                                     # a member whose header lies about its shape
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': "
                       b"False, 'shape': (100000000000, 3), }   " + b" " * 50 + b"\n" +
                       b"\0" * 64)
        return buf.getvalue()
    return _npz_bytes(arrays, rng.random() < 0.5)


def check(path: Path) -> None:
    from ...ir.text import parse_module
    from ...passes.quantize.calibrate import (calibrate, check_calibration_data,
                                              load_npz_samples)
    from ...passes.quantize.observers import make_observer

    module = parse_module(MODULE)
    samples = check_calibration_data(module, load_npz_samples(path, module))
    graph = module.main
    value = next(iter(graph)).outputs[0]
    calibrate(module, samples[:2], {value: make_observer("minmax")}, progress=False)


def make(rng: random.Random, i: int, work: Path) -> Case:
    kind = rng.random()
    if kind < 0.15:
        data = _npz_bytes(_valid(rng), rng.random() < 0.5)
    elif kind < 0.55:
        data = _malformed(rng)
    else:
        data = mutate_bytes(rng, _npz_bytes(_valid(rng), rng.random() < 0.5))
    path = work / FILE
    path.write_bytes(data)
    return Case(f"{len(data)} bytes: {data[:80]!r}", lambda: check(path),
                names=(FILE, "input", "sample", "node "))


CAMPAIGN = Campaign("calibration", make, timeout_s=20.0)
