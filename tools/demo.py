"""`make demo`: the compiler end to end on bundled examples.

1. IR pipeline: parses `examples/small_cnn.tfir`, canonicalizes it with timing, prints the
   optimized IR and checks in the interpreter that it computes what the original did.
2. Keras -> every target: compiles `examples/digits_cnn.keras` (a small CNN trained on
   scikit-learn's 8x8 digits) to TFLite, SavedModel and TF.js with verification (Keras vs IR
   interpreter vs LiteRT, `tf.saved_model.load` and Node.js @tensorflow/tfjs on the same
   inputs), prints the table, and measures the TFLite artifact's accuracy on held-out digits.
3. Quantization: compiles the same model to a full-integer int8 TFLite model, calibrated on
   100 digits, and compares its LiteRT accuracy and size with the float artifact on the other
   held-out digits.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ..ir.interpreter import run_graph
from ..ir.text import parse_module, print_module
from ..ir.verify import verify_module
from ..passes import PassContext, PassManager

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "small_cnn.tfir"
PIPELINE = "canonicalize"
OUT_DIR = Path("build") / "demo"


def op_histogram(graph) -> collections.Counter:
    return collections.Counter(n.op for n in graph)


def ir_pipeline_demo(console: Console) -> bool:
    module = parse_module(EXAMPLE.read_text(), str(EXAMPLE))
    verify_module(module)
    original = module.clone()
    console.rule(f"tensorforge demo: {EXAMPLE.name} | pipeline '{PIPELINE}'")

    ctx = PassContext(verify_each=True, time_passes=True)
    PassManager.parse(PIPELINE).run(module, ctx)
    console.print(print_module(module, elide=True), highlight=False, markup=False,
                  soft_wrap=True)
    console.print(ctx.timing_report(), highlight=False, soft_wrap=True)

    before, after = op_histogram(original.main), op_histogram(module.main)
    table = Table(title="ops before / after")
    for col in ("op", "before", "after"):
        table.add_column(col, justify="right" if col != "op" else "left")
    for op in sorted(set(before) | set(after)):
        table.add_row(op, str(before[op]), str(after[op]))
    table.add_row("[b]total[/b]", str(len(original.main)), str(len(module.main)))
    console.print(table)

    batch = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    [ref] = run_graph(original.main, [batch])
    [out] = run_graph(module.main, [batch])
    err = float(np.max(np.abs(ref - out)))
    ok = err <= 1e-5 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    console.print(f"interpreter check on a batch of 4: max |original - canonicalized| = "
                  f"{err:.2e} -> {'OK' if ok else 'MISMATCH'}")
    return ok


def keras_demo(console: Console) -> bool:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ai_edge_litert.interpreter import Interpreter

    from .convert import convert

    src = EXAMPLES / "digits_cnn.keras"
    console.rule(f"tensorforge demo: {src.name} -> TFLite, SavedModel, TF.js (verified)")
    result = convert(str(src), target="all", output=OUT_DIR / "digits_cnn", verify=True)
    for target, path in result.paths.items():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) \
            if path.is_dir() else path.stat().st_size
        console.print(f"wrote {target:<10} {path} ({size:,} bytes)", highlight=False)
    console.print(f"ops after canonicalize: {dict(op_histogram(result.module.main))}",
                  soft_wrap=True)
    console.print(result.verification.table(), highlight=False, soft_wrap=True)

    data = np.load(EXAMPLES / "digits_test.npz")
    runner = Interpreter(model_path=str(result.paths["tflite"])).get_signature_runner()
    [name] = result.module.metadata["output_names"]
    [in_name] = result.module.metadata["input_names"]
    probs = runner(**{in_name: data["x"]})[name]
    acc = float(np.mean(probs.argmax(-1) == data["y"]))
    console.print(f"LiteRT accuracy on {len(data['y'])} held-out digits: {acc:.3f}")
    return result.verification.ok and acc > 0.9


def _litert_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (in_name,) = runner.get_input_details()
    probs = next(iter(runner(**{in_name: x}).values()))
    return float(np.mean(probs.argmax(-1) == y))


def quantization_demo(console: Console) -> bool:
    from .convert import convert

    src = EXAMPLES / "digits_cnn.keras"
    console.rule(f"tensorforge demo: {src.name} -> int8 TFLite (100 calibration digits)")
    data = np.load(EXAMPLES / "digits_test.npz")
    calib, x, y = data["x"][:100], data["x"][100:], data["y"][100:]
    result = convert(str(src), target="tflite", output=OUT_DIR / "digits_cnn_int8.tflite",
                     quantization="int8", calibration_data=[calib[i:i + 1] for i in range(100)],
                     verify=True)
    console.print(result.verification.table(), highlight=False, soft_wrap=True)
    float_path = OUT_DIR / "digits_cnn" / "model.tflite"
    int8_path = result.paths["tflite"]
    table = Table(title=f"float vs int8 on {len(y)} held-out digits (LiteRT)")
    for col in ("model", "bytes", "accuracy"):
        table.add_column(col, justify="right" if col != "model" else "left")
    accs = {}
    for name, path in (("float32", float_path), ("int8", int8_path)):
        accs[name] = _litert_accuracy(path, x, y)
        table.add_row(name, f"{path.stat().st_size:,}", f"{accs[name]:.3f}")
    console.print(table)
    return result.verification.ok and accs["int8"] >= accs["float32"] - 0.01


def main() -> int:
    console = Console()
    ok = ir_pipeline_demo(console)
    ok = keras_demo(console) and ok
    ok = quantization_demo(console) and ok
    console.rule("demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
