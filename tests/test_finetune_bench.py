"""The fine-tune step benchmark (benchmarks/finetune_step.py): its variants, the equal work
of its live and cached steps, and its --quick run at toy size."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repository

from benchmarks import finetune_step  # noqa: E402
from benchmarks.common import QUICK  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_stage_is_measured_live_and_cached_with_the_speed_options():
    full = finetune_step.variants(quick=False)
    for stage in finetune_step.STAGES[1:]:
        assert {"upto": stage, "cached": True} in full and {"upto": stage, "cached": False} in full
    assert any(v.get("compile") for v in full) and any(v.get("channels_last") for v in full)
    assert len({finetune_step.label(v) for v in full}) == len(full)


def test_at_a_freeze_point_each_precision_runs_plain_channels_last_and_compiled():
    rows = [finetune_step.label(v) for v in finetune_step.variants(quick=False, at="stage3")]
    assert rows == [f"frozen to stage3, cached, {p}" for p in
                    ("fp32", "channels_last, fp32", "compile, fp32",
                     "bf16", "bf16, channels_last", "bf16, compile")]
    whole = finetune_step.variants(quick=False, at="none")
    assert {v["cached"] for v in whole} == {False}


def test_a_step_that_fails_is_reported_and_the_others_still_run():
    def broken():
        raise AssertionError("expected size 11==11, stride 1==256 at dim=1")

    ok, failed = finetune_step._runnable({"fine": lambda: 1, "broken": broken})
    assert list(ok) == ["fine"]
    assert failed == {"broken": "AssertionError: expected size 11==11, stride 1==256 at dim=1"}


def test_the_cached_step_computes_the_live_steps_loss():
    # The cached inputs are the prefix's output on the same batch (a whole-image crop), so
    # the first steps' losses agree: the two rows time the same work but the prefix.
    live = finetune_step._step("parsenet_efficientnet_lite0", 2, 32,
                               {"upto": "stage3", "cached": False})()
    cached = finetune_step._step("parsenet_efficientnet_lite0", 2, 32,
                                 {"upto": "stage3", "cached": True})()
    assert float(live) == pytest.approx(float(cached), rel=1e-5)


def test_quick_run_gives_a_rate_for_every_variant():
    [section] = finetune_step.run(QUICK, {})
    rows = {r["metric"]: r["value"] for r in section.rows}
    assert len(rows) == len(finetune_step.variants(quick=True)) + 1
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in rows.values())
