"""The TensorFlow-graph frontend: lifts a traced `tf.function` (ConcreteFunction) or a
SavedModel signature into the IR. `lift` reads the graph and drives, `ops` lowers each TF op,
`context` holds what the lowerings work with, `shapes` the symbolic shape arithmetic."""

from .lift import default_scope_fn, from_saved_model, lift_concrete_function

__all__ = ["default_scope_fn", "from_saved_model", "lift_concrete_function"]
