"""`convert(..., target="savedmodel", trainable=True)`: what the fine-tuning form needs before
the backend (docs/design/trainable-savedmodel.md).

The optimization pipeline is written for inference: it deletes `x + 0` and `x * 1` (a
freshly initialized bias or scale), merges equal constants (CSE: two zero biases would become
one variable), folds batch-norm into the convolution before it and folds constant
subexpressions. Each of these would change, merge or drop a *parameter* of the model. So the
parameters are shielded while the pipeline runs: each becomes a graph input (nothing folds
an unknown), and after the pipeline each is a named constant again, which the backend makes a
trainable variable (`backends/tf_lowering.parameter_flags`).

    shields = shield_parameters(module)   # before optimize
    optimize(module, passes)
    restore_parameters(module, shields)   # after it
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.errors import ConversionError
from ..ir.graph import Module

QUANTIZED_OPS = ("quantize", "dequantize", "fake_quant")


@dataclass
class Shields:
    """Where the shielded parameters went: graph inputs from index `first` on, in order."""

    first: int
    params: list[tuple[np.ndarray, str, str, str]]     # (array, name, scope, loc)
    input_names: list | None                           # the metadata before shielding


def check_trainable(targets: list[str], quantization, module: Module, *,
                    fake_quant: bool = False) -> None:
    """Refuses, before any work, what has no fine-tuning form: a target other than the
    SavedModel, and a quantized model (its weights are integer codes; `fake_quant`: the model
    was trained with fake quantization, which converts to the quantized form)."""
    others = [t for t in targets if t != "savedmodel"]
    if others:
        raise ConversionError(f"trainable=True writes a SavedModel for fine-tuning in "
                              f"TensorFlow; it cannot write {', '.join(others)} (convert them "
                              f"without trainable)")
    quantized = quantization is not None or fake_quant or any(
        node.op in QUANTIZED_OPS for graph in module.all_graphs() for node in graph)
    if quantized:
        raise ConversionError("trainable=True needs a float model: a quantized model's weights "
                              "are integer codes, which TensorFlow cannot train. Fine-tune the "
                              "float model (then quantize it), or use quantization-aware "
                              "training")


def shield_parameters(module: Module) -> Shields:
    """Turns every parameter of `module.main` (a named float constant) into a graph input
    appended after the real ones, so that no pass folds, merges or deletes it."""
    graph = module.main
    shields = Shields(len(graph.inputs), [], module.metadata.get("input_names"))
    for node in list(graph):
        if node.op != "constant":
            continue
        v = node.outputs[0]
        if not v.name or not v.type.dtype.is_float:
            continue
        stand_in = graph.add_input(v.type, v.name)
        v.replace_all_uses_with(stand_in)
        graph.erase(node)
        shields.params.append((node.attrs["value"], v.name, node.scope, node.loc))
    if shields.input_names is not None:
        module.metadata["input_names"] = [*shields.input_names,
                                          *(p[1] for p in shields.params)]
    return shields


def restore_parameters(module: Module, shields: Shields) -> None:
    """Makes each shielded input a named constant again (placed first in the graph); one the
    pipeline left unused is dropped."""
    graph = module.main
    stand_ins = graph.inputs[shields.first:]
    if len(stand_ins) != len(shields.params):
        raise ConversionError(f"the pass pipeline changed the graph's inputs: "
                              f"{len(stand_ins)} parameter inputs after it, "
                              f"{len(shields.params)} before")
    anchor = graph.first
    for stand_in, (array, name, scope, loc) in zip(stand_ins, shields.params):
        if not stand_in.uses:
            continue
        const = graph.constant(array, name, scope=scope, loc=loc, before=anchor)
        const.quant, const.layout = stand_in.quant, stand_in.layout
        stand_in.replace_all_uses_with(const)
    del graph.inputs[shields.first:]
    if shields.input_names is not None:
        module.metadata["input_names"] = shields.input_names
    else:
        module.metadata.pop("input_names", None)


def unlifted_weights(model, module: Module) -> list[str]:
    """The trainable weights of Keras `model` (paths) that are not parameters of `module`:
    the frontends fold arithmetic on weights into new, unnamed constants while lifting (on
    the TensorFlow backend a convolution's reshaped bias and the scales and offsets of
    batch-norm and layer-norm; on the JAX backend batch-norm's), so these stay constants in
    the SavedModel."""
    names = {node.outputs[0].name for graph in module.all_graphs() for node in graph
             if node.op == "constant" and node.outputs[0].name}
    out = []
    for v in getattr(model, "trainable_variables", []):
        path = str(getattr(v, "path", v.name))
        parts = path.split("/")
        if not any("/".join(parts[i:]) in names for i in range(len(parts))):
            out.append(path)
    return out
