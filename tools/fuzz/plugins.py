"""The plugin loader: plugin files that are valid, empty, binary, not UTF-8, syntax errors,
raise (any exception, SystemExit included) at import, register a non-pass or a name taken by
another class, or are no file at all; and `--plugins` requests naming no installed plugin.
The pass registry is restored after each input."""

from __future__ import annotations

import random
from pathlib import Path

from . import Campaign, Case
from .mutate import mutate_text

VALID = '''
from tensorforge.passes import Option, Pass, register_pass

@register_pass("fuzz-plugin-{i}")
class P(Pass):
    """A plugin pass."""
    options = {{"flag": Option(bool, False, "a flag")}}
    def run(self, module, ctx):
        return False
'''

BODIES = [
    "", "\n", "def broken(:\n", "raise RuntimeError('boom')\n", "import sys\nsys.exit(2)\n",
    "raise SystemExit('bye')\n", "import no_such_module_xyz\n", "1/0\n",
    "from tensorforge.passes import register_pass\n@register_pass('x')\nclass C: pass\n",
    "from tensorforge.passes import register_pass, Pass\n"
    "@register_pass('canonicalize')\nclass Other(Pass):\n    def run(self, m, c): return False\n",
    "raise MemoryError()\n", "raise RecursionError()\n", "def f(): return f()\nf()\n",
    "x = '\\udc80'\nraise ValueError(x)\n", "raise Exception\n",
]


def check(path: Path) -> None:
    from ...passes import base
    from ...passes.plugins import load_pass_plugin

    saved = dict(base._PASSES)
    try:
        load_pass_plugin(path)
    finally:
        base._PASSES.clear()
        base._PASSES.update(saved)


def check_request(text: str) -> None:
    from ...passes.plugins import parse_plugin_request

    parse_plugin_request(text)


def make(rng: random.Random, i: int, work: Path) -> Case:
    op = rng.randrange(10)
    if op == 0:
        text = mutate_text(rng, rng.choice(["all", "none", "a,b", "all,x"]))
        return Case(f"--plugins {text!r}", lambda: check_request(text), names=("plugin",))
    path = work / rng.choice(["plugin.py", "plugin", "plugin.txt", "p l u g.py"])
    if op == 1:
        path = work / "missing.py"
    elif op == 2:
        path.mkdir()
    elif op == 3:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
    elif op == 4:
        path.write_bytes(mutate_text(rng, VALID.format(i=i)).encode("utf-8", "surrogatepass"))
    elif op == 5:
        path.write_text(VALID.format(i=i))
    else:
        path.write_text(rng.choice(BODIES))
    return Case(f"{path.name}: {path.read_bytes()[:200]!r}" if path.is_file() else str(path),
                lambda: check(path), names=(path.name, "plugin"))


CAMPAIGN = Campaign("plugins", make, timeout_s=10.0)
