"""A study table that trains heads on a frozen, cached trunk through the one trainer (its
overrides: data.resize, train.frozen_prefix, train.loss_stride): outputs, exact resume,
divergence; the claims table's verdicts; ``parsenet train-head``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from study_data import write_study_dataset

from lab.study.claims import claims_rows, format_claims_table, verdict
from parsenet.apps import study
from parsenet.config import ConfigError, load_config
from parsenet.engine import trainer
from parsenet.engine.checkpoint import load_model
from parsenet.recipe import build_model_from_config

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "configs" / "cpu" / "study.yaml"
# The claims tables' inputs on a tiny VGG: 40 x 40 images warped to 32 x 32, conv1-conv5
# frozen and cached, the loss on every 4th pixel.
FROZEN_TRUNK = ["data.resize=[32, 32]", "data.crop_size=32", "train.frozen_prefix.upto=conv5",
                "train.loss_stride=4"]


def _config_file(tmp_path: Path, **train: object) -> Path:
    config = {
        "model": {"name": "parsenet_vgg16", "args": {
            "width": 0.0625, "features": ["conv4", "fc7"], "context": True,
            "fusion": "early", "normalize": True}},
        "data": {"root": str(write_study_dataset(tmp_path / "data", moving=True)),
                 "format": "folder", "train_split": "all", "val_split": "all",
                 "holdout_every": 3, "workers": 0, "scale_range": [1.0, 1.0],
                 "flip": False},
        "train": {"iterations": 4, "batch_size": 2, "lr": 0.01, "new_layer_lr_mult": 1.0,
                  "amp": "off", "checkpoint_every": 2, "log_every": 1, **train},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _spec(tmp_path: Path) -> Path:
    table = {"title": "heads on a frozen trunk", "protocol": "frozen",
             "overrides": [*FROZEN_TRUNK, f"train.frozen_prefix.cache={tmp_path / 'cache'}"],
             "variants": [{"name": "parsenet", "config": str(_config_file(tmp_path))}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"tables": {"frozen": table}}))
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_a_frozen_trunk_table_writes_its_outputs_and_resumes_exactly(
        tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path)
    [row] = study.run_study("frozen", out_root=tmp_path / "whole", spec_file=spec)
    run = tmp_path / "whole" / "frozen" / "parsenet" / "seed0"
    for name in ("metrics.json", "log.jsonl", "curve.png", "feature_norms.json",
                 "checkpoints/last.pt", "attempts.json"):
        assert (run / name).is_file(), name
    assert (tmp_path / "whole" / "frozen" / "results.json").is_file()
    assert row["finished"] == 1 and 0.0 <= row["mean_iou"] <= 100.0
    metrics = json.loads((run / "metrics.json").read_text())
    # Validation scored every pixel of the 4 held-out 40 x 40 labels, not the 32 x 32 warp.
    assert metrics["metrics"]["images"] == 4
    assert int(torch.tensor(metrics["metrics"]["confusion"]).sum()) == 4 * 40 * 40
    assert math.isfinite(metrics["final_loss"])
    norms = json.loads((run / "feature_norms.json").read_text())
    assert set(norms["feature_norm"]) == {"conv3", "conv4", "conv5", "fc7", "pool6"}
    assert all(v > 0 for v in norms["feature_norm"].values()) and norms["l2norm_scale_mean"]
    # conv1-conv5 kept their initial weights; fc6/fc7 and the head trained.
    config = load_config(run / "config.yaml")
    torch.manual_seed(0)
    start = build_model_from_config(config.model, num_classes=3).state_dict()
    trained = load_model(run / "checkpoints" / "last.pt").model.state_dict()
    frozen = [k for k in start if k.startswith("backbone.layers.conv")]
    assert frozen and all(torch.equal(trained[k], start[k]) for k in frozen)
    assert not torch.equal(trained["backbone.layers.fc7.0.weight"],
                           start["backbone.layers.fc7.0.weight"])

    real, calls = trainer.run_iteration, {"n": 0}

    def killed_at_iteration_3(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "run_iteration", killed_at_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        study.run_study("frozen", out_root=tmp_path / "split", spec_file=spec)
    monkeypatch.setattr(trainer, "run_iteration", real)
    [resumed] = study.run_study("frozen", out_root=tmp_path / "split", spec_file=spec)
    cut = tmp_path / "split" / "frozen" / "parsenet" / "seed0"
    assert [a["resumed"] for a in json.loads((cut / "attempts.json").read_text())] == [
        False, True]
    whole, split = _weights(run), _weights(cut)
    for k in whole:
        torch.testing.assert_close(split[k], whole[k], rtol=0, atol=0, msg=k)
    assert resumed["mean_iou"] == row["mean_iou"]
    losses = [json.loads(line)["loss"] for line in (cut / "log.jsonl").open()
              if '"train"' in line]
    assert len(losses) == 4  # the interrupted run's records were not duplicated


def test_a_non_finite_loss_is_recorded_as_diverged(tmp_path: Path, one_thread: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "run_iteration", lambda *a, **k: (math.nan, False))
    [row] = study.run_study("frozen", out_root=tmp_path / "runs", spec_file=_spec(tmp_path))
    run = tmp_path / "runs" / "frozen" / "parsenet" / "seed0"
    assert row["diverged"] == 1
    assert "loss is nan at iteration 1" in json.loads((run / "diverged.json").read_text())[
        "error"]


def test_verdicts_follow_the_written_rule() -> None:
    assert verdict([40.0, 41.0], [30.0, 31.0]) == "held"
    assert verdict([30.0, 31.0], [40.0, 41.0]) == "did not hold"
    assert verdict([40.0, 30.0], [35.0, 36.0]) == "inside the spread"
    assert verdict([40.0, 41.0], [-math.inf, -math.inf]) == "held"  # B collapsed
    assert verdict([40.0], [30.0, 31.0]) == "too few seeds"
    assert verdict([], []) == "not run"
    assert verdict([40.0, 30.0], [35.0, 36.0], "equal") == "held"
    assert verdict([40.0, 41.0], [30.0, 31.0], "equal") == "did not hold"


def test_the_claim_tables_run_on_the_cached_engine_and_fill_the_claims_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    tables = {k: t for k, t in study.load_tables(SPEC).items() if k.startswith("claim-")}
    assert {"claim-layers", "claim-fusion", "claim-scale", "claim-norm-context"} <= set(tables)
    for t in tables.values():  # the HED claims share one protocol per LR; claim 2 its own
        assert all(any(o.startswith("train.frozen_prefix.upto=") for o in v.overrides)
                   for v in t.variants)
        assert t.protocol == ("claim-context-size" if t.key.startswith("claim-context-size")
                              else {"claim-layers-lr": "claims_lr1e-2",
                                    "claim-layers-lite2": "claims_lite2"}.get(t.key, "claims"))
        assert all(len(v.seeds) >= 2 for v in t.variants)
    entries = claims_rows(out_root=tmp_path)
    assert len(entries) == sum(len(t.claims) for t in tables.values())
    assert {e["verdict"] for e in entries} == {"not run"}
    text = format_claims_table(entries)
    assert "T4: 40.4 vs 0.009" in text and "Verdict rule" in text
    paper = {e["claim"]: e["paper"] for e in entries}
    assert paper["Lite2, three taps + pool6, early fusion: L2Norm beats no norm"] == (
        "T4: 40.2 vs 36.5")
    # both rows stand for Table 4's same row: no figure pair the paper compared
    assert paper["Lite2, once normalised, late and early fusion are about equal"] == "-"
    jobs = study.run_study("claim-layers", out_root=tmp_path, dry_run=True, spec_file=SPEC)
    # 10 rows x 2 seeds, and a third seed of pool6 + fc7 with and without L2Norm
    seeds = sum(len(v.seeds) for v in tables["claim-layers"].variants)
    assert len(jobs) == seeds == 22 and not any(j["finished"] for j in jobs)


def test_each_cached_study_table_validates_at_the_scale_it_trains_at(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A table's data.resize warps every image before the eval's scales apply, so a cache
    at data.resize beside an eval at x2 would train at one size and validate at twice it."""
    monkeypatch.chdir(REPO)
    checked = 0
    for key, table in study.load_tables(SPEC).items():
        for variant in table.variants:
            config = load_config(variant.config, variant.overrides)
            prefix = config.train.frozen_prefix
            if prefix is None or prefix.upto is None:
                continue
            evaluated = config.eval.scales if config.eval.mode == "multiscale" else [1.0]
            assert sorted(prefix.scales) == sorted(evaluated), (key, variant.name)
            checked += 1
    assert checked >= 50


