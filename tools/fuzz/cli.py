"""The command line: random argument lists (commands, flags, pipelines, quantization
options, input files of every kind, output paths that exist, are devices, sit under a file or
cannot be written) through the CLI's `main()` in-process. Exit 0, 1 (a one-line error) or 2
(a usage error) are fine; 3 (internal error) or a traceback is a crash; a failed command
must leave nothing in its output directory."""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import sys
from pathlib import Path

import numpy as np

from ...ir.errors import TensorforgeError
from . import PACKAGE_ROOT, Campaign, Case
from .mutate import mutate_text
from .seeds import tfir_seeds

GOOD = """\
graph @main(%x: f32[batch,3]) -> (f32[batch,3]) {
  %c = clip(%x) {min=0.0, max=6.0} : f32[batch,3]  scope="block"
  %n = neg(%c) : f32[batch,3]
  return %n
}
"""

PLUGIN = '''
from tensorforge.passes import Pass, register_pass

@register_pass("fuzz-noop")
class FuzzNoop(Pass):
    """Changes nothing."""
    def run(self, module, ctx):
        return False
'''


class CLIInternalError(Exception):
    """Exit code 3: the CLI reported an internal error; `sig` is its innermost frame."""

    def __init__(self, message: str, sig: str):
        super().__init__(message)
        self.sig = sig


