"""The `.tfir` reader: mutated golden files through the parser and the verifier; whatever
parses and verifies must print to text that parses back to the same text."""

from __future__ import annotations

import random
from pathlib import Path

from . import Campaign, Case
from .mutate import mutate_text
from .seeds import tfir_seeds

FILE = "fuzz.tfir"


def check(text: str) -> None:
    from ...ir.text import parse_module, print_module
    from ...ir.verify import verify_module

    module = parse_module(text, FILE)
    verify_module(module)
    printed = print_module(module)
    again = print_module(parse_module(printed, "<printed>"))
    if again != printed:
        raise AssertionError("printed IR does not round-trip:\n" + printed[:500])


def make(rng: random.Random, i: int, work: Path) -> Case:
    seeds = tfir_seeds()
    text = mutate_text(rng, seeds[rng.randrange(len(seeds))], rng.choice([1, 1, 2, 3, 6]))
    # Verification errors name the node (or the graph), parse errors the file.
    return Case(repr(text[:400]), lambda: check(text), names=(FILE, "node ", "@"))


CAMPAIGN = Campaign("parser", make, timeout_s=10.0)
