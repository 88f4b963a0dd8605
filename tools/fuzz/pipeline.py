"""Pass pipelines and pass options: generated and mutated pipeline strings are parsed; a
pipeline that parses must print back to text that parses to the same pipeline, and must
run (or fail with a TensorforgeError) on a small module."""

from __future__ import annotations

import random
from pathlib import Path

from . import Campaign, Case
from .mutate import TEXT_TOKENS, mutate_text
from .seeds import SMALL

VALUES = ["true", "false", "0", "1", "-1", "8", "99999999999999999999", "1.5", "nan", "inf",
          "int8", "float", "dp", "megatron", "batch=2,model=4", '"batch=2,model=4"', "bf16",
          "f16,bf16", "i8", "", '""', '"\\x"', '"a,b"', '"{}"', "x.npz", "missing.json",
          '"\\u0001"', '"\\ud800"', "é", "yes", "off", "{", "}"]


def _element(rng: random.Random, passes: dict) -> str:
    name = rng.choice(sorted(passes)) if rng.random() < 0.9 else rng.choice(
        ["nope", "canonicalise", "", "a{b}", "fold_constants"])
    cls = passes.get(name)
    keys = list(cls.options) if cls is not None else ["x"]
    if not keys or rng.random() < 0.4:
        return name
    opts = []
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(keys) if rng.random() < 0.9 else rng.choice(["bogus", "fold_limit"])
        opt = cls.options.get(key) if cls is not None else None
        choices = opt.valid_choices() if opt is not None else None
        if choices and rng.random() < 0.5:
            value = str(rng.choice(choices))
        elif opt is not None and rng.random() < 0.3:
            value = str(opt.default).lower() if isinstance(opt.default, bool) else \
                str(opt.default)
        else:
            value = rng.choice(VALUES)
        opts.append(f"{key}={value}")
    return f"{name}{{{','.join(opts)}}}"


def check(text: str) -> None:
    from ...ir.text import parse_module
    from ...passes import PassContext, PassManager, parse_pipeline, print_pipeline

    pipeline = parse_pipeline(text)
    printed = print_pipeline(pipeline)
    if print_pipeline(parse_pipeline(printed)) != printed:
        raise AssertionError(f"pipeline {printed!r} does not round-trip")
    if any(p.name in _SLOW for p in pipeline):
        return
    PassManager.parse(printed).run(parse_module(SMALL), PassContext(verify_each=True))


# Passes that need calibration data or a mesh-sized model: parsed, not run.
_SLOW = {"shard-auto"}


def make(rng: random.Random, i: int, work: Path) -> Case:
    from ...passes import registered_passes

    passes = registered_passes()
    text = ",".join(_element(rng, passes) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.4:
        text = mutate_text(rng, text, rng.randint(1, 3))
    elif rng.random() < 0.1:
        text += rng.choice(TEXT_TOKENS)
    return Case(repr(text[:300]), lambda: check(text),
                names=("pipeline", "pass", "option", "quantiz", "shard", "mesh", "@main",
                       "node ", "<input>"))


CAMPAIGN = Campaign("pipeline", make, timeout_s=20.0)
