"""Claim 2's bookkeeping: run layout, per-seed gains, the x axis, the plot; the scaled data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lab.study import context_study
from lab.study.context_size import DATASETS, scaled
from lab.study.context_study import (
    CONFIGS,
    POINTS,
    collect,
    overrides,
    plot_gain,
    run_path,
    spec_tables,
)

ROOT = Path(__file__).resolve().parents[2]


def _write_metrics(path: Path, miou: float) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text(json.dumps({"metrics": {"mean_iou": miou}}))


def test_collect_pairs_seeds_and_divides_by_the_reference_erf(tmp_path, monkeypatch):
    monkeypatch.setattr(context_study, "OUT_ROOT", tmp_path)
    (tmp_path / "erf").mkdir()
    (tmp_path / "erf" / "camvid_x2_os16.json").write_text(
        json.dumps({"erf_side": 480, "erf_side50": 200}))
    for seed, (base, ctx) in enumerate([(0.40, 0.43), (0.41, 0.42), (0.39, 0.44)]):
        _write_metrics(run_path("camvid", 1.0, "baseline", seed), base)
        _write_metrics(run_path("camvid", 1.0, "parsenet", seed), ctx)
    _write_metrics(run_path("siftflow", 1.0, "parsenet", 0), 0.30)  # no baseline: no gain
    points = {(p["dataset"], p["scale"]): p for p in collect()["points"]}
    camvid = points[("camvid", 1.0)]
    assert camvid["gain_seeds"] == pytest.approx({0: 3.0, 1: 1.0, 2: 5.0})
    assert camvid["gain_mean"] == pytest.approx(3.0)
    assert camvid["gain_std"] == pytest.approx(2.0)  # sample std of 3, 1, 5
    assert camvid["side_over_erf95"] == pytest.approx(math.sqrt(360 * 480) / 480)
    assert camvid["parsenet"]["mean_iou"] == pytest.approx(43.0)
    assert points[("siftflow", 1.0)]["gain_mean"] is None
    assert points[("stanford", 1.0)]["baseline"]["seeds"] == {}
    out = plot_gain(collect(), tmp_path / "gain.png")
    assert out.stat().st_size > 5_000


def test_run_overrides_give_each_row_its_head_and_own_directory():
    base = overrides("camvid", 0.5, "baseline", 2)
    ctx = overrides("camvid", 0.5, "parsenet", 2)
    assert "model.args.context=false" in base and "model.args.context=true" in ctx
    assert "model.args.normalize=true" in base and "model.args.normalize=true" in ctx
    assert f"train.out_dir={run_path('camvid', 0.5, 'baseline', 2)}" in base
    assert "train.seed=2" in ctx
    assert set(d for d, _ in POINTS) == set(DATASETS)


def test_configs_load_with_the_overrides():
    from parsenet.config import load_config

    for dataset, path in CONFIGS.items():
        cfg = load_config(ROOT / path, overrides(dataset, 1.0, "nonorm", 0))
        assert cfg.model.args["context"] is True and cfg.model.args["normalize"] is False
        assert cfg.model.args["output_stride"] == 16 and cfg.model.name.endswith("lite0")
        assert cfg.train.amp == "off" and cfg.train.iterations == 300
        assert cfg.data.root == load_config(ROOT / DATASETS[dataset]).data.root
        # One view of the whole warped image: the crop holds it, on the output grid.
        assert cfg.data.resize == list(POINTS[(dataset, 1.0)])
        assert cfg.data.crop_size >= max(cfg.data.resize) and cfg.data.crop_size % 16 == 0
        assert cfg.data.scale_range == [1.0, 1.0] and not cfg.data.flip
        assert cfg.train.frozen_prefix.upto == "all" and cfg.train.frozen_prefix.cache
        assert cfg.train.loss_stride == 4


def test_study_yaml_holds_the_module_tables():
    from parsenet.apps.study.spec import load_tables

    tables = load_tables(ROOT / "configs/cpu/study.yaml")
    for key, spec in spec_tables().items():
        table = tables[key]
        assert table.protocol == "claim-context-size"
        assert [(v.name, v.config, list(v.overrides), list(v.seeds)) for v in table.variants] \
            == [(v["name"], v["config"], [*spec["overrides"], *v["overrides"]], v["seeds"])
                for v in spec["variants"]]
        assert [list(c) for c in table.claims] == spec["claims"]


def test_scaled_resizes_both_sides():
    image = torch.zeros(3, 360, 480, dtype=torch.uint8)
    assert scaled(image, 0.5).shape == (3, 180, 240)
    assert scaled(image, 1.5).shape == (3, 540, 720)
    assert scaled(image, 1.0) is image


def test_trend_verdict_and_section_markers(tmp_path):
    from lab.study.context_report import BEGIN, END, trend_verdicts, write_section

    def point(scale, gains):
        return {"dataset": "camvid", "scale": scale, "gain_seeds": dict(enumerate(gains)),
                "gain_mean": sum(gains) / len(gains), "gain_std": 0.1}

    assert trend_verdicts([point(0.5, [2.0, 2.2]), point(1.0, [0.3, 0.5])])["camvid"] \
        .startswith("shrinks")
    assert trend_verdicts([point(0.5, [0.1, 0.2]), point(1.0, [1.0, 1.5])])["camvid"] \
        .startswith("grows")
    assert trend_verdicts([point(0.5, [0.1, 1.2]), point(1.0, [1.0, 0.5])])["camvid"] \
        .startswith("inside the spread")
    assert trend_verdicts([point(1.0, [1.0, 0.5])]) == {}
    page = tmp_path / "RESULTS.md"
    page.write_text("# Results\n\nkept\n")
    write_section("one", page)
    write_section("two", page)
    text = page.read_text()
    assert text.count(BEGIN) == 1 and "two" in text and "one" not in text
    assert text.startswith("# Results\n\nkept\n") and text.rstrip().endswith(END)
