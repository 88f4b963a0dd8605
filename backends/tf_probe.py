"""A fast calibration runner: the module lowered to ONE TensorFlow function that returns the
graph outputs plus any intermediate values.

    run = tf_runner(module, values)      # traced once, symbolic dims -> None
    arrays = run(inputs)                 # [np.ndarray per value], inputs in graph-input order
    outputs, arrays = run.run_all(inputs)

It reuses `tf_lowering` (the same lowering the SavedModel and TF.js backends use), so an op
that runs there runs here. `passes.quantize.calibrate.calibrate(..., runner=tf_runner)` is the
intended use: passes may not import backends, so the top-level convert passes it in.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Module, Value
from .tf_lowering import _Ctx, _emit, lower_to_tf


class TFProbe:
    """Callable runner over one traced tf.function (see module doc)."""

    def __init__(self, module: Module, values: Sequence[Value]):
        graph = module.main
        self.values = list(values)
        defined = {id(v) for v in graph.inputs}
        defined.update(id(v) for node in graph for v in node.outputs)
        stray = [v for v in self.values if id(v) not in defined]
        if stray:
            raise ConversionError(f"cannot probe values that are not in graph @{graph.name}",
                                  [Diagnostic(f"%{v.name or '?'}: {v.type}") for v in stray])
        lowered = lower_to_tf(module)   # ConversionError listing every unsupported node
        # The lowering's variables (big constants) are shared with `lowered.tf_module`; keep
        # that alive as long as the function, which references variables only weakly.
        self._tf_module = lowered.tf_module
        variables = lowered._variables
        probe = self.values

        def fn(*args):
            cx = _Ctx(variables, None)
            outs = _emit(graph, cx, list(args), None)
            # cx.x gives node results and inputs from the environment, constants on demand.
            caps = [cx.x(v) for v in probe]
            return ([tf.identity(t) for t in outs], [tf.identity(t) for t in caps])

        self.function = tf.function(fn, input_signature=lowered.input_specs,
                                    autograph=False).get_concrete_function()
        self.n_outputs = len(graph.outputs)

    def run_all(self, inputs: Sequence) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(graph outputs, probed values) as NumPy arrays for inputs in graph-input order."""
        outs, caps = self.function(*[tf.convert_to_tensor(np.asarray(a)) for a in inputs])
        return [t.numpy() for t in outs], [t.numpy() for t in caps]

    def __call__(self, inputs: Sequence) -> list[np.ndarray]:
        """The probed values' arrays (the calibration runner protocol)."""
        return self.run_all(inputs)[1]


def tf_runner(module: Module, values: Sequence[Value]) -> TFProbe:
    """Lowers `module` to one tf.function returning its outputs and `values`, traced once with
    symbolic dims as None; returns a callable `inputs -> [array per value]`."""
    return TFProbe(module, values)
