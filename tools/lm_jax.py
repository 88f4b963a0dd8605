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

import re
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


def cache_leaf_names(cache) -> list[str]:
    """Signature names of the cache's leaves: `cache` for one array, else `cache_` plus each
    leaf's pytree path (a per-layer list of (keys, values) pairs gives `cache_0_0`,
    `cache_0_1`, `cache_1_0`, ...)."""
    import jax

    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(cache)[0]]
    if len(paths) == 1 and not paths[0]:
        return ["cache"]
    return ["cache_" + re.sub(r"[^A-Za-z0-9]+", "_", jax.tree_util.keystr(p)).strip("_")
            for p in paths]


def jax_steps(lm: JaxLM, n: int) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The prefill and decode modules of `lm` for sequences of n tokens (signature names as
    for a KerasHub CausalLM: each cache leaf is its own input and output) and {name: shape}
    of the cache leaves."""
    import jax
    import jax.numpy as jnp

    from ..frontends.jax import from_jax

    empty = lm.init_cache(n)
    leaves, treedef = jax.tree_util.tree_flatten(empty)
    names = cache_leaf_names(empty)
    zeros = [np.zeros(tuple(int(d) for d in leaf.shape), np.dtype(leaf.dtype))
             for leaf in leaves]

    def prefill(params, token_ids):
        cache = treedef.unflatten([jnp.asarray(z) for z in zeros])
        logits, new_cache = lm.step(params, token_ids, cache, jnp.int32(0))
        return (logits, *jax.tree_util.tree_leaves(new_cache))

    def decode(params, token, index, *parts):
        logits, new_cache = lm.step(params, token, treedef.unflatten(parts), index)
        return (logits, *jax.tree_util.tree_leaves(new_cache))

    modules = {
        "prefill": from_jax(prefill, [np.zeros((1, n), np.int32)], params=lm.params,
                            names=["token_ids"], output_names=["logits", *names]),
        "decode": from_jax(decode, [np.zeros((1, 1), np.int32), np.zeros((), np.int32),
                                    *zeros], params=lm.params,
                           names=["token", "index", *names],
                           output_names=["logits", *names]),
    }
    return modules, {name: z.shape for name, z in zip(names, zeros)}
