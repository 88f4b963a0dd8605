"""A short run of every fuzzing campaign (tools/fuzz): each reader of user input either
works or raises a TensorforgeError naming the input; no other exception, no hang, nothing
left behind. `make fuzz` runs the long campaign."""

import pytest

from tensorforge.tools.fuzz import CAMPAIGNS, get_campaign, report, run_campaign

# Inputs per campaign in `make test`: a few hundred in all, well under a minute on 2 cores.
SHORT = {"parser": 150, "pipeline": 80, "config": 80, "calibration": 80, "keras": 6,
         "savedmodel": 40, "cli": 60, "plugins": 60}   # savedmodel runs a twentieth: 2


@pytest.mark.parametrize("name", CAMPAIGNS)
def test_campaign_finds_no_crash(name):
    result = run_campaign(get_campaign(name), SHORT[name], seed=1234)
    assert result.inputs >= 1
    assert result.failures == 0, report([result])


def test_harness_reports_crashes_and_hangs(tmp_path):
    """The invariant checker itself: an internal error, a hang, a vague error and a
    half-written output are each caught and given a signature."""
    import time

    from tensorforge.ir.errors import ConversionError
    from tensorforge.tools.fuzz import Campaign, Case

    def make(rng, i, work):
        kind = i % 5

        def run():
            if kind == 0:
                {}["missing"]
            elif kind == 1:
                time.sleep(5)
            elif kind == 2:
                raise ConversionError("something went wrong")
            elif kind == 3:
                (work / "half.tflite").write_text("partial")
                raise ConversionError("in.tfir: bad")
        return Case(f"kind {kind}", run, names=("in.tfir",), out_dir=work)

    result = run_campaign(Campaign("selftest", make, timeout_s=0.5), 5)
    assert (result.internal, result.hangs, result.unnamed, result.half_written, result.ok) == \
        (1, 1, 1, 1, 1)
    assert any(s.startswith("KeyError @ tests/fuzz/test_fuzz_campaigns.py") or
               s.startswith("KeyError @") for s in result.crashes)
