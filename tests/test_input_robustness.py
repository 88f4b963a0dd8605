"""Regression tests for the crashes of the input fuzzing campaign (issue 19): each malformed
input is a one-line user error (exit 1) naming what is wrong, raised before any work, and
leaves nothing behind."""

import io
import json
import os
import textwrap
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge.ir.errors import ConversionError, ParseError, TensorforgeError
from tensorforge.ir.graph import Graph, Module
from tensorforge.ir.text import parse_module, print_module
from tensorforge.ir.types import DType, TensorType
from tensorforge.ir.verify import VerificationError, verify_module
from tensorforge.passes import PipelineError, parse_pipeline
from tensorforge.passes.quantize.calibrate import load_npz_samples, read_npz
from tensorforge.tools.cli import main

ROOT = Path(__file__).resolve().parent.parent
KERAS = ROOT / "examples" / "digits_cnn.keras"

GOOD = """\
graph @main(%x: f32[batch,3]) -> (f32[batch,3]) {
  %c = clip(%x) {min=0.0, max=6.0} : f32[batch,3]  scope="block" loc="keras:ReLU"
  return %c
}
"""


def cli(*argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.tfir"
    p.write_text(GOOD)
    return p


# -- calibration .npz -----------------------------------------------------------------------

def _npz(tmp_path, **arrays):
    p = tmp_path / "calib.npz"
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("kind", ["not-zip", "empty", "npy", "crc", "object", "truncated",
                                  "lying-header", "directory"])
def test_bad_calibration_files_are_clean_errors(tmp_path, kind):
    module = parse_module(GOOD)
    p = tmp_path / "calib.npz"
    if kind == "not-zip":
        p.write_text("hello")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "npy":
        np.save(tmp_path / "arr.npy", np.zeros((2, 3), np.float32))
        p = tmp_path / "arr.npy"
    elif kind == "crc":
        _npz(tmp_path, x=np.arange(30, dtype=np.float32).reshape(10, 3))
        data = bytearray(p.read_bytes())
        data[120] ^= 0xFF          # inside the stored array data: the CRC no longer matches
        p.write_bytes(bytes(data))
    elif kind == "object":
        np.savez(p, x=np.array([{"a": 1}, None], dtype=object))
    elif kind == "truncated":
        _npz(tmp_path, x=np.zeros((10, 3), np.float32))
        p.write_bytes(p.read_bytes()[:150])
    elif kind == "lying-header":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("x.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False,"
                       b" 'shape': (100000000000, 3), }" + b" " * 53 + b"\n" + b"\0" * 16)
    else:
        p = tmp_path / "dir.npz"
        p.mkdir()
    with pytest.raises(ConversionError) as e:
        load_npz_samples(p, module)
    assert p.name in str(e.value)
    if kind == "object":
        assert "pickle" in str(e.value)


def test_good_calibration_file_reads(tmp_path):
    p = _npz(tmp_path, x=np.ones((4, 3), np.float32))
    samples = load_npz_samples(p, parse_module(GOOD))
    assert len(samples) == 4 and samples[0][0].shape == (1, 3)
    assert read_npz(p)["x"].dtype == np.float32


def test_cli_calibration_file_checked_before_the_model_loads(tmp_path, good, monkeypatch):
    import tensorforge.tools.convert as convert_mod

    monkeypatch.setattr(convert_mod, "load_source", lambda *a, **k: pytest.fail("loaded"))
    (tmp_path / "c.npz").write_text("not a zip")
    rc, _, err = cli("compile", good, "-o", tmp_path / "m.tflite", "--quantize", "int8",
                     "--calibration-data", tmp_path / "c.npz")
    assert rc == 1 and "c.npz" in err and "internal error" not in err


# -- .tfir text -----------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["scope", "loc", "attr", "name"])
def test_control_characters_in_strings(where):
    text = {"scope": GOOD.replace('scope="block"', 'scope="bl\x01ock"'),
            "loc": GOOD.replace('loc="keras:ReLU"', 'loc="ke\x1fras"'),
            "attr": 'module {producer="a\x02b"}\n' + GOOD,
            "name": GOOD.replace("%c", '%"c\x03"')}[where]
    module = parse_module(text)          # taken as the character itself
    printed = print_module(module)
    assert "\x01" not in printed and "\x1f" not in printed and "\x02" not in printed
    assert print_module(parse_module(printed)) == printed


@pytest.mark.parametrize("bad", ['"\\x"', '"\\ud800"', '"\\u12"'])
def test_bad_string_escapes_are_parse_errors(bad):
    with pytest.raises(ParseError) as e:
        parse_module(GOOD.replace('"block"', bad), "m.tfir")
    assert "m.tfir:2:" in str(e.value) and "bad string" in str(e.value)


def test_huge_splat_is_refused_before_allocating():
    text = """graph @main(%x: f32[2]) -> (f32[2]) {
  %c = constant {value=dense<f32[100000000000]: splat 0.0>} : f32[100000000000]
  return %x
}"""
    with pytest.raises(ParseError, match=r"m.tfir:2:.*too large: 400,000,000,000 bytes"):
        parse_module(text, "m.tfir")


@pytest.mark.parametrize("value, message", [
    ("dense<i8[2]: [300, 1]>", "bad dense values"),
    ("dense<f16[2]: [1e30, 1.0]>", "overflows f16"),
    ("dense<i32[2]: [1.5, 1]>", "must be integers"),
    ("dense<f32[20]: splat \"x\">", "splat needs a number"),
    ("dense<i8[20]: splat 1000>", "bad splat value"),
    ("9" * 5000, "number too long"),
])
def test_bad_constants_are_parse_errors(value, message):
    text = f"""graph @main(%x: f32[2]) -> (f32[2]) {{
  %c = constant {{value={value}}} : i8[2]
  return %x
}}"""
    with pytest.raises(ParseError, match=message):
        parse_module(text)


def test_lone_surrogate_names_are_refused():
    with pytest.raises(ParseError, match="lone surrogate U\\+DC80"):
        parse_module(GOOD.replace("%c", '%"\\udc80"'))
    g = Graph("main")
    x = g.add_input(TensorType(DType.f32, (2,)), "x\udc80")
    g.set_outputs([x])
    with pytest.raises(VerificationError, match="not valid Unicode"):
        verify_module(Module([g]))


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text(min_size=1))
def test_printer_output_always_parses(scope, loc, name):
    """Any string in a scope, a loc or a value name prints to text that parses back to the
    same module (control characters, quotes, backslashes, non-ASCII); one that is not valid
    Unicode is refused by the verifier instead of crashing a writer."""
    module = parse_module(GOOD)
    node = next(iter(module.main))
    node.scope, node.loc, node.outputs[0].name = scope, loc, name
    try:
        verify_module(module)
    except VerificationError as e:
        assert "not valid Unicode" in str(e)
        return
    printed = print_module(module)
    again = parse_module(printed)
    assert print_module(again) == printed
    n2 = next(iter(again.main))
    assert (n2.scope, n2.loc) == (scope, loc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_parse_error(text):
    try:
        module = parse_module(text, "f.tfir")
    except ParseError as e:
        assert "f.tfir" in str(e)
        return
    try:
        verify_module(module)
    except VerificationError:
        return
    assert print_module(parse_module(print_module(module))) == print_module(module)


# -- pass pipelines and options -----------------------------------------------------------

@pytest.mark.parametrize("pipeline, message", [
    ('canonicalize{fold="\\x"}', "bad quoted value for 'fold'"),
    ("lower-quantized{io=dp}", "'dp' is not one of float, int8"),
    ("quantize{config=megatron}", "option 'config' of pass 'quantize': no such file: megatron"),
    ("quantize{scheme=int9}", "did you mean int8"),
    ("canonicalize{max-iterations=-3}", "must be at least 1"),
    ("widen-floats{dtypes=\"f16,i8\"}", "not float dtypes: 'i8'"),
    ("shard-propagate{mesh=batch,style=tp}", "mesh axis 'batch' is not NAME=SIZE"),
    ("canonicalize{fold-limit=" + "9" * 5000 + "}", "expected int"),
])
def test_pass_options_are_validated_when_parsed(pipeline, message):
    with pytest.raises(PipelineError) as e:
        parse_pipeline(pipeline)
    assert message in str(e.value)


def test_every_pipeline_problem_is_listed():
    with pytest.raises(PipelineError) as e:
        parse_pipeline('lower-quantized{io=dp},canonicalize{fold="\\x"},quantize{scheme=x}')
    assert "3 problems" in str(e.value)


def test_quoted_option_values_round_trip():
    from tensorforge.passes import print_pipeline

    p = parse_pipeline('shard-propagate{mesh="batch=2,model=4"}')
    assert print_pipeline(p) == 'shard-propagate{mesh="batch=2,model=4"}'
    assert print_pipeline(parse_pipeline(print_pipeline(p))) == print_pipeline(p)


def test_quant_config_file_errors_name_the_file(tmp_path, good):
    bad = tmp_path / "q.json"
    bad.write_text('{"scheme": "int8", "calls": [{"method": {"a": 1}}]}')
    rc, _, err = cli("opt", good, "--passes", f"quantize{{config={bad}}}")
    assert rc == 1 and "q.json" in err and "is not one of set_config" in err
    bad.write_text("9" * 5000)
    with pytest.raises(PipelineError, match="invalid quantization config JSON"):
        parse_pipeline(f"quantize{{config={bad}}}")


# -- output paths ---------------------------------------------------------------------------

@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the model is loaded: output paths must be checked first."""
    import tensorforge.tools.convert as convert_mod

    monkeypatch.setattr(convert_mod, "load_source", lambda *a, **k: pytest.fail("loaded"))


@pytest.mark.parametrize("kind", ["existing-file", "dev-null", "parent-is-file", "unwritable",
                                  "empty", "too-long"])
def test_bad_output_paths_fail_before_any_work(tmp_path, good, no_work, kind):
    (tmp_path / "existing").write_text("keep")
    out = {"existing-file": tmp_path / "existing", "dev-null": "/dev/null",
           "parent-is-file": tmp_path / "existing" / "sub" / "m.tflite",
           "unwritable": "/proc/m.tflite", "empty": "", "too-long": tmp_path / ("x" * 300)}[kind]
    before = sorted(os.listdir(tmp_path))
    for target in (["--target", "tflite"], ["--target", "savedmodel"], ["--target", "all"]):
        rc, _, err = cli("compile", good, "-o", out, *target)
        assert rc == 1, (target, err)
        assert err.startswith("tensorforge: error:") and "internal error" not in err
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "existing").read_text() == "keep"


@pytest.mark.parametrize("out", ["", "/dev/null", "/proc/x.tfir"])
def test_opt_output_checked_before_parsing(tmp_path, out):
    bad = tmp_path / "bad.tfir"
    bad.write_text("this does not parse")
    rc, stdout, err = cli("opt", bad, "-o", out)
    assert rc == 1 and "output" in err and "cannot parse" not in err and stdout == ""


def test_good_output_paths_still_work(tmp_path, good):
    rc, out, err = cli("compile", good, "-o", tmp_path / "new" / "deep" / "m.tflite")
    assert rc == 0, err
    assert (tmp_path / "new" / "deep" / "m.tflite").stat().st_size > 0
    rc, _, err = cli("opt", good, "-o", tmp_path / "o.tfir")
    assert rc == 0 and parse_module((tmp_path / "o.tfir").read_text())


# -- plugins ----------------------------------------------------------------------------------

@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A distribution with a `tensorforge.passes` entry point whose import is recorded."""
    import importlib
    import sys

    site = tmp_path / "site"
    info = site / "tfplugx-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tfplugx\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tensorforge.passes]\nplugx-count = tfplugx\n")
    (site / "tfplugx.py").write_text(textwrap.dedent('''
        import os
        from tensorforge.passes import Pass, register_pass
        os.environ["TFPLUGX_IMPORTED"] = "1"

        @register_pass("plugx-count")
        class Count(Pass):
            """Counts nodes."""
            def run(self, module, ctx):
                return False
    '''))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.delenv("TFPLUGX_IMPORTED", raising=False)
    monkeypatch.delenv("TENSORFORGE_PLUGINS", raising=False)
    yield
    from tensorforge.passes import base, plugins

    base._PASSES.pop("plugx-count", None)
    plugins._loaded_entry_points.discard("plugx-count")
    sys.modules.pop("tfplugx", None)


