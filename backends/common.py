"""Pieces every backend needs: signature names, constant names, atomic placement of
directory artifacts, and the log-depth scan that composes cumulative ops from slices."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable

import numpy as np

from ..ir.errors import Diagnostic
from ..ir.graph import Module, Node, Value
from ..ir.ops import get_op


def constant_name(value: Value) -> str:
    """The name a backend gives a constant (a variable, a JAX param, a Keras weight path):
    its value name, else `<scope of its first user>/<operand role>` (e.g.
    `encoder_0_mha/query/b`), else `<scope>/constant`. The sharding LayoutMap names tensors
    the same way."""
    if value.name:
        return value.name
    for user, i in value.uses:
        if isinstance(user, Node):
            operand = get_op(user.op).inputs
            role = operand[min(i, len(operand) - 1)].rstrip("?*") if operand else "const"
            scope = user.scope or (value.producer.scope if value.producer is not None else "")
            return f"{scope}/{role}" if scope else role
    node = value.producer
    return f"{node.scope}/constant" if node is not None and node.scope else "constant"


def signature_names(module: Module, key: str, values, default: str,
                    problems: list[Diagnostic],
                    transform: Callable[[str], str] = lambda n: n) -> list[str]:
    """Names for the signature's inputs or outputs (`key` is "input_names" or
    "output_names"): the module's metadata when present, else the value names, else
    `{default}_{i}`. Mismatched counts and repeated names are appended to `problems`."""
    given = module.metadata.get(key)
    if given is not None:
        names = [str(n) for n in given]
        if len(names) != len(values):
            problems.append(Diagnostic(f"metadata {key} has {len(names)} names but graph "
                                       f"@{module.main.name} has {len(values)}"))
            return [f"{default}_{i}" for i in range(len(values))]
    else:
        names = [v.name or f"{default}_{i}" for i, v in enumerate(values)]
    names = [transform(n) for n in names]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(Diagnostic(f"signature {default} names repeat: {dup}"))
    return names


def log_scan(x, n: int, reverse: bool, take: Callable, combine: Callable, join: Callable):
    """An inclusive scan of `x` along one axis of static size `n` in ceil(log2 n) steps
    (Hillis-Steele), for runtimes without a cumulative product / maximum / minimum kernel:
    step s = 1, 2, 4, ... sets y[i] = combine(y[i], y[i - s]) where i >= s (with `reverse`,
    y[i + s] where i + s < n), the other s elements kept. The caller's `take(y, begin, size)`
    slices the axis, `combine(a, b)` is the associative op and `join(parts, last)` concatenates
    along the axis (`last` marks the final step, so it can write the result in place)."""
    s = 1
    while s < n:
        last = 2 * s >= n
        if reverse:
            y = combine(take(x, 0, n - s), take(x, s, n - s))
            x = join([y, take(x, n - s, s)], last)
        else:
            y = combine(take(x, s, n - s), take(x, 0, n - s))
            x = join([take(x, 0, s), y], last)
        s *= 2
    return x


def swap_directory(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves the complete directory `staged` to `target`. An existing `target` is renamed
    aside first, restored if the move fails, and deleted only once the new one is in."""
    staged, target = os.fspath(staged), os.fspath(target)
    if not os.path.lexists(target):
        os.rename(staged, target)
        return
    parent, base = os.path.split(os.path.abspath(target))
    backup = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
    os.rmdir(backup)
    os.rename(target, backup)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def dilate_filter(f: np.ndarray, dilations) -> np.ndarray:
    """The HWIO filter with (d-1) zeros between taps: a dilated conv as a plain one (shared
    by the TF lowering and the TF.js writer, which must not import TensorFlow)."""
    dh, dw = dilations
    if (dh, dw) == (1, 1):
        return f
    kh, kw = f.shape[:2]
    out = np.zeros(((kh - 1) * dh + 1, (kw - 1) * dw + 1) + f.shape[2:], f.dtype)
    out[::dh, ::dw] = f
    return out


WRITE_CHUNK_BYTES = 1 << 20


def write_chunked(f, data) -> None:
    """Writes the bytes-like `data` (bytes, a memoryview, a contiguous array) to the binary
    file `f` in 1 MiB pieces. Why: on the sandboxed kernels CI runs on, one write() of
    114 MB took 0.57 s and the same bytes in 1 MiB pieces 0.035 s."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), WRITE_CHUNK_BYTES):
        f.write(view[start:start + WRITE_CHUNK_BYTES])
