"""The cached study engine: the VGG trunk/head split, the feature cache (and its resume),
head training (outputs, exact resume, divergence) and the claims table's verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from study_data import write_study_dataset
from torch import nn

from lab.study.claims import claims_rows, format_claims_table, verdict
from parsenet.apps import study
from parsenet.apps.study.cached import (
    build_cache,
    build_vgg_parts,
    engine,
    open_cache,
    train_cached,
)
from parsenet.apps.study.cached.sources import trunk_id
from parsenet.config import ConfigError, load_config
from parsenet.engine.checkpoint import load_model
from parsenet.errors import TrainingDivergedError
from parsenet.preprocessing import IMAGENET
from parsenet.recipe import dataset_from_config

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "configs" / "cpu" / "study.yaml"


def _dataset(root: Path) -> Path:
    return write_study_dataset(root, moving=True)


def _config_file(tmp_path: Path, **train: object) -> Path:
    config = {
        "model": {"name": "parsenet_vgg16", "args": {
            "width": 0.0625, "features": ["conv4", "fc7"], "context": True,
            "fusion": "early", "normalize": True}},
        "data": {"root": str(_dataset(tmp_path / "data")), "format": "folder",
                 "train_split": "all", "val_split": "all", "holdout_every": 3, "workers": 0},
        "train": {"iterations": 4, "batch_size": 2, "lr": 0.01, "new_layer_lr_mult": 1.0,
                  "amp": "off", "checkpoint_every": 2, "log_every": 1,
                  "out_dir": str(tmp_path / "run"), **train},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_trunk_plus_head_is_the_models_own_forward(one_thread: None) -> None:
    torch.manual_seed(0)
    trunk, head, model = build_vgg_parts(num_classes=5, weights=None, width=0.0625,
                                         features=("conv3", "conv5", "fc7"), context=True,
                                         fusion="early")
    model.eval()
    head.eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = model.head(*model.forward_branches(x))
        got = head(trunk(x))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # conv1-conv5 frozen; fc6/fc7 (the same backbone's) train with the head.
    assert not any(p.requires_grad for p in trunk.identity_state(keep_vars=True).values())
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert {"fc6.0.weight", "fc7.0.weight"} <= trainable
    # The trunk's identity leaves out fc6/fc7, which belong to the (per-run) head.
    assert not any(k.startswith(("layers.fc6", "layers.fc7")) for k in trunk.identity_state())


class _Trunk(nn.Module):
    """A small frozen trunk (stride 2) that can be told to fail after some batches."""

    output_stride, grid_offset = 2, 0.5

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.calls, self.fail_after = 0, fail_after

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # a kill in the middle of the cache
        y = self.conv(x)
        return {"a": y, "b": y.relu() * 100}


def _build(trunk: nn.Module, tmp_path: Path, dataset: object) -> object:
    return build_cache(trunk, dataset, root=tmp_path / "cache", trunk_id=trunk_id(trunk),
                       resolution=(16, 24), preprocessing=IMAGENET, dataset_id="tiny",
                       batch_size=2, progress=False)


def test_an_interrupted_cache_is_finished_and_equals_an_uninterrupted_one(
        tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from parsenet.apps.study.cached import cache as cache_module

    monkeypatch.setattr(cache_module, "FLUSH_EVERY", 2)
    cfg = load_config(_config_file(tmp_path))
    data = dataset_from_config(cfg.data, "train")
    # The probe forward is call 1; calls 2-4 fill 6 images, the 5th call is "killed".
    with pytest.raises(KeyboardInterrupt):
        _build(_Trunk(fail_after=4), tmp_path, data)
    (path,) = (tmp_path / "cache").iterdir()
    meta = json.loads((path / "meta.json").read_text())
    assert meta["done"] == 6 and not meta["complete"]
    with pytest.raises(Exception, match="unfinished"):
        open_cache(path)
    resumed = _Trunk()
    cache = _build(resumed, tmp_path, data)
    assert resumed.calls == 1 + 1  # the probe, then only the one batch still missing
    reference = _build(_Trunk(), tmp_path / "ref", data)
    for t in ("a", "b"):
        np.testing.assert_array_equal(np.asarray(cache.taps[t]), np.asarray(reference.taps[t]))
    assert cache.features(3)["b"].shape == (4, 8, 12)
    assert cache.train_label([0, 1]).shape == (2, 16, 24)
    assert tuple(cache.full_label(2).shape) == (40, 40)  # labels kept at full resolution
    np.testing.assert_array_equal(cache.full_label(2).numpy(), data.read_label(2))


def test_head_training_writes_its_outputs_and_resumes_exactly(
        tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config_file(tmp_path)
    whole = load_config(path, [f"train.out_dir={tmp_path / 'whole'}"])
    result = train_cached(whole, resolution=(32, 32), cache_root=tmp_path / "cache",
                          progress=False)
    out = tmp_path / "whole"
    for name in ("metrics.json", "results.json", "log.jsonl", "curve.png",
                 "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    assert result["val_images"] == 4 and result["train_images"] == 8
    norms = json.loads((out / "feature_norms.json").read_text())
    assert set(norms["feature_norm"]) == {"conv3", "conv4", "conv5", "fc7", "pool6"}
    assert all(v > 0 for v in norms["feature_norm"].values())
    assert norms["l2norm_scale_mean"]  # the learned scales of the L2Norm branches
    assert 0.0 <= result["metrics"]["mean_iou"] <= 1.0
    assert math.isfinite(result["final_loss"])
    # The whole model (frozen trunk + the trained head) loads like a trainer checkpoint.
    loaded = load_model(out / "checkpoints/model.pt")
    trained = torch.load(out / "checkpoints/last.pt", weights_only=True)["model"]
    _, head = engine.SPLITS["parsenet_vgg16"](loaded.model)
    for k, v in head.state_dict().items():
        torch.testing.assert_close(v, trained[f"head.{k}"], rtol=0, atol=0, msg=k)
    assert loaded.iteration == 4

    calls = {"n": 0}
    real = engine.run_iteration

    def killed_at_iteration_3(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    split = load_config(path, [f"train.out_dir={tmp_path / 'split'}"])
    monkeypatch.setattr(engine, "run_iteration", killed_at_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        train_cached(split, resolution=(32, 32), cache_root=tmp_path / "cache", progress=False)
    monkeypatch.setattr(engine, "run_iteration", real)
    resumed = train_cached(split, resolution=(32, 32), cache_root=tmp_path / "cache",
                           progress=False)
    a = torch.load(out / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split/checkpoints/last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed["metrics"]["mean_iou"] == result["metrics"]["mean_iou"]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "split/log.jsonl").open()
              if '"train"' in line]
    assert len(losses) == 4  # the interrupted run's records were not duplicated


def test_the_grid_loss_reads_the_labels_at_the_cell_centres(
        tmp_path: Path, one_thread: None) -> None:
    labels = torch.arange(2 * 16 * 16).reshape(2, 16, 16)
    got = engine.grid_labels(labels, 8, 0.0, (2, 2))
    assert got.tolist() == labels[:, ::8, ::8].tolist()
    assert engine.grid_labels(labels, 8, 3.5, (2, 2))[0, 0, 0] == labels[0, 4, 4]
    config = load_config(_config_file(tmp_path, iterations=2))
    result = train_cached(config, resolution=(32, 32), cache_root=tmp_path / "cache",
                          progress=False, loss_on="grid")
    assert result["loss_on"] == "grid" and math.isfinite(result["final_loss"])
    # Evaluation is still at the full 40 x 40 labels: every val pixel was scored.
    confusion = torch.tensor(result["metrics"]["confusion"])
    assert int(confusion.sum()) == 4 * 40 * 40
    with pytest.raises(ValueError, match="loss_on"):
        train_cached(config, resolution=(32, 32), cache_root=tmp_path / "cache",
                     progress=False, loss_on="pixels")


def test_a_non_finite_loss_raises_training_diverged(tmp_path: Path, one_thread: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(_config_file(tmp_path))
    monkeypatch.setattr(engine, "run_iteration", lambda *a, **k: (math.nan, False))
    with pytest.raises(TrainingDivergedError, match="iteration 1"):
        train_cached(config, resolution=(32, 32), cache_root=tmp_path / "cache",
                     progress=False)


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
        assert t.engine == "cached"
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
    ({"engine": "gpu"}, "engine 'gpu' unknown"),
    ({"resolution": None}, "engine cached needs resolution"),
])
def test_a_bad_engine_spec_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    table = {"title": "t", "protocol": "p", "engine": "cached", "resolution": [8, 8],
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
