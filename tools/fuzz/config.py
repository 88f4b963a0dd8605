"""Quantization configurations: mutated `QuantizationConfigurationMap.to_json()` files (JSON
structure and raw text) are read and resolved against a small module."""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

from . import Campaign, Case
from .mutate import mutate_json, mutate_text
from .seeds import SMALL


@lru_cache(maxsize=None)
def seed_configs() -> tuple[str, ...]:
    from ...passes.quantize.config import QuantizationConfigurationMap
    from ...passes.quantize.configuration import LayerConfiguration
    from ...passes.quantize.configuration import QuantizationConfiguration as QC

    w4 = QC(bits=4, symmetric=True, granularity="per_channel")
    a8p = QC(bits=8, symmetric=False, calibration="percentile", percentile=99.9)
    rich = QuantizationConfigurationMap("int16x8")
    rich.set_config("block", LayerConfiguration(weight_config=w4, activation_config=None))
    rich.set_config("block", op_type="clip", config={"return": None})
    rich.set_tensor_config("x", a8p)
    rich.set_tensor_config("m", None)
    return tuple(m.to_json() for m in (QuantizationConfigurationMap("int8"), rich,
                                       QuantizationConfigurationMap("dynamic-int8")))


def check(path: Path) -> None:
    from ...ir.text import parse_module
    from ...passes.quantize.quantize_pass import read_config

    read_config(str(path)).resolve(parse_module(SMALL))


def make(rng: random.Random, i: int, work: Path) -> Case:
    seeds = seed_configs()
    text = seeds[rng.randrange(len(seeds))]
    if rng.random() < 0.7:
        value = json.loads(text)
        for _ in range(rng.randint(1, 3)):
            value = mutate_json(rng, value)
        text = json.dumps(value, allow_nan=True)
    if rng.random() < 0.3:
        text = mutate_text(rng, text)
    path = work / "qconfig.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return Case(repr(text[:300]), lambda: check(path), names=("qconfig.json", "set_config(", "set_tensor_config("))


CAMPAIGN = Campaign("config", make, timeout_s=10.0)
