"""The Keras 3 frontend: lifts a Keras model or a `.keras` file into the IR through the TF
frontend (`lift`: loading, tracing, layer-path scopes)."""

from .lift import from_keras, keras_scope_fn, load_keras_file

__all__ = ["from_keras", "keras_scope_fn", "load_keras_file"]
