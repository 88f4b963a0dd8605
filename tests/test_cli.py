"""The command line as a user meets it: a real `tensorforge` process, exit codes, stdout/stderr,
no tracebacks, no hangs, plugins."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "plugins" / "clip_to_relu6.py"

GOOD = """\
graph @main(%x: f32[2,3]) -> (f32[2,3]) {
  %c = clip(%x) {min=0.0, max=6.0} : f32[2,3]
  %n = neg(%c) : f32[2,3]
  %m = neg(%n) : f32[2,3]
  return %m
}
"""


def tf(*args, stdin=None, env=None):
    proc = subprocess.run([sys.executable, "-m", "tensorforge", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.tfir"
    p.write_text(GOOD)
    return p


def test_opt_prints_result(good):
    proc = tf("opt", good, "--passes", "canonicalize")
    assert proc.returncode == 0, proc.stderr
    assert "neg" not in proc.stdout and "clip(%x)" in proc.stdout


def test_opt_reads_stdin_and_console_script():
    exe = Path(sys.executable).parent / "tensorforge"
    proc = subprocess.run([str(exe), "opt", "-", "--passes", "algebraic-simplify"], input=GOOD,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("neg") == 0


def test_instrumentation_flags(good):
    proc = tf("opt", good, "--passes", "cse,algebraic-simplify", "--print-ir-after", "all",
              "--verify-each", "--time-passes")
    assert proc.returncode == 0
    assert "IR Dump After cse (unchanged)" in proc.stderr
    assert "IR Dump After algebraic-simplify (changed)" in proc.stderr
    assert "Pass execution timing report" in proc.stderr
    assert "algebraic-simplify" in proc.stderr.split("timing report")[1]
    only = tf("opt", good, "--passes", "cse,dce", "--print-ir-after", "dce")
    assert "After dce" in only.stderr and "After cse" not in only.stderr


def test_output_file_written_atomically(good, tmp_path):
    out = tmp_path / "out.tfir"
    proc = tf("opt", good, "--passes", "canonicalize", "-o", out)
    assert proc.returncode == 0 and proc.stdout == ""
    assert "clip" in out.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("text, expected", [
    (GOOD[:60], "end of input"),                                      # truncated
    (GOOD.replace("f32[2,3]) {", "f99[2,3]) {"), "unknown dtype 'f99'"),  # wrong type
    (GOOD.replace("neg(%c)", "neg(%zz)"), "use of undefined value %zz"),
    (GOOD.replace("neg(%c)", "neg(%m)"), "cycle through"),
    (GOOD.replace("%n = neg(%c) : f32[2,3]", "%n = neg(%c) : f32[9]"),
     "declared f32[9] but neg infers f32[2,3]"),                     # verifier
    (GOOD.replace("{min=0.0, max=6.0}", "{min=0.0}"), "missing required attribute 'max'"),
    ("\x00\x01binary", "unexpected character"),
])
def test_malformed_input_is_a_precise_error(tmp_path, text, expected):
    p = tmp_path / "bad.tfir"
    p.write_text(text)
    proc = tf("opt", p, "--passes", "canonicalize")
    assert proc.returncode == 1
    assert expected in proc.stderr
    assert proc.stderr.startswith("tensorforge: error:")
    assert proc.stdout == ""


def test_verifier_error_names_node_scope_and_loc(tmp_path):
    p = tmp_path / "bad.tfir"
    p.write_text("""graph @main(%x: f32[2]) -> (f32[3]) {
  %y = relu(%x) : f32[3]  scope="block_3/act" loc="keras:ReLU"
  return %y
}""")
    proc = tf("opt", p)
    assert proc.returncode == 1
    assert "node %y = relu scope 'block_3/act' loc 'keras:ReLU'" in proc.stderr


def test_missing_and_non_text_files(tmp_path):
    assert "no such file" in tf("opt", tmp_path / "nope.tfir").stderr
    blob = tmp_path / "blob.tfir"
    blob.write_bytes(b"\xff\xfe\x00garbage")
    proc = tf("opt", blob)
    assert proc.returncode == 1 and "not UTF-8 text" in proc.stderr
    assert "is a directory" in tf("opt", tmp_path).stderr


def test_unknown_pass_and_option_name_close_matches(good):
    proc = tf("opt", good, "--passes", "canonicalise,dce{agressive=true},cse{x=1}")
    assert proc.returncode == 1
    assert "unknown pass 'canonicalise'; did you mean canonicalize" in proc.stderr
    assert "pass 'dce' has no option 'agressive'" in proc.stderr
    assert "pass 'cse' has no option 'x'" in proc.stderr
    bad_value = tf("opt", good, "--passes", "canonicalize{max-iterations=lots}")
    assert "expected int, got 'lots'" in bad_value.stderr


def test_plugin_runs_in_pipeline_and_is_listed(good):
    listed = tf("passes", "--load-pass-plugin", PLUGIN)
    assert listed.returncode == 0
    assert "clip-to-relu6" in listed.stdout and "also-relu=false" in listed.stdout
    assert "canonicalize" in listed.stdout
    proc = tf("opt", good, "--load-pass-plugin", PLUGIN, "--passes",
              "clip-to-relu6{also-relu=true},canonicalize", "--verify-each")
    assert proc.returncode == 0, proc.stderr
    assert "relu6(%x)" in proc.stdout and "clip" not in proc.stdout


def test_broken_plugins_are_clean_errors(tmp_path, good):
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def broken(:\n")
    proc = tf("opt", good, "--load-pass-plugin", syntax)
    assert proc.returncode == 1 and "syntax.py:1" in proc.stderr and "syntax error" in proc.stderr
    raising = tmp_path / "raising.py"
    raising.write_text("x = 1\nraise RuntimeError('plugin exploded')\n")
    proc = tf("opt", good, "--load-pass-plugin", raising)
    assert proc.returncode == 1 and "raising.py:2" in proc.stderr and "plugin exploded" in proc.stderr


def test_entry_point_plugin(tmp_path, good):
    """A third-party distribution exposing a pass through the `tensorforge.passes` group."""
    site = tmp_path / "site"
    (site / "tfplug-0.1.dist-info").mkdir(parents=True)
    (site / "tfplug-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tfplug\nVersion: 0.1\n")
    (site / "tfplug-0.1.dist-info" / "entry_points.txt").write_text(
        "[tensorforge.passes]\ncount-nodes = tfplug\n")
    (site / "tfplug.py").write_text(textwrap.dedent('''
        from tensorforge.passes import Pass, register_pass

        @register_pass("count-nodes")
        class CountNodes(Pass):
            """Counts nodes into the pass statistics (changes nothing)."""
            def run(self, module, ctx):
                ctx.bump("nodes", len(module.main))
                return False
    '''))
    env = {"PYTHONPATH": str(site)}
    listed = tf("passes", env=env).stdout     # listed as installed, not imported
    assert "installed pass plugins" in listed and "count-nodes" in listed
    proc = tf("opt", good, "--passes", "count-nodes", env=env)   # opt-in: not loaded
    assert proc.returncode == 1 and "--plugins all" in proc.stderr
    proc = tf("opt", good, "--passes", "count-nodes", "--plugins", "all", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = tf("opt", good, "--passes", "count-nodes", env={**env, "TENSORFORGE_PLUGINS":
                                                            "count-nodes"})
    assert proc.returncode == 0, proc.stderr


def test_internal_errors_have_no_traceback(tmp_path, good):
    plugin = tmp_path / "buggy.py"
    plugin.write_text(textwrap.dedent('''
        from tensorforge.passes import Pass, register_pass

        @register_pass("buggy")
        class Buggy(Pass):
            """Crashes."""
            def run(self, module, ctx):
                return 1 / 0
    '''))
    proc = tf("opt", good, "--load-pass-plugin", plugin, "--passes", "buggy")
    assert proc.returncode == 3
    assert "internal error: ZeroDivisionError" in proc.stderr


def test_big_input_does_not_hang(tmp_path):
    lines = ["graph @main(%x: f32[4]) -> (f32[4]) {", "  %v0 = neg(%x) : f32[4]"]
    lines += [f"  %v{i} = neg(%v{i-1}) : f32[4]" for i in range(1, 20001)]
    lines += ["  return %v20000", "}"]
    p = tmp_path / "long.tfir"
    p.write_text("\n".join(lines))
    proc = tf("opt", p, "--passes", "canonicalize")
    assert proc.returncode == 0
    assert proc.stdout.count("neg") == 1


CUSTOM_LAYERS = """\
import keras


