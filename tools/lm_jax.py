"""JAX and Flax decoders as `convert_lm` sources: `JaxLM` names a decoder's cached step
function, and `jax_steps` lifts its prefill and decode steps into IR modules with the same
signatures as a KerasHub CausalLM's (tools/generation.py).

A decoder with a key/value cache is, whatever its framework, one function

    step(params, tokens [1, T], cache, index []) -> (logits [1, T, vocab], cache)

that runs T tokens starting at position `index`, attending to the cache and writing their
keys and values into it, plus the cache it starts from. Prefill is `step` on the padded prompt
from an empty cache at index 0; decode is `step` on one token at its index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class JaxLM:
    """A JAX / Flax decoder for `convert_lm`: `step(params, tokens, cache, index) -> (logits,
    cache)` (module docstring), its `params` (a pytree: they become the artifact's weights)
    and `init_cache(n)`, the empty cache for sequences of n tokens (an array, or anything
    with `.shape` and `.dtype`)."""

    step: Callable
    params: Any
    init_cache: Callable[[int], Any]


def jax_steps(lm: JaxLM, n: int) -> tuple[dict, tuple[int, ...]]:
    """The prefill and decode modules of `lm` for sequences of n tokens (signature names as
    for a KerasHub CausalLM), and the cache shape."""
    import jax.numpy as jnp

    from ..frontends.jax import from_jax

    empty = lm.init_cache(n)
    shape, dtype = tuple(int(d) for d in empty.shape), np.dtype(empty.dtype)
    zeros = np.zeros(shape, dtype)

    def prefill(params, token_ids):
        return lm.step(params, token_ids, jnp.asarray(zeros), jnp.int32(0))

    def decode(params, token, cache, index):
        return lm.step(params, token, cache, index)

    modules = {
        "prefill": from_jax(prefill, [np.zeros((1, n), np.int32)], params=lm.params,
                            names=["token_ids"], output_names=["logits", "cache"]),
        "decode": from_jax(decode, [np.zeros((1, 1), np.int32), zeros,
                                    np.zeros((), np.int32)], params=lm.params,
                           names=["token", "cache", "index"],
                           output_names=["logits", "cache"]),
    }
    return modules, shape
