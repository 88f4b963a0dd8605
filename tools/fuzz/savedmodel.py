"""SavedModel loading: a SavedModel written by tensorforge from a small module, with its
saved_model.pb or variables mutated, truncated or removed, lifted by the TF frontend. Slow
(TensorFlow loads each one), so it runs a twentieth of --n."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from . import Campaign, Case
from .mutate import mutate_bytes

_SEED: dict[str, Path] = {}


def _setup(work: Path) -> None:
    from ...ir.text import parse_module
    from ..convert import convert
    from .cli import GOOD

    out = work / "seed_savedmodel"
    convert(parse_module(GOOD.replace("batch", "2")), target="savedmodel", output=out,
            progress=False)
    _SEED["path"] = out


def check(path: Path) -> None:
    from ...frontends.tf import from_saved_model

    from_saved_model(str(path))


def make(rng: random.Random, i: int, work: Path) -> Case:
    path = work / "model"
    shutil.copytree(_SEED["path"], path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    target = rng.choice(files)
    op = rng.randrange(4)
    if op == 0:
        target.unlink()
    elif op == 1:
        data = target.read_bytes()
        target.write_bytes(data[:rng.randrange(len(data) + 1)])
    else:
        target.write_bytes(mutate_bytes(rng, target.read_bytes()))
    return Case(f"{target.relative_to(path)} op {op}", lambda: check(path),
                names=(str(path),))


CAMPAIGN = Campaign("savedmodel", make, setup=_setup, scale=0.05, timeout_s=60.0)
