"""Golden tests: each tests/golden/*.tfir names its pipeline in a `// passes:` line; running
`tensorforge opt FILE --passes PIPELINE` must print exactly the sibling `.out` file, and the
result must compute what the input computed (checked with the interpreter).

Set UPDATE_GOLDEN=1 to rewrite the `.out` files (then review the diff)."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.text import parse_module
from tensorforge.tools.cli import main

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.tfir"))


def pipeline_of(path: Path) -> str:
    m = re.search(r"^// passes: (.*)$", path.read_text(), re.M)
    assert m, f"{path.name} has no '// passes:' line"
    return m.group(1).strip()


def random_inputs(graph, rng, batch=3):
    arrays = []
    for v in graph.inputs:
        shape = [batch if isinstance(d, str) else d for d in v.type.shape]
        arrays.append(rng.standard_normal(shape).astype(v.type.dtype.np))
    return arrays


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case, capsys):
    code = main(["opt", str(case), "--passes", pipeline_of(case), "--verify-each"])
    out, err = capsys.readouterr()
    assert code == 0, err
    expected = case.with_suffix(".out")
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(out)
    assert out == expected.read_text()

    before, after = parse_module(case.read_text()).main, parse_module(out).main
    rng = np.random.default_rng(0)
    inputs = random_inputs(before, rng)
    # Quantizing passes change values by design: a case may declare `// tolerance: X`; a
    # per-device program (`// tolerance: spmd`) runs under ir.spmd, checked elsewhere.
    m = re.search(r"^// tolerance: (\S+)", case.read_text(), re.M)
    if m and m.group(1) == "spmd":
        return
    tol = float(m.group(1)) if m else 1e-6
    for a, b in zip(run_graph(before, inputs), run_graph(after, inputs)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_every_builtin_pass_has_a_golden_case():
    from tensorforge.passes import registered_passes

    covered = {name.strip() for c in CASES
               for name in re.sub(r"\{[^}]*\}", "", pipeline_of(c)).split(",")}
    builtin = {name for name, cls in registered_passes().items()
               if cls.__module__.startswith("tensorforge.passes")}
    missing = builtin - covered
    assert not missing, f"passes without golden tests: {sorted(missing)}"