def test_installed_plugins_are_listed_not_imported(installed_plugin, good):
    rc, out, _ = cli("passes")
    assert rc == 0 and "plugx-count" in out and "tfplugx" in out
    assert "TFPLUGX_IMPORTED" not in os.environ
    rc, _, err = cli("opt", good, "--passes", "plugx-count")
    assert rc == 1 and "--plugins all" in err
    assert "TFPLUGX_IMPORTED" not in os.environ


def test_plugins_load_when_asked(installed_plugin, good, monkeypatch):
    rc, _, err = cli("opt", good, "--passes", "plugx-count", "--plugins", "plugx-count")
    assert rc == 0, err and os.environ.get("TFPLUGX_IMPORTED") == "1"
    rc, _, err = cli("opt", good, "--plugins", "nope")
    assert rc == 1 and "unknown pass plugin 'nope'" in err and "plugx-count" in err


def test_plugins_env_variable(installed_plugin, good, monkeypatch):
    monkeypatch.setenv("TENSORFORGE_PLUGINS", "all")
    rc, _, err = cli("opt", good, "--passes", "plugx-count")
    assert rc == 0, err


def test_plugin_calling_sys_exit_is_a_plugin_error(tmp_path, good):
    p = tmp_path / "exits.py"
    p.write_text("import sys\nsys.exit(3)\n")
    rc, _, err = cli("opt", good, "--load-pass-plugin", p)
    assert rc == 1 and "exits.py" in err and "SystemExit" in err