def _setup(work: Path) -> None:
    (work / "good.tfir").write_text(GOOD)
    (work / "parse_error.tfir").write_text(GOOD.replace("return %n", "return %nope ("))
    (work / "invalid.tfir").write_text(GOOD.replace("f32[batch,3]  scope", "f32[batch,4]  scope"))
    (work / "empty.tfir").write_text("")
    (work / "binary.tfir").write_bytes(b"\xff\xfe\x00graph")
    (work / "dir").mkdir()
    (work / "plugin.py").write_text(PLUGIN)
    (work / "bad_plugin.py").write_text("def broken(:\n")
    (work / "exit_plugin.py").write_text("import sys\nsys.exit(3)\n")
    rng = np.random.default_rng(0)
    np.savez(work / "calib.npz", x=rng.normal(size=(4, 3)).astype(np.float32))
    (work / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    np.save(work / "arr.npy", np.zeros((4, 3), np.float32))
    (work / "qconfig.json").write_text('{"version": 1, "scheme": "int8", "calls": []}')
    (work / "bad_qconfig.json").write_text('{"scheme": 7}')
    (work / "notes.txt").write_text("not a model")
    keras = PACKAGE_ROOT / "examples" / "digits_cnn.keras"
    if keras.is_file():
        (work / "model.keras").write_bytes(keras.read_bytes())


SOURCES = ["good.tfir", "good.tfir", "good.tfir", "parse_error.tfir", "invalid.tfir",
           "empty.tfir", "binary.tfir", "dir", "missing.tfir", "notes.txt", "calib.npz", "",
           "-", "plugin.py", "model.keras", "/dev/null", "x.py:factory", "plugin.py:nothing"]
PIPELINES = ["canonicalize", "cse,dce", "canonicalize{fold=\"\\x\"}", "lower-quantized{io=dp}",
             "quantize{config=megatron}", "quantize{scheme=int8,calibration-data=calib.npz}",
             "quantize{config=qconfig.json,calibration-data=calib.npz},lower-quantized",
             "nope", "fuzz-noop", "canonicalize{max-iterations=-3}", "", ",,,", "{", "dce{"]


def _outputs(case: Path) -> list[str]:
    (case / "existing").write_text("keep me")
    (case / "file").write_text("a file")
    (case / "d.tflite").mkdir()
    return [str(case / "out.tflite"), str(case / "out"), str(case / "existing"),
            str(case / "file" / "sub" / "x.tflite"), str(case / "d.tflite"), "/dev/null", "",
            str(case / ("x" * 300)), "/proc/fuzz.tflite", "/proc/fuzz", str(case / "new" /
                                                                           "deep" / "m.tflite"),
            "-", str(case / "file")]


def _argv(rng: random.Random, case: Path) -> tuple[list[str], str]:
    outs = _outputs(case)
    stdin = rng.choice([GOOD, "", mutate_text(rng, rng.choice(tfir_seeds()))])
    if rng.random() < 0.35:     # mostly valid: the paths that write artifacts
        if rng.random() < 0.5:
            argv = ["opt", rng.choice(["good.tfir", "-"]), "--passes",
                    rng.choice(PIPELINES[:2] + ["fuzz-noop"])]
            argv += ["-o", str(case / "out.tfir")] if rng.random() < 0.7 else []
        else:
            argv = ["compile", "good.tfir", "-o", rng.choice([str(case / "m.tflite"),
                                                               str(case / "new" / "m.tflite"),
                                                               str(case)])]
            argv += ["--target", "tflite"] if rng.random() < 0.9 else ["--target", "tfjs"]
            argv += rng.choice([[], ["--fp16"], ["--input-shape", "x:2,3"],
                                ["--passes", "cse"], ["--passes", "nope"]])
        if "fuzz-noop" in argv or rng.random() < 0.1:
            argv += ["--load-pass-plugin", "plugin.py"]
        return argv, stdin
    cmd = rng.choice(["opt"] * 10 + ["compile"] * 8 + ["inspect", "passes", "quant-report",
                                                        "bogus", ""])
    argv = [cmd] if cmd else []
    if cmd in ("opt", "compile", "inspect", "quant-report"):
        src = rng.choice(SOURCES) if rng.random() < 0.9 else mutate_text(rng, "good.tfir")
        if src == "model.keras" and rng.random() < 0.8:
            src = "good.tfir"     # the Keras frontend is slow; the keras campaign covers it
        argv.append(src)
    if cmd in ("opt", "compile", "quant-report") or rng.random() < 0.05:
        if rng.random() < 0.95:
            argv += [rng.choice(["-o", "--output"]), rng.choice(outs)]
        if rng.random() < 0.6:
            argv += ["--passes", rng.choice(PIPELINES)]
    if cmd == "compile" or rng.random() < 0.05:
        if rng.random() < 0.5:
            argv += ["--target", rng.choice(["tflite", "savedmodel", "tfjs", "all", "tflite,tfjs",
                                             "bogus", "", ","])]
        if rng.random() < 0.3:
            argv += ["--quantize", rng.choice(["int8", "dynamic-int8", "fp16", "int9", ""])]
        if rng.random() < 0.3:
            argv += ["--calibration-data", rng.choice(["calib.npz", "bad.npz", "arr.npy",
                                                       "missing.npz", "dir", "good.tfir"])]
        if rng.random() < 0.2:
            argv += ["--quant-config", rng.choice(["qconfig.json", "bad_qconfig.json",
                                                   "missing.json", "dir", "binary.tfir"])]
        if rng.random() < 0.2:
            argv += ["--input-shape", rng.choice(["x:1,3", "x:?", "x", ":", "y:1,3", "x:a,b",
                                                  "x:" + "9" * 30, "x:-5,3"])]
        if rng.random() < 0.1:
            argv += [rng.choice(["--fp16", "--unsafe"])]
        if rng.random() < 0.1:
            argv += ["--custom-objects", rng.choice(["plugin.py", "missing.py", "dir",
                                                     "bad_plugin.py"])]
    if rng.random() < 0.2:
        argv += ["--load-pass-plugin", rng.choice(["plugin.py", "bad_plugin.py", "missing.py",
                                                   "dir", "good.tfir", "exit_plugin.py"])]
    if rng.random() < 0.1:
        argv += ["--plugins", rng.choice(["all", "none", "nope", "", ","])]
    if rng.random() < 0.1:
        argv += [rng.choice(["--print-ir-after", "--verify-each", "--time-passes",
                             "--bogus", "-x", "--", "--version"])]
        if argv[-1] == "--print-ir-after":
            argv.append(rng.choice(["all", "canonicalize", "nope"]))
    if rng.random() < 0.05:
        i = rng.randrange(len(argv) + 1)
        argv.insert(i, mutate_text(rng, rng.choice(argv or ["opt"])))
    return argv, stdin


_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')


def _internal_signature(stderr: str) -> str:
    frames = [(f, fn) for f, fn in _FRAME.findall(stderr)
              if Path(f).resolve().is_relative_to(PACKAGE_ROOT) and "tools/fuzz" not in f]
    m = re.search(r"internal error: (\w+)", stderr)
    kind = m.group(1) if m else "?"
    if not frames:
        return f"{kind} @ ?"
    f, fn = frames[-1]
    return f"{kind} @ {Path(f).resolve().relative_to(PACKAGE_ROOT).as_posix()}:{fn}"


def run_cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI's main() run in this process."""
    from ..cli import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin, old_debug = sys.stdin, os.environ.get("TENSORFORGE_DEBUG")
    sys.stdin = io.StringIO(stdin)
    os.environ["TENSORFORGE_DEBUG"] = "1"       # tracebacks of internal errors, for signatures
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:             # argparse: usage errors, --help, --version
                rc = e.code if isinstance(e.code, int) else 2
    finally:
        sys.stdin = old_stdin
        if old_debug is None:
            os.environ.pop("TENSORFORGE_DEBUG", None)
        else:
            os.environ["TENSORFORGE_DEBUG"] = old_debug
    return rc, out.getvalue(), err.getvalue()


def check(argv: list[str], stdin: str) -> None:
    rc, out, err = run_cli(argv, stdin)
    if rc == 3 or "Traceback" in err and rc != 0:
        raise CLIInternalError(err.strip().splitlines()[-2] if err.strip() else "exit 3",
                               _internal_signature(err))
    if rc not in (0, 1, 2):
        raise CLIInternalError(f"exit code {rc}: {err[-300:]}", f"exit {rc}")
    if rc != 0:
        if not err.strip():
            raise CLIInternalError("failed without a message", "silent failure")
        raise TensorforgeError(err.strip())


def make(rng: random.Random, i: int, work: Path) -> Case:
    argv, stdin = _argv(rng, work)
    return Case(" ".join(map(repr, argv)), lambda: check(argv, stdin), out_dir=work)


def _import(work: Path) -> None:
    from ..convert import convert  # noqa: F401  (imports outside the per-input alarm)
    _setup(work)


CAMPAIGN = Campaign("cli", make, setup=_import, timeout_s=120.0)
