"""Real artifacts the campaigns mutate: the golden `.tfir` files, the example model, and
small modules built here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from . import PACKAGE_ROOT

SMALL = """\
module {producer="fuzz", source="seed"}
graph @main(%x: f32[2,3], %"odd name": f32[3]) -> (f32[2,3], f32[2,3]) {
  %c = clip(%x) {min=0.0, max=6.0} : f32[2,3]  scope="block/clip" loc="keras:ReLU"
  %w = constant {value=dense<f32[3,3]: [1.0, 0.5, -0.0, 2.0, 1e-07, 3.0, 0.0, 1.0, 4.0]>} : f32[3,3]
  %m = matmul(%c, %w) : f32[2,3]
  %b = add(%m, %"odd name") : f32[2,3]
  %s = constant {value=dense<f32[64]: splat 0.25>} : f32[64]
  %q = quantize(%b) {scale=[0.05], zero_point=[0]} : i8[2,3] quant<scale=[0.05], zero_point=[0]>
  %d = dequantize(%q) {scale=[0.05], zero_point=[0]} : f32[2,3]
  return %b, %d
}
"""


@lru_cache(maxsize=None)
def tfir_seeds() -> tuple[str, ...]:
    texts = [SMALL]
    for d in (PACKAGE_ROOT / "tests" / "golden", PACKAGE_ROOT / "examples"):
        if d.is_dir():
            texts += [p.read_text() for p in sorted(d.glob("*.tfir"))]
    return tuple(texts)


def keras_seed() -> Path | None:
    p = PACKAGE_ROOT / "examples" / "digits_cnn.keras"
    return p if p.is_file() else None
