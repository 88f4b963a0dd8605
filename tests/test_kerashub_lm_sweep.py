"""The generation sweep command (tools/sweeps/kerashub_lm.py): the fast run checks the command
on one decoder (Qwen, which no other test converts) and one image-conditioned CausalLM it
lists without counting; the slow one reruns every CausalLM and checks that each model the docs
table marks as passing still passes (regenerate the table with
`python -m tensorforge.tools.sweeps.kerashub_lm`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("keras_hub")

from tensorforge.tools.sweeps import kerashub_lm, table_verdicts  # noqa: E402

TABLE = Path(__file__).resolve().parents[1] / "docs" / "conformance" / "kerashub_lm.md"


def test_sweep_command_writes_the_table(tmp_path):
    out = tmp_path / "lm.md"
    assert kerashub_lm.main(["--only", "QwenCausalLM,BLIP2CausalLM", "--out", str(out),
                             "--json", str(tmp_path / "rows.json")]) == 0
    text = out.read_text()
    assert "**1 of 1 pass**" in text
    assert table_verdicts(text) == {"QwenCausalLM": "yes", "BLIP2CausalLM": "n/a"}
    qwen, _ = json.loads((tmp_path / "rows.json").read_text())
    assert qwen["equal"] == kerashub_lm.NEW_TOKENS and qwen["caches"] == 4


def test_docs_table_lists_every_causal_lm():
    rows = table_verdicts(TABLE.read_text())
    assert set(rows) == set(kerashub_lm.model_names())


@pytest.mark.slow
def test_every_model_marked_passing_still_passes(tmp_path):
    want = {m for m, ok in table_verdicts(TABLE.read_text()).items() if ok == "yes"}
    kerashub_lm.main(["--out", str(tmp_path / "lm.md"), "--json", str(tmp_path / "rows.json")])
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert want <= {r["model"] for r in rows if kerashub_lm.passes(r)}
