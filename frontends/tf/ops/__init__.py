"""TF op -> IR lowering table used by the TF frontend (`lift.py`): one small function per TF
op type, grouped by op family into modules that each export a `TABLE`; `TABLE` here merges
them (TF op type -> lowering function).

Each function takes the lifter (`ctx`, see `context.Lifter`), the TF node and its input
entries, and returns one entry per TF output. `ctx.emit` adds an IR node, folds it when all
inputs are constants, or evaluates it on symbolic shapes; so the same lowering serves weights,
shape arithmetic and activations. Ops lower to the most specific IR op (MatMul -> matmul,
FusedBatchNormV3 -> batch_norm); Keras' decomposed arithmetic (batch-norm as mul/add, gelu as
erfc math) stays decomposed for the canonicalize and fusion passes.

Families: `structural` (Const, Placeholder, Identity, ...), `elementwise`, `shape`, `reduce`,
`nn` (conv, pool, batch norm, softmax, resize), `linalg` (MatMul, Einsum, ...), `quant`
(FakeQuant*), `spectral` (complex values as pairs of real tensors, FFTs), `tensorlist`
(TensorArrays as plain tensors), `complex` (complex constants and arithmetic on those pairs:
every op may take them, part-wise or by its complex formula), `gradients` (the *Grad kernels
of a tf.GradientTape inside a model), `solvers` and `eigen` (linear algebra, decomposed), `ctc` (greedy CTC decoding, dense), `unique` (tf.unique, dense), `control` (While and If: region ops) and `misc` (small
compositions: cross-entropies, Bucketize, bounds, InTopK, Cross); their shared
helpers are in `common`.
"""

from __future__ import annotations

from . import (complex, control, ctc, eigen, elementwise, gradients, linalg, misc, nn, quant,
               reduce, shape, solvers, spectral, structural, tensorlist, unique)


def _merge(*tables: dict) -> dict:
    """One table from the families' tables; an op type may be lowered by one family only."""
    merged: dict = {}
    for table in tables:
        twice = merged.keys() & table.keys()
        if twice:
            raise ValueError(f"TF ops lowered by two op families: {sorted(twice)}")
        merged.update(table)
    return merged


TABLE = complex.complex_aware(_merge(
    structural.TABLE, elementwise.TABLE, shape.TABLE, reduce.TABLE, nn.TABLE, linalg.TABLE,
    quant.TABLE, spectral.TABLE, tensorlist.TABLE, control.TABLE, misc.TABLE, solvers.TABLE,
    eigen.TABLE, gradients.TABLE, ctc.TABLE, unique.TABLE))
