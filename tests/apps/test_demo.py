"""``parsenet demo`` end to end on a tiny generated dataset, and its fairness."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from parsenet.apps.demo import (
    BASELINE_CHANGES,
    demo_configs,
    erf_radius,
    run_demo,
)
from parsenet.config import config_to_dict, load_config
from parsenet.engine.precision import cpu_kind

TINY = ["data.synthetic.splits={train: 4, test: 2}", "data.synthetic.size=256",
        "data.crop_size=256", "train.iterations=2", "train.batch_size=2",
        "model.args.width=0.0625", "train.progress=false", "train.log_every=1"]


def test_baseline_and_parsenet_configs_differ_only_in_the_context_and_norm(tmp_path):
    cfg = load_config("configs/demo.yaml")
    configs = demo_configs(cfg, tmp_path)
    base, parse = (config_to_dict(configs[n]) for n in ("baseline", "parsenet"))
    assert parse["model"]["args"]["context"] and parse["model"]["args"]["normalize"]
    for key, value in BASELINE_CHANGES.items():
        assert base["model"]["args"][key] == value
    for d in (base, parse):
        d.pop("name")
        d["train"].pop("out_dir")
        for key in BASELINE_CHANGES:
            d["model"]["args"].pop(key)
    assert base == parse  # same backbone, width, budget, seed, data and augmentation
    assert configs["baseline"].train.out_dir != configs["parsenet"].train.out_dir


def test_demo_config_keeps_whole_images_so_the_cues_stay_in_view():
    cfg = load_config("configs/demo.yaml")
    assert cfg.data.format == "synthetic" and cfg.data.val_split != cfg.data.train_split
    assert cfg.data.scale_range == [1.0, 1.0]
    assert cfg.data.crop_size == cfg.data.synthetic["size"]


class _Pointwise(nn.Module):
    def forward(self, x):
        return nn.functional.conv2d(x, torch.ones(2, 3, 1, 1))


class _Global(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, *x.shape[-2:])[:, :2] * 1.0


def test_erf_radius_of_a_pointwise_and_a_global_model():
    images = torch.randn(2, 3, 64, 64)
    assert erf_radius(_Pointwise(), images) == pytest.approx(0.0)
    # Uniform gradient over 64 x 64: 90% of it lies beyond the inscribed circle's 78%.
    assert erf_radius(_Global(), images) > 32


def test_demo_smoke_run_writes_every_output_and_prints_measured_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo("configs/demo.yaml", seed=1, out_dir=out, overlays=2,
                      overrides=TINY + [f"data.root={tmp_path / 'data'}"])
    printed = capsys.readouterr().out
    assert report["seed"] == 1
    assert set(report["table"]) == {"baseline", "parsenet"}
    for name in ("baseline", "parsenet"):
        row = report["table"][name]
        for key in ("pixel acc", "mean acc", "mean IU", "f.w. IU", "IU cat (ambiguous)",
                    "IU bird (ambiguous)", "mean IU, local classes"):
            assert key in row
        assert 0.0 <= row["pixel acc"] <= 100.0
        assert (out / name / "checkpoints" / "last.pt").is_file()
        assert (out / name / "log.jsonl").is_file()
    # The table printed is the one measured in this run.
    assert f"{report['table']['parsenet']['mean IU']:.1f}" in printed
    assert f"{report['table']['baseline']['pixel acc']:.1f}" in printed
    assert "ParseNet" in printed and "baseline" in printed
    assert f"CPU kind {cpu_kind()}, {torch.get_num_threads()} threads" in printed
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 2
    for name in ("curves.png", "feature_norms.png", "results.json"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"] == report["table"]
    assert set(saved["feature_norms"]) == {"conv4", "conv5", "fc7", "pool6"}

    # Resuming finished runs trains nothing more and measures the same weights again.
    again = run_demo("configs/demo.yaml", seed=1, out_dir=out, overlays=1, resume=True,
                     overrides=TINY + [f"data.root={tmp_path / 'data'}"], verbose=False)
    assert again["table"] == report["table"]
    events = [json.loads(line) for line in (out / "parsenet" / "log.jsonl").open()]
    assert [e.get("event") for e in events if e.get("event") in ("start", "resume")] == \
        ["start", "resume"]
