"""The issue-20 summary table of `make bench` (tools/bench/speed.py) files each benchmark's
row under the right model and compares it with the right goal."""

from __future__ import annotations

import io

from rich.console import Console

from tensorforge.tools.bench.speed import GOALS, model_key, ratios, speed_table


def test_rows_are_filed_by_model_and_checked_against_their_goals():
    lifting = [{"model": "MobileNetV2", "sec": (0.2, 10.0), "peak_rss": 300, "before_rss": 100,
                "weight_bytes": 100},
               {"model": "KerasHub BERT tiny (2 layers, 64 wide)", "error": "no keras_hub"}]
    savedmodel = [{"model": "BERT (tiny KerasHub BertBackbone)", "sec": (0.3, 1.0)}]
    tfjs = [{"model": "ResNet50", "sec": (0.75, 0.5)}]
    verify = [{"model": "ConvNeXtTiny (96x96)", "ratio": 3.5},
              {"model": "BertBackbone (tiny KerasHub)", "ratio": 1.5}]
    values = ratios(lifting, savedmodel, tfjs, verify)
    assert values["MobileNetV2"] == {"tflite": 0.02, "peak_rss": 2.0, "peak_since_start": False}
    assert values["ResNet50"] == {"tfjs": 1.5}
    assert values["ConvNeXtTiny 96x96"] == {"verify": 3.5}
    assert values["tiny KerasHub BERT"] == {"savedmodel": 0.3, "verify": 1.5}   # error: no cell
    assert model_key("EfficientNetB0") is None and model_key("DistilBertBackbone") is None

    out = io.StringIO()
    speed_table(Console(file=out, width=300), lifting, savedmodel, tfjs, verify)
    lines = {line.split("│")[1].strip(): line for line in out.getvalue().splitlines()
             if line.startswith("│")}
    assert "0.020 yes" in lines["MobileNetV2"] and "2.00" in lines["MobileNetV2"]
    assert "1.500 yes" in lines["ResNet50"]             # at the goal is within it
    assert "3.500 NO" in lines["ConvNeXtTiny 96x96"]
    assert GOALS["verify"] == 3.0 and GOALS["tflite"] == 0.08


def test_every_benchmark_row_name_is_one_of_the_models():
    from tensorforge.tools.bench.convert import TFJS_BENCH_MODELS
    from tensorforge.tools.bench.lifting import LIFT_BENCH_MODELS
    from tensorforge.tools.bench.savedmodel import SAVEDMODEL_BENCH_MODELS
    from tensorforge.tools.bench.verify import VERIFY_BENCH_MODELS

    for models in (LIFT_BENCH_MODELS, SAVEDMODEL_BENCH_MODELS, TFJS_BENCH_MODELS,
                   VERIFY_BENCH_MODELS):
        assert sorted(model_key(name) for name in models) == sorted(
            ["MobileNetV2", "ResNet50", "ConvNeXtTiny 96x96", "tiny KerasHub BERT"]), models