def _context_point(dataset: str, scale: float, gains: list[float]) -> dict:
    mean = sum(gains) / len(gains)
    return {"dataset": dataset, "scale": scale, "gain_mean": mean, "gain_std": 0.1,
            "gain_seeds": {str(k): g for k, g in enumerate(gains)}}


@pytest.mark.parametrize(("large", "expected"), [
    ([0.4, -0.8, 0.3], "did not hold"), ([2.5, 2.6], "held"), ([1.5, 2.2], "inside the spread")])
def test_claim_2s_trend_joins_the_claims_table(tmp_path: Path, large: list[float],
                                               expected: str) -> None:
    summary = tmp_path / "claim-context-size" / "results.json"
    summary.parent.mkdir()
    points = [_context_point("camvid", 0.5, [2.2, 1.8, 1.4]), _context_point("camvid", 1.0, large),
              _context_point("siftflow", 1.0, [2.6, 1.8])]  # one scale: no trend
    summary.write_text(json.dumps({"points": points}))
    [entry] = claims_rows(out_root=tmp_path)[-1:]
    assert entry["verdict"] == expected
    assert entry["claim"].startswith("pool6's gain grows as the image grows (camvid x0.5 -> x1")
    assert entry["better"] == "pool6 gain, camvid x1" and entry["paper"].startswith("T4")
    assert not any("siftflow" in e["claim"] for e in claims_rows(out_root=tmp_path))


