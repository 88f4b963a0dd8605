"""Reading the values of TF resource variables for lifting: without copies, and many in one op.

Why one op: TF's eager runtime builds a kernel for each distinct set of input dtypes and
shapes, and a resource input's key includes its variable's shape, so reading the variables
of a model one by one builds a kernel per weight shape (~0.4 ms each; a ResNet50 has ~100
shapes). TF's `_ReadVariablesOp` (resource_variable_ops.cc: N resources in, their values
out) builds one kernel for all of them. Where it cannot run (a TF without it, variables on
different devices) the variables are read one by one, as before.

No copies: a value is a read-only NumPy view of the tensor TF's read returns. The view keeps
that tensor alive, and TF copies a variable's buffer before assigning to it while another
tensor shares it, so training the model afterwards never changes a lifted constant (a test
checks)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np


def _view(tensor) -> np.ndarray:
    # `_numpy` is EagerTensor's read without the copy `numpy()` adds (a device tensor is
    # still copied to host memory).
    array = np.asarray(tensor._numpy())
    array.flags.writeable = False
    return array


def read_variable(handle, dtype_enum: int) -> np.ndarray:
    """The value of the resource variable behind `handle` (an eager resource tensor) as
    `dtype_enum`, a read-only view."""
    import tensorflow as tf

    return _view(tf.raw_ops.ReadVariableOp(resource=handle,
                                           dtype=tf.dtypes.as_dtype(dtype_enum)))


def read_variables(reads: Sequence[tuple[object, int]]) -> list[np.ndarray]:
    """The values of [(handle, dtype enum)], in order: one `_ReadVariablesOp` for all of
    them, or one read each where that op cannot run."""
    if len(reads) < 2:
        return [read_variable(h, d) for h, d in reads]
    try:
        from tensorflow.python.eager import context, execute

        values = execute.execute("_ReadVariablesOp", len(reads), [h for h, _ in reads],
                                 ("N", len(reads), "dtypes", [d for _, d in reads]),
                                 context.context())
    except Exception:   # not registered, mixed devices, not eager: read them one by one
        return [read_variable(h, d) for h, d in reads]
    return [_view(t) for t in values]


# A resource read's kernel is keyed by its variable's shape: the first read of a shape costs
# ~0.4 ms, later reads of that shape ~15 us, and each variable in a `_ReadVariablesOp`
# ~50-70 us. Variables of a shape that more than this many share are read one by one.
SHARED_SHAPE_READ_ALONE = 8


def _shape_key(handle) -> tuple | None:
    """(dtype, dims) of the variable behind an eager resource handle, None if unknown."""
    try:
        (entry,) = handle._handle_data.shape_and_type
        return entry.dtype, tuple(d.size for d in entry.shape.dim)
    except Exception:
        return None


class VariableValues:
    """Values of variables read during one lift, keyed by (handle, dtype): each variable is
    read once, those announced with `prefetch` together (see `SHARED_SHAPE_READ_ALONE`)."""

    def __init__(self):
        self._values: dict[tuple[int, int], np.ndarray] = {}
        self._handles: list = []    # keeps each keyed handle alive (its id stays unique)

    def prefetch(self, reads: Sequence[tuple[object, int]]) -> None:
        """Reads [(handle, dtype enum)] not read yet in one op, except those whose shape
        more than SHARED_SHAPE_READ_ALONE of them share (`get` reads those when asked, each
        shape's kernel built once). A read that fails leaves its variables to `get`, whose
        error the lifter reports against the node that reads them."""
        todo, seen = [], set()
        for handle, dtype in reads:
            key = (id(handle), int(dtype))
            if key not in self._values and key not in seen:
                seen.add(key)
                todo.append((handle, int(dtype)))
        keys = [_shape_key(h) for h, _ in todo]
        shared = Counter(keys)
        together = [r for r, key in zip(todo, keys)
                    if key is None or shared[key] <= SHARED_SHAPE_READ_ALONE]
        try:
            values = read_variables(together)
        except Exception:
            return
        for (handle, dtype), value in zip(together, values):
            self._values[(id(handle), dtype)] = value
            self._handles.append(handle)

    def get(self, handle, dtype_enum: int) -> np.ndarray:
        """The variable's value (read now unless prefetched or read before)."""
        key = (id(handle), int(dtype_enum))
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = read_variable(handle, dtype_enum)
            self._handles.append(handle)
        return value
