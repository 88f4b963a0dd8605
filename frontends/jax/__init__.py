"""JAX / Flax frontend: lifts a traced jaxpr into the IR (`from_jax`, `from_flax`).

Modules, each importing only the ones before it (no import circles):

- `context`: the lifting context every op table sees (`Lifter`, `Const`, `LiftError`, ...)
  and the jaxpr walk;
- `fake_quant`: the lowering of the QAT fake-quant marker (`tensorforge.quantization.fake_quant`)
  to IR quantize/dequantize;
- `ops`: the primitive -> lowering table (`TABLE`), fake-quant marker included;
- `lift`: the driver, `from_jax` / `from_flax`.
"""

from .lift import from_flax, from_jax

__all__ = ["from_jax", "from_flax"]