# -- .keras integrity -----------------------------------------------------------------------

def _rewrite_keras(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["model.weights.h5"] = edit(members["model.weights.h5"])
    with zipfile.ZipFile(dst, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return dst


def _replace_dataset(name, value):
    def edit(data):
        import h5py

        buf = io.BytesIO(data)
        with h5py.File(buf, "r+") as f:
            del f[name]
            f[name] = value
        return buf.getvalue()
    return edit


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated or corrupt"),
    ("int-dtype", "stored dtype kind 'i', declared float32"),
    ("text-dtype", "is not numeric"),
    ("shape", "cannot load Keras model"),
])
def test_keras_weights_are_checked(tmp_path, kind, message):
    from tensorforge.frontends.keras.lift import load_keras_file

    edit = {"truncated": lambda d: d[:len(d) // 2],
            "int-dtype": _replace_dataset("layers/dense/vars/1", np.zeros(32, np.int32)),
            "text-dtype": _replace_dataset("layers/dense/vars/1", np.array([b"x"] * 32)),
            "shape": _replace_dataset("layers/dense/vars/1", np.zeros(33, np.float32))}[kind]
    path = _rewrite_keras(KERAS, tmp_path / "m.keras", edit)
    with pytest.raises(ConversionError) as e:
        load_keras_file(path)
    assert "m.keras" in str(e.value) and message in str(e.value)


def test_a_name_ending_in_a_newline_is_quoted():
    """(Found by the property above: `$` also matches before a final newline.)"""
    module = parse_module(GOOD)
    next(iter(module.main)).outputs[0].name = "0\n"
    printed = print_module(module)
    assert '%"0\\n"' in printed
    assert print_module(parse_module(printed)) == printed
