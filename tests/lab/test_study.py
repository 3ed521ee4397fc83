"""The ablation study runner: table specs, dry runs, a tiny real study, skip, resume, results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from study_data import write_study_dataset

from lab.study.results_md import write_results_md
from parsenet.apps import study
from parsenet.config import ConfigError, load_config
from parsenet.models import build_model

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "configs" / "cpu" / "study.yaml"


@pytest.fixture()
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)  # config paths in the spec are relative to the repo root
    return REPO


# ------------------------------------------------------------------ the real spec
def test_every_table_lists_its_variants_in_a_dry_run(in_repo: Path, tmp_path: Path) -> None:
    tables = study.load_tables(SPEC)
    assert {"3", "6", "camvid"} <= set(tables)
    for key, table in tables.items():
        jobs = study.run_study(key, out_root=tmp_path, dry_run=True, spec_file=SPEC)
        expected = [(v.name, s) for v in table.variants for s in v.seeds]
        assert sorted((j["variant"], j["seed"]) for j in jobs) == sorted(expected)
        assert not any(j["finished"] for j in jobs)
        # Priority order: the first job belongs to a variant of the lowest priority.
        lowest = min(v.priority for v in table.variants)
        assert {v.name: v.priority for v in table.variants}[jobs[0]["variant"]] == lowest
    assert not list(tmp_path.iterdir())  # a dry run trains and writes nothing


def test_every_variant_config_loads_and_builds(in_repo: Path) -> None:
    for table in study.load_tables(SPEC).values():
        for v in table.variants:
            cfg = load_config(v.config, list(v.overrides))
            # Width-reduced to stay fast; pretrained weights need full width (they are
            # tested in tests/backbones), so the architecture is built without them.
            # (VGG only: the Lite0 builder has no width and is small at full size.)
            width = {"width": 0.0625} if cfg.model.name == "parsenet_vgg16" else {}
            args = {**cfg.model.args, **width, "weights": None}
            model = build_model(cfg.model.name, num_classes=3, **args)
            assert model.num_classes == 3
            assert cfg.data.val_split and (cfg.data.holdout_every or
                                           cfg.data.val_split != cfg.data.train_split)


def test_the_key_comparisons_have_two_seeds_and_aliases_resolve(in_repo: Path) -> None:
    t3 = study.resolve_table(4, SPEC)
    assert t3.key == "3" and study.resolve_table("7", SPEC).key == "6"
    seeds = {v.name: v.seeds for v in t3.variants}
    for name in ("conv3", "conv3_norm", "fc7", "pool6_fc7_norm"):
        assert len(seeds[name]) >= 2, name
    # Variants shared by tables 3 and 6 (same protocol, same run dirs) are identical.
    t6 = study.resolve_table(6, SPEC)
    shared = {v.name: v for v in t3.variants} | {}
    for v in t6.variants:
        if v.name in shared:
            assert v == shared[v.name]
    with pytest.raises(ConfigError, match="unknown study table"):
        study.resolve_table("99", SPEC)


# ------------------------------------------------------------------ a tiny real study
def _make_dataset(root: Path) -> Path:
    return write_study_dataset(root)


def _make_spec(tmp_path: Path, iterations: int = 4) -> Path:
    data = _make_dataset(tmp_path / "data")
    config = {
        "name": "tiny",
        "model": {"name": "parsenet_vgg16", "args": {"width": 0.0625, "features": ["fc7"]}},
        "data": {"root": str(data), "format": "folder", "train_split": "all",
                 "val_split": "all", "holdout_every": 4, "crop_size": 32,
                 "scale_range": [1.0, 1.0], "workers": 0},
        "train": {"iterations": iterations, "batch_size": 2, "lr": 0.01, "amp": "off",
                  "device": "cpu", "checkpoint_every": 2, "log_every": 1},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    variants = [
        {"name": "base", "config": str(tmp_path / "tiny.yaml"),
         "overrides": ["model.args.context=false", "model.args.normalize=false"],
         "seeds": [0], "priority": 1},
        {"name": "parsenet", "config": str(tmp_path / "tiny.yaml"),
         "paper": "table3_siftflow_pool6_fc7",
         "overrides": ["model.args.context=true", "model.args.normalize=true"],
         "seeds": [0], "priority": 2},
    ]
    spec = {"tables": {"t": {"title": "tiny", "protocol": "tinyproto", "note": "a note",
                             "variants": variants,
                             "claims": [["parsenet", "base", "context helps"]]}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_tiny_study_writes_results_skips_finished_runs_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _make_spec(tmp_path)
    out = tmp_path / "runs"
    # An interrupted run: 'parsenet' trained 2 of 4 iterations, checkpoint but no metrics.
    from parsenet.engine.trainer import train

    run = out / "tinyproto" / "parsenet" / "seed0"
    table = study.resolve_table("t", spec)
    variant = table.variants[1]
    train(load_config(variant.config, [*variant.overrides, "train.iterations=2",
                                       "train.seed=0", f"train.out_dir={run}",
                                       "train.progress=false"]))
    (run / "metrics.json").unlink()

    rows = study.run_study("t", out_root=out, spec_file=spec)
    results = json.loads((out / "t" / "results.json").read_text())
    assert [r["variant"] for r in results["rows"]] == ["base", "parsenet"]
    for row in rows:
        assert row["finished"] == 1
        for m in study.METRICS:
            assert 0.0 <= row[m] <= 100.0
        norms = row["runs"][0]["feature_norms"]["feature_norm"]
        assert set(norms) == {"conv3", "conv4", "conv5", "fc7", "pool6"}
        assert all(v >= 0 for v in norms.values())
    assert rows[1]["paper"][0]["figures"]["mean_iou"] == 35.5  # the packaged figures
    # learned scales, by branch name (ParseNet.branch_norms)
    assert set(rows[1]["runs"][0]["feature_norms"]["l2norm_scale_mean"]) == {"fc7", "pool6"}
    assert rows[0]["runs"][0]["feature_norms"]["l2norm_scale_mean"] == {}
    # The interrupted run resumed from its checkpoint at iteration 2 and finished at 4.
    attempts = json.loads((run / "attempts.json").read_text())
    assert attempts[-1] == {**attempts[-1], "resumed": True, "outcome": "finished"}
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "resume" and e.get("resumed_from") == 2 for e in events)
    assert json.loads((run / "metrics.json").read_text())["iteration"] == 4
    assert results["claims"][0].startswith("- context helps: ours ")
    assert results["machine"]["cpus"]

    # Re-running trains nothing (train would raise) and gives the same rows.
    def no_training(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("parsenet.engine.trainer.train", no_training)
    again = study.run_study("t", out_root=out, spec_file=spec)
    assert [r["mean_iou"] for r in again] == [r["mean_iou"] for r in rows]

    # docs regeneration: only the marked section changes.
    md = tmp_path / "RESULTS.md"
    md.write_text("intro\n<!-- study:t:begin -->\nold\n<!-- study:t:end -->\noutro\n")
    assert write_results_md(md, out, spec) == ["t"]
    text = md.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert f"parsenet study --spec {spec} --table t" in text
    assert f"{rows[1]['mean_iou']:.1f}" in text


def test_a_diverged_run_is_recorded_and_not_retried(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from parsenet.engine import trainer

    spec = _make_spec(tmp_path)
    calls = []

    def diverge(config, *, resume=False):  # noqa: ANN001, ANN202
        calls.append(config.train.out_dir)
        raise trainer.TrainingDivergedError("loss is nan at iteration 3")

    monkeypatch.setattr(trainer, "train", diverge)
    rows = study.run_study("t", out_root=tmp_path / "runs", spec_file=spec, only=["base"])
    assert len(calls) == 1 and rows[0]["diverged"] == 1 and "mean_iou" not in rows[0]
    assert "diverged" in study.format_table(study.resolve_table("t", spec), rows)
    study.run_study("t", out_root=tmp_path / "runs", spec_file=spec, only=["base"])
    assert len(calls) == 1
    with pytest.raises(ConfigError, match="unknown variant"):
        study.run_study("t", out_root=tmp_path / "runs", spec_file=spec, only=["nope"])


def test_training_some_seeds_still_tabulates_every_seed(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from parsenet.engine import trainer

    def diverge(config, *, resume=False):  # noqa: ANN001, ANN202
        raise trainer.TrainingDivergedError("loss is nan at iteration 3")

    spec, out = _make_spec(tmp_path), tmp_path / "runs"
    monkeypatch.setattr(trainer, "train", diverge)
    study.run_study("t", out_root=out, spec_file=spec)  # seed 0 of each row
    rows = study.run_study("t", out_root=out, spec_file=spec, seeds=[1])  # a second seed
    assert [[r["seed"] for r in row["runs"]] for row in rows] == [[0, 1], [0, 1]]
    assert all(row["diverged"] == 2 for row in rows)
    written = json.loads((out / "t" / "results.json").read_text())
    assert [[r["seed"] for r in row["runs"]] for row in written["rows"]] == [[0, 1], [0, 1]]
