"""JAX/Flax -> IR -> TFLite, SavedModel and TF.js through the public API and the command
line, checked against the JAX function itself (float32, 1e-4 relative)."""

import os
import subprocess
import sys
import textwrap

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.tools.bench.models import flax_cnn, flax_encoder  # noqa: E402


def test_jnp_function_symbolic_batch_in_every_runtime(tmp_path):
    """A plain jax.numpy function with a symbolic batch: the artifacts keep the batch
    dynamic and each runtime agrees with JAX at two batch sizes."""
    w = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)

    def fn(x):
        h = jnp.tanh(x @ w + 0.5)
        return h - h.mean(axis=-1, keepdims=True) + jnp.max(x, axis=-1, keepdims=True)

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 6"), jnp.float32)
    result = tensorforge.convert(fn, target="all", output=tmp_path / "out", verify=True,
                                 example_args=[spec])
    assert result.verification.ok, result.verification.table()
    assert result.verification.reference == "jax"
    assert result.module.main.inputs[0].type.shape == ("b", 6)
    from ai_edge_litert.interpreter import Interpreter
    import tensorflow as tf

    from tensorforge.tools.node_runner import run_in_node

    litert = Interpreter(model_path=str(result.paths["tflite"])).get_signature_runner()
    sm = tf.saved_model.load(str(result.paths["savedmodel"])).signatures["serving_default"]
    [in_name] = result.module.metadata["input_names"]
    [out_name] = result.module.metadata["output_names"]
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float32)
        want = np.asarray(fn(x))
        got = {"tflite": litert(**{in_name: x})[out_name],
               "savedmodel": sm(**{in_name: tf.constant(x)})[out_name].numpy(),
               "tfjs": run_in_node(result.paths["tfjs"], {in_name: x}, [out_name])[0]}
        for runtime, out in got.items():
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5, err_msg=runtime)
    # no opaque XlaCallModule: the SavedModel graph is plain TF ops
    ops = {op.type for op in sm.graph.get_operations()}
    ops |= {n.op for f in sm.graph.as_graph_def().library.function for n in f.node_def}
    assert not any(op.startswith("Xla") for op in ops)


def test_flax_models_all_targets_against_jax(tmp_path):
    for i, build in enumerate((flax_cnn, lambda: flax_encoder(1, 32, 4, 8))):
        apply, variables, x = build()
        result = tensorforge.convert(apply, target="all", output=tmp_path / f"m{i}",
                                     verify=True, example_args=[x], params=variables)
        v = result.verification
        assert v.ok, v.table()
        assert {r.runtime for r in v.rows} == {"ir", "tflite", "savedmodel", "tfjs"}


def test_cli_factory_source(tmp_path):
    src = tmp_path / "model.py"
    src.write_text(textwrap.dedent('''
        import jax.numpy as jnp
        import numpy as np
        import tensorforge

        W = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)

        def predict(params, x):
            return jnp.maximum(x @ params["w"], 0.0)

        def factory():
            return tensorforge.JaxModel(predict, [np.ones((2, 4), np.float32)], {"w": W})

        def broken():
            return 1 / 0
    '''))
    proc = subprocess.run([sys.executable, "-m", "tensorforge", "compile", f"{src}:factory",
                           "--target", "tflite", "-o", str(tmp_path / "m.tflite"), "--verify"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "verification against jax" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tensorforge", "compile", f"{src}:broken",
                           "-o", str(tmp_path / "x.tflite")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "model.py:15" in proc.stderr and "ZeroDivisionError" in \
        proc.stderr and "Traceback" not in proc.stderr