@keras.saving.register_keras_serializable(package="my_layers")
class Scale(keras.layers.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return x * self.w


class Shift(keras.layers.Layer):      # not registered: found by its class name
    def call(self, x):
        return x + 1.0
"""


def test_custom_objects_load_a_keras_file_with_user_layers(tmp_path):
    """A .keras file naming the user's layers loads with --custom-objects FILE.py (registered
    classes register on import, the others match by class name); without it, the error says
    what to pass; a broken file points at its line. safe_mode stays on."""
    (tmp_path / "my_layers.py").write_text(CUSTOM_LAYERS)
    save = textwrap.dedent(f"""\
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import keras, numpy as np
        from my_layers import Scale, Shift
        inputs = keras.Input((4,), name="x")
        h = Shift(name="shift")(Scale(name="scale")(keras.layers.Dense(3, name="d")(inputs)))
        keras.Model(inputs, h).save({str(tmp_path / "model.keras")!r})
        """)
    subprocess.run([sys.executable, "-c", save], check=True, timeout=120, capture_output=True)
    model, out = tmp_path / "model.keras", tmp_path / "m.tflite"

    missing = tf("compile", model, "-o", out)
    assert missing.returncode != 0 and "--custom-objects" in missing.stderr, missing.stderr
    assert not out.exists()

    ok = tf("compile", model, "-o", out, "--verify", "--custom-objects",
            tmp_path / "my_layers.py")
    assert ok.returncode == 0, ok.stderr
    assert out.exists() and "tflite" in ok.stdout

    (tmp_path / "broken.py").write_text("import keras\n\nraise RuntimeError('no GPU')\n")
    broken = tf("compile", model, "-o", out, "--custom-objects", tmp_path / "broken.py")
    assert broken.returncode != 0 and "broken.py:3" in broken.stderr, broken.stderr


def test_generate_runs_a_convert_lm_artifact(tmp_path):
    """`tensorforge generate` prints the tokens `tensorforge.generate` returns; a malformed
    prompt, a missing artifact and a prompt that does not fit are one-line errors."""
    import keras
    import keras_hub
    import numpy as np

    import tensorforge

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=32)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    art = tensorforge.convert_lm(lm, output=tmp_path / "lm.tflite", max_sequence_length=16)
    want = tensorforge.generate(art.path, [5, 17, 3], 6)

    ok = tf("generate", art.path, "--prompt-ids", "5,17,3", "-n", 6)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == ",".join(map(str, np.asarray(want)))

    bad = tf("generate", art.path, "--prompt-ids", "5,x", "-n", 6)
    assert bad.returncode == 1 and "comma-separated token ids" in bad.stderr
    missing = tf("generate", tmp_path / "none.tflite", "--prompt-ids", "1", "-n", 2)
    assert missing.returncode == 1 and "no such artifact" in missing.stderr
    long = tf("generate", art.path, "--prompt-ids", "1,2,3", "-n", 20)
    assert long.returncode == 1 and "does not fit" in long.stderr
