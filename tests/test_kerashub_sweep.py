"""The KerasHub sweep command: the fast run checks the command itself on one backbone; the
slow one reruns the whole sweep and checks that every model the docs table marks as passing
still passes (the table is regenerated with `python -m tensorforge.tools.sweeps.kerashub`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("keras_hub")

from tensorforge.tools.sweeps import kerashub, table_verdicts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "conformance" / "kerashub.md"


def test_sweep_command_writes_the_table(tmp_path):
    out = tmp_path / "kerashub.md"
    assert kerashub.main(["--only", "BertBackbone,FeaturePyramidBackbone", "--out", str(out),
                          "--json", str(tmp_path / "rows.json")]) == 0
    text = out.read_text()
    assert "**1 of 1 pass**" in text
    assert table_verdicts(text) == {"BertBackbone": "yes", "FeaturePyramidBackbone": "n/a"}
    (row, _) = json.loads((tmp_path / "rows.json").read_text())
    assert row["targets"] == ["tflite", "savedmodel", "tfjs"]
    assert "padding_mask: [batch, ?]" in row["dims"]


def test_docs_table_lists_every_backbone():
    import keras_hub

    rows = table_verdicts(TABLE.read_text())
    backbones = {n for n, c in vars(keras_hub.models).items() if isinstance(c, type)
                 and issubclass(c, keras_hub.models.Backbone)
                 and c is not keras_hub.models.Backbone}
    assert backbones <= set(rows), sorted(backbones - set(rows))


@pytest.mark.slow
def test_full_sweep_keeps_every_passing_model(tmp_path):
    before = {m for m, ok in table_verdicts(TABLE.read_text()).items() if ok == "yes"}
    out = tmp_path / "kerashub.md"
    assert kerashub.main(["--out", str(out)]) == 0
    now = {m for m, ok in table_verdicts(out.read_text()).items() if ok == "yes"}
    assert before <= now, sorted(before - now)
