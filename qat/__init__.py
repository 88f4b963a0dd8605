"""Quantization-aware training: what users train with before any lifting.

- `keras`: `apply_quantization_on_model` (Keras 3 models with trainable fake-quant layers);
- `keras_inplace`: the same for subclassed models, whose layers are intercepted in place,
  with batch norms folded into the conv/dense before them;
- `jax`: `fake_quant` and the Flax `FakeQuant` module (pure JAX, straight-through gradients).

Public as `tensorforge.quantization` (`apply_quantization_on_model`, `scope`, `fake_quant`,
`FakeQuant`). This layer sits above `passes` (it shares the fake-quant marker contract,
`passes/quantize/fake_quant.py`, with the JAX frontend) and beside `frontends` / `backends`:
it imports neither, and they do not import it. Submodules import Keras or JAX, so nothing is
imported here.
"""
