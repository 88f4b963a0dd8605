"""auto_shard: under a memory limit that forces model parallelism it finds a plan that
fits and communicates no more than the Megatron plan; an impossible limit is one clear
error."""

from __future__ import annotations

import pytest

import tensorforge
from tensorforge import sharding as ts
from tensorforge.tools.bench.models import transformer_encoder
from tensorforge.tools.convert import optimize


@pytest.fixture(scope="module")
def encoder():
    return optimize(tensorforge.from_keras(transformer_encoder(2, 64, 4, seq_len=8, vocab=64)),
                    None)


@pytest.fixture(scope="module")
def mesh():
    return ts.Mesh({"batch": 2, "model": 4})


def test_no_pressure_keeps_data_parallel(encoder, mesh):
    plan = ts.auto_shard(encoder, mesh, memory_limit_bytes=1e12, batch=4)
    assert plan.auto["chosen"] == []
    assert plan.total_collective_bytes() == 0


@pytest.mark.parametrize("fraction", [0.9, 0.6, 0.4])
def test_memory_limit_forces_model_parallelism(encoder, mesh, fraction):
    replicated = ts.auto_shard(encoder, mesh, memory_limit_bytes=1e12, batch=4)
    limit = fraction * replicated.parameter_bytes_per_device()
    plan = ts.auto_shard(encoder, mesh, memory_limit_bytes=limit, batch=4)
    megatron = ts.shard(encoder, ts.create_layout_map(encoder, mesh), batch=4)
    assert plan.parameter_bytes_per_device() <= limit
    assert plan.auto["chosen"]
    assert plan.total_collective_bytes() <= megatron.total_collective_bytes()
    # only the all_reduces Megatron layouts need: no gathers sneak in
    assert {c.kind for c in plan.collectives} <= {"all_reduce"}


def test_limit_below_megatron_is_one_clear_error(encoder, mesh):
    with pytest.raises(ts.ShardingError, match="memory limit"):
        ts.auto_shard(encoder, mesh, memory_limit_bytes=1000, batch=4)