@pytest.mark.parametrize(("change", "message"), [
    ({"engine": "cached"}, "engine: no longer table keys"),
    ({"resolution": [8, 8], "loss_stride": 4}, "resolution, loss_stride: no longer"),
])
def test_a_spec_with_the_second_loops_keys_is_refused(tmp_path: Path, change: dict,
                                                      message: str) -> None:
    table = {"title": "t", "protocol": "p",
             "variants": [{"name": "a", "config": "x.yaml"}], **change}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"tables": {"claim-t": table}}))
    with pytest.raises(ConfigError, match=message):
        study.load_tables(spec)


def test_train_head_is_train_with_the_whole_backbone_frozen_and_cached(
        tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture) -> None:
    from parsenet.cli import main

    path = _config_file(tmp_path)
    out, cache = tmp_path / "head", tmp_path / "cache"
    assert main(["train-head", "--config", str(path), "--set", f"train.out_dir={out}",
                 "--set", "train.progress=false", "--set", "data.crop_size=40",
                 "--cache-root", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "checkpoints" / "last.pt") in printed
    saved = load_config(out / "config.yaml")
    assert saved.train.frozen_prefix.upto == "all"
    assert saved.train.frozen_prefix.cache == str(cache)
    assert len(list(next(cache.iterdir()).glob("*.safetensors"))) == 8  # the train images
    # Only the head trained: every backbone weight is the one it started from.
    trained = load_model(out / "checkpoints" / "last.pt").model.state_dict()
    torch.manual_seed(0)
    config = load_config(path)
    from parsenet.recipe import build_model_from_config

    start = build_model_from_config(config.model, num_classes=5).state_dict()
    backbone = [k for k in start if k.startswith("backbone.")]
    assert backbone and all(torch.equal(trained[k], start[k]) for k in backbone)
    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "last.pt")]) == 0
