"""Seeded mutation of real artifacts: text, bytes and JSON values."""

from __future__ import annotations

import random
from typing import Any

# Fragments that hit the corners of the readers: quoting and escapes, control characters,
# lone surrogates, huge and odd numbers, deep nesting, the syntax's own punctuation.
TEXT_TOKENS = [
    '"', "\\", '\\"', "\\x", "\\u", "\\ud800", "\\udc80", "\x00", "\x01", "\x1f", "\x7f",
    "\u2028", "\ud800", "é", "∞", "{", "}", "[", "]", "(", ")", "<", ">", ",", ":", "=", "%",
    "@", "//", "...", "->", "?", "-", "0x", "0xZZ", "splat", "dense<", "quant<", "layout<",
    "scope=", "loc=", "none", "true", "nan", "inf", "-inf", "1e308", "1e999", "-0.0",
    "18446744073709551616", "9" * 30, "9" * 5000, "0", "-1", "2147483648", "[" * 200,
    "f32", "i8", "bf16", "f64", "complex64", "string", "graph", "return", "module", "\n",
    "\t", " ", "%0", "%x", "@main", "constant", "matmul", "while", "if", "dense<f32[999999999999]: splat 1.0>",
]


def mutate_text(rng: random.Random, text: str, rounds: int | None = None) -> str:
    for _ in range(rounds or rng.randint(1, 4)):
        if not text:
            text = rng.choice(TEXT_TOKENS)
            continue
        i = rng.randrange(len(text) + 1)
        j = min(len(text), i + rng.randint(0, 12))
        op = rng.randrange(8)
        if op == 0:
            text = text[:i] + rng.choice(TEXT_TOKENS) + text[i:]
        elif op == 1:
            text = text[:i] + text[j:]
        elif op == 2:
            text = text[:i] + rng.choice(TEXT_TOKENS) + text[j:]
        elif op == 3:       # duplicate a chunk
            text = text[:j] + text[i:j] + text[j:]
        elif op == 4:       # swap two lines
            lines = text.split("\n")
            if len(lines) > 1:
                a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
                lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        elif op == 5:       # a random character
            text = text[:i] + chr(rng.choice([rng.randrange(32), rng.randrange(32, 127),
                                              rng.randrange(127, 0x3000),
                                              rng.randrange(0xD800, 0xE000)])) + text[i:]
        elif op == 6:       # change a number
            digits = [k for k, c in enumerate(text) if c.isdigit()]
            if digits:
                k = rng.choice(digits)
                text = text[:k] + rng.choice(["0", "9", "99999999", "-1", "1.5", "1e30",
                                              "340282366920938463463374607431768211456"]) \
                    + text[k + 1:]
        else:               # truncate
            text = text[:i]
    return text


def mutate_bytes(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    b = bytearray(data)
    for _ in range(rounds or rng.randint(1, 4)):
        if not b:
            b += bytes([rng.randrange(256)])
            continue
        i = rng.randrange(len(b))
        op = rng.randrange(6)
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice([0, 0xFF, 0x7F, 0x80])
        elif op == 2:
            del b[i:i + rng.randint(1, 64)]
        elif op == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4:
            del b[i:]
        else:
            j = rng.randrange(len(b))
            b[i:i + 8] = b[j:j + 8]
    return bytes(b)


ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2**63, -2**63, 1e308, float("inf"),
                         float("nan"), 0.5, "", "x", "int8", "f32", "\udc80", "a\x00b", [],
                         [1, 2], {}, {"a": 1}, [[[[]]]], "9" * 50]


def mutate_json(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """A structurally mutated copy of a JSON value (one change somewhere inside)."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        value = dict(value)
        key = rng.choice(list(value))
        op = rng.randrange(5)
        if op == 0:
            del value[key]
        elif op == 1:
            value[key + rng.choice(["_", "x", ""]) or "k"] = rng.choice(ODD_VALUES)
        elif op == 2:
            value[key] = rng.choice(ODD_VALUES)
        else:
            value[key] = mutate_json(rng, value[key], depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        value = list(value)
        i = rng.randrange(len(value))
        op = rng.randrange(4)
        if op == 0:
            del value[i]
        elif op == 1:
            value.insert(i, rng.choice(ODD_VALUES))
        else:
            value[i] = mutate_json(rng, value[i], depth + 1)
        return value
    return rng.choice(ODD_VALUES)
