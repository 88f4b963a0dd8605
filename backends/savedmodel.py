"""SavedModel backend: the IR lowered to plain TF ops (`tf_lowering`), weights as tf.Variables,
saved with one `serving_default` signature.

    from tensorforge.backends.savedmodel import write_savedmodel
    write_savedmodel(module, "out/model")    # ConversionError lists every unlowerable node

The function is built from a GraphDef written straight from the IR and imported in one call
(`savedmodel_direct`); what that path does not cover (control flow, the trainable form,
several modules sharing weights) is lowered op by op by `tf_lowering`
(docs/design/savedmodel.md).

The directory is written atomically: the SavedModel is saved into a temporary sibling directory
and renamed into place, so a failed compile leaves neither a partial directory nor a clobbered
earlier artifact.

Large models: every weight past `VARIABLE_MIN_ELEMENTS` elements is a variable, stored in the
checkpoint under `variables/`, never a constant in `saved_model.pb` (a proto must stay under
2 GB). When the variables pass `SHARD_BYTES` in all, the checkpoint is cut into data files of
at most that size (`variables.data-0000i-of-0000n`, TF's MaxShardSizePolicy; a big tensor is
saved as slices and restored whole). Smaller models keep the one data file.

Fine-tuning (`write_savedmodel(module, dir, trainable=True)`; docs/design/trainable-savedmodel.md):
the parameters (named float constants: JAX params, Flax variables, Keras weights) are
trainable `tf.Variable`s, every op is lowered to TF ops with gradients, and the root object
has a differentiable `__call__`, `variables` and `trainable_variables` beside the
`serving_default` signature:

    loaded = tf.saved_model.load("out/model")
    with tf.GradientTape() as tape:
        loss = loss_fn(loaded(x), y)
    grads = tape.gradient(loss, loaded.trainable_variables)
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Module
from .common import swap_directory
from .savedmodel_direct import NotDirect, build_direct
from .tf_lowering import lower_all_to_tf, lower_to_tf, lowering_problems

SIGNATURE_KEY = "serving_default"
SHARD_BYTES = 1 << 30   # the checkpoint's data files stay at most this big (see above)

__all__ = ["SIGNATURE_KEY", "lowering_problems", "write_savedmodel",
           "write_savedmodel_signatures"]


def _is_replaceable(path: str) -> bool:
    """An existing target we may replace: an empty directory or an earlier SavedModel."""
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    entries = os.listdir(path)
    return not entries or "saved_model.pb" in entries


def write_savedmodel(module: Module, directory: str | os.PathLike, *,
                     trainable=False, notes: list[str] | None = None,
                     via: str = "auto") -> None:
    """Saves `module.main` as a TF SavedModel in `directory` with a `serving_default`
    signature (inputs/outputs named by module.metadata input_names/output_names, else the
    value names). Raises ConversionError, before writing anything, listing every node that
    cannot be lowered. Replaces an earlier SavedModel at `directory` only once the new one is
    complete.

    trainable=True (or a list of parameter-name globs: only those train) writes the
    fine-tuning form (see the module docstring): parameters as trainable variables, a
    differentiable `__call__`; a quantized module, or a node TF cannot differentiate, is a
    ConversionError naming it.

    The forward function is built from a GraphDef written straight from the IR
    (`savedmodel_direct`, docs/design/savedmodel.md) when that path covers the module;
    otherwise (control flow, quantized modules, ...) op by op through `tf_lowering`, and
    `notes`, when given, gets a line saying why. The trainable form always takes
    `tf_lowering` (its gradients are checked op by op). via="direct" makes the fallback a
    ConversionError, via="tf" forces the `tf_lowering` path."""
    if via not in ("auto", "direct", "tf"):
        raise ValueError(f"via must be 'auto', 'direct' or 'tf', not {via!r}")
    target = os.path.abspath(os.fspath(directory))
    if os.path.lexists(target) and not _is_replaceable(target):
        raise ConversionError("cannot write SavedModel", [Diagnostic(
            f"{target} exists and is not a SavedModel directory; refusing to overwrite it")])
    if trainable is not False and trainable is not True and isinstance(trainable, str):
        trainable = [trainable]
    if via != "tf" and trainable is False:
        try:
            weights, concrete = build_direct(module)
        except NotDirect as err:
            where = f" ({err.node.describe()})" if err.node is not None else ""
            if via == "direct":
                raise ConversionError(f"cannot write the SavedModel directly: {err}{where}"
                                      ) from None
            if notes is not None:
                notes.append(f"savedmodel: written through TensorFlow op by op (slower): "
                             f"{err}{where}")
        else:
            _save_atomic(weights, target, {SIGNATURE_KEY: concrete})
            return
    lowered = lower_to_tf(module, trainable=trainable)   # raises with every problem at once
    if trainable is not False:
        _check_differentiable(lowered)
    _save_atomic(lowered.tf_module, target, {SIGNATURE_KEY: lowered.concrete_function()})


def _check_differentiable(lowered) -> None:
    """Traces the gradient of the float outputs' sum with respect to the trainable variables
    once, so that a graph TF cannot differentiate fails here, not in the user's training
    loop."""
    root = lowered.tf_module
    if not root.trainable_variables:
        raise ConversionError("cannot write a trainable SavedModel", [Diagnostic(
            "the module has no trainable parameters (named float constants); "
            "nothing to fine-tune")])

    def grads(*args):
        with tf.GradientTape() as tape:
            outs = lowered._call(*args)
            loss = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in outs.values()
                             if t.dtype.is_floating] or [tf.constant(0.0)])
        return tape.gradient(loss, root.trainable_variables)
    try:
        tf.function(grads, input_signature=lowered.input_specs,
                    autograph=False).get_concrete_function()
    except (LookupError, ValueError, TypeError) as err:
        raise ConversionError("cannot write a trainable SavedModel", [Diagnostic(
            f"TensorFlow cannot differentiate the lowered graph: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}")]) from err


def write_savedmodel_signatures(modules: dict[str, Module],
                                directory: str | os.PathLike) -> None:
    """Saves several modules (key -> Module, e.g. an LLM's `prefill` and `decode` steps) as one
    SavedModel in `directory` with a signature per key. Weights the modules share (equal
    constants) are one variable, stored once. Raises ConversionError listing every
    unlowerable node of every module before writing anything; atomic like
    `write_savedmodel`."""
    target = os.path.abspath(os.fspath(directory))
    if os.path.lexists(target) and not _is_replaceable(target):
        raise ConversionError("cannot write SavedModel", [Diagnostic(
            f"{target} exists and is not a SavedModel directory; refusing to overwrite it")])
    holder, lowered = lower_all_to_tf(modules)
    _save_atomic(holder, target, {key: one.concrete_function() for key, one in lowered.items()})


def _save_atomic(tf_module, target: str, signatures: dict) -> None:
    """tf.saved_model.save into a temporary sibling of `target`, then swapped into place."""
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(target)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        tf.saved_model.save(tf_module, tmp, signatures=signatures,
                            options=_save_options(tf_module))
        swap_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_options(tf_module, shard_bytes: int | None = None) -> tf.saved_model.SaveOptions:
    """Checkpoint shards of at most `shard_bytes` (default SHARD_BYTES) once the variables
    pass that; the default single data file otherwise."""
    limit = SHARD_BYTES if shard_bytes is None else shard_bytes
    total = sum(v.shape.num_elements() * v.dtype.size for v in tf_module.variables)
    if total <= limit:
        return tf.saved_model.SaveOptions()
    return tf.saved_model.SaveOptions(
        experimental_sharding_callback=tf.train.experimental.MaxShardSizePolicy(limit))
