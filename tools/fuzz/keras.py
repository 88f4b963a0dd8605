"""`.keras` loading: the example model's archive with flipped bytes, truncation, a damaged
or truncated HDF5 weights file, weights of another shape or dtype, and mutated JSON config
and metadata, loaded with tensorforge's Keras loader (which checks the weights against the
model)."""

from __future__ import annotations

import io
import json
import random
import zipfile
from functools import lru_cache
from pathlib import Path

from . import Campaign, Case
from .mutate import mutate_bytes, mutate_json
from .seeds import keras_seed

FILE = "fuzz.keras"


@lru_cache(maxsize=None)
def _members() -> tuple[tuple[str, bytes], ...]:
    seed = keras_seed()
    if seed is None:
        return ()
    with zipfile.ZipFile(seed) as z:
        return tuple((n, z.read(n)) for n in z.namelist())


def _rewrite_weights(rng: random.Random, data: bytes) -> bytes:
    """The HDF5 weights with one dataset replaced by another shape or dtype, or removed."""
    import h5py
    import numpy as np

    buf = io.BytesIO(data)
    with h5py.File(buf, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        name = rng.choice(names)
        ds = f[name]
        shape, dtype = ds.shape, ds.dtype
        del f[name]
        op = rng.randrange(4)
        if op == 0:
            f[name] = np.zeros(tuple(d + 1 for d in shape) or (2,), dtype)
        elif op == 1:
            f[name] = np.zeros(shape, rng.choice([np.int32, np.bool_, np.float16, np.int64]))
        elif op == 2:
            f[name] = np.array([b"text"] * (int(np.prod(shape)) or 1))
        # op 3: removed
    return buf.getvalue()


def _archive(rng: random.Random) -> bytes:
    members = dict(_members())
    op = rng.randrange(10)
    if op <= 2:
        members["model.weights.h5"] = mutate_bytes(rng, members["model.weights.h5"])
    elif op == 3:
        w = members["model.weights.h5"]
        members["model.weights.h5"] = w[:rng.randrange(len(w))]
    elif op == 4:
        members["model.weights.h5"] = _rewrite_weights(rng, members["model.weights.h5"])
    elif op in (5, 6):
        config = json.loads(members["config.json"])
        for _ in range(rng.randint(1, 3)):
            config = mutate_json(rng, config)
        members["config.json"] = json.dumps(config).encode("utf-8", "surrogatepass")
    elif op == 7:
        members["metadata.json"] = mutate_bytes(rng, members["metadata.json"])
    elif op == 8:
        del members[rng.choice(sorted(members))]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    data = buf.getvalue()
    if op == 9:
        data = mutate_bytes(rng, data) if rng.random() < 0.5 else data[:rng.randrange(len(data))]
    return data


def check(path: Path) -> None:
    from ...frontends.keras.lift import load_keras_file

    load_keras_file(path)


def make(rng: random.Random, i: int, work: Path) -> Case:
    if not _members():
        return Case("<no seed model>", lambda: None)
    data = _archive(rng)
    path = work / FILE
    path.write_bytes(data)
    return Case(f"{len(data)} bytes (seed {i})", lambda: check(path), names=(FILE,))


def _setup(work: Path) -> None:
    import keras  # noqa: F401  (imported once, outside the per-input alarm)


CAMPAIGN = Campaign("keras", make, setup=_setup, timeout_s=60.0)
