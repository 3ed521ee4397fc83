"""lab.tools.slim_runs on tiny fake run folders: every file it deletes is in results.json
first, and the study reads the slimmed run as it read the full one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lab.tools.slim_runs import FOLDED, log_segments, log_wall_seconds, main, slim_record, slim_run
from parsenet.apps import study

CONFIG = {"name": "tiny", "model": {"name": "parsenet_vgg16", "args": {"context": True}},
          "train": {"iterations": 4, "batch_size": 2, "seed": 0}}
METRICS = {"pixel_acc": 0.8, "mean_acc": 0.6, "mean_iou": 0.5, "fw_iou": 0.7,
           "per_class_iou": [0.5, None], "confusion": [[3, 1], [0, 0]]}
LOG = [{"kind": "train", "iteration": 2, "time": 1.0, "loss": 2.5},
       {"kind": "val", "iteration": 4, "time": 2.0, "mean_iou": 0.5}]
NORMS = {"feature_norm": {"fc7": 3.0, "pool6": 1.5}, "after_l2norm": {},
         "l2norm_scale_mean": {}}
ATTEMPTS = [{"resumed": False, "outcome": "finished", "commit": "abc1234", "seconds": 90.0}]


def _write_spec(tmp_path: Path) -> Path:
    variants = [{"name": "a", "label": "variant A", "config": "unused.yaml", "seeds": [0, 1]}]
    spec = {"tables": {"t": {"title": "A fake table", "protocol": "proto", "note": "",
                             "paper_tables": "-", "variants": variants, "claims": []}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _full_run(run: Path) -> None:
    """What the study's cached engine leaves in a finished run's folder."""
    run.mkdir(parents=True)
    facts = {"iteration": 4, "final_loss": 1.25, "wall_time_s": 80.0, "images_per_s": 2.0,
             "amp": "bf16", "config": CONFIG}
    (run / "metrics.json").write_text(json.dumps({**facts, "metrics": METRICS}))
    (run / "results.json").write_text(json.dumps({**facts, "summary": {"mean_iou": 0.5}}))
    (run / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LOG))
    (run / "feature_norms.json").write_text(json.dumps(NORMS))
    (run / "attempts.json").write_text(json.dumps(ATTEMPTS))
    (run / "curve.png").write_bytes(b"\x89PNG not read")


@pytest.fixture()
def fake_runs(tmp_path: Path) -> tuple[study.Table, Path]:
    """Seed 0 finished with every file; seed 1 diverged; a table report naming both."""
    table = study.resolve_table("t", _write_spec(tmp_path))
    root = tmp_path / "runs"
    _full_run(root / "proto" / "a" / "seed0")
    diverged = root / "proto" / "a" / "seed1"
    diverged.mkdir(parents=True)
    (diverged / "diverged.json").write_text(json.dumps({"error": "loss is nan at 3"}))
    rows = [{"runs": [{"dir": str(root / "proto" / "a" / f"seed{s}"),
                       "command": f"parsenet study --table t --only a --seeds {s}"}
                      for s in (0, 1)]}]
    (root / "t").mkdir()
    (root / "t" / "results.json").write_text(json.dumps({"table": "t", "rows": rows}))
    return table, root


def test_slimming_keeps_every_figure_and_the_study_reads_the_same_rows(fake_runs) -> None:
    table, root = fake_runs
    before = study.collect_rows(table, root)
    main([str(root)])
    run = root / "proto" / "a" / "seed0"
    assert sorted(p.name for p in run.iterdir()) == ["README.md", "results.json"]
    assert sorted(p.name for p in (root / "proto" / "a" / "seed1").iterdir()) == [
        "README.md", "results.json"]
    record = json.loads((run / "results.json").read_text())
    assert record["metrics"] == METRICS and record["config"] == CONFIG
    assert record["log"] == LOG and record["feature_norms"] == NORMS
    assert record["attempts"] == ATTEMPTS and "summary" not in record
    assert (record["run"], record["status"], record["precision"], record["tables"]) == (
        "proto/a/seed0", "finished", "bf16", ["t"])
    assert record["command"] == "parsenet study --table t --only a --seeds 0"
    assert study.collect_rows(table, root) == before
    assert study.is_finished(run) and study.is_finished(root / "proto" / "a" / "seed1")
    card = (run / "README.md").read_text()
    assert "`parsenet study --table t --only a --seeds 0`" in card
    assert "mean IU 50.0" in card and "precision bf16; wall time 1.3 min" in card
    assert "CPU: not recorded with the run" in card
    assert "diverged: loss is nan at 3" in (root / "proto" / "a" / "seed1" / "README.md"
                                            ).read_text()


def test_slimming_again_rewrites_the_same_files(fake_runs) -> None:
    _, root = fake_runs
    main([str(root)])
    run = root / "proto" / "a" / "seed0"
    first = {p.name: p.read_bytes() for p in run.iterdir()}
    main([str(root)])
    assert {p.name: p.read_bytes() for p in run.iterdir()} == first
    # The table report is no run: it is left as it was.
    assert set(json.loads((root / "t" / "results.json").read_text())) == {"table", "rows"}


def test_a_published_run_keeps_its_card_the_pictures_it_shows_and_its_facts(tmp_path) -> None:
    """A trainer run (config only in config.yaml) published with a card.json and README."""
    run = tmp_path / "lite_run"
    _full_run(run)
    (run / "results.json").unlink()
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["config"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "card.json").write_text(json.dumps(
        {"run": "lite_run", "command": "parsenet train --config x.yaml", "cpu": "EPYC",
         "val_metrics": {"mean_iou": 0.5}}))
    (run / "README.md").write_text("# Model card\n\n![curves](curve.png)\n")
    record = slim_run(run, command="not this one", cpu="nor this")
    assert (record["command"], record["cpu"], record["config"]) == (
        "parsenet train --config x.yaml", "EPYC", CONFIG)
    assert "val_metrics" not in record and record["metrics"] == METRICS
    assert (run / "README.md").read_text() == "# Model card\n\n![curves](curve.png)\n"
    assert sorted(p.name for p in run.iterdir()) == ["README.md", "curve.png", "results.json"]
    assert not any((run / name).exists() for name in FOLDED)


def test_a_run_that_has_not_ended_is_no_run(tmp_path) -> None:
    run = tmp_path / "half"
    run.mkdir()
    (run / "attempts.json").write_text(json.dumps(ATTEMPTS))
    main([str(tmp_path)])
    assert sorted(p.name for p in run.iterdir()) == ["attempts.json"]
    with pytest.raises(ValueError, match="not a finished run"):
        slim_run(run)


def test_the_released_index_reads_the_published_records(tmp_path) -> None:
    from lab.tools.publish_run import write_index

    run = tmp_path / "releases" / "lite_run"
    _full_run(run)
    (run / "results.json").unlink()
    (run / "card.json").write_text(json.dumps(
        {"run": "lite_run", "release": "tiny", "dataset": "Tiny", "variant": "parsenet",
         "wall_time_min": 1.5, "precision": "bf16", "cpu": "EPYC"}))
    slim_run(run)
    record = json.loads((run / "results.json").read_text())
    record["release_eval"] = {"overrides": {"flip": True}, "metrics": {
        "pixel_acc": 0.861, "mean_acc": 0.7, "mean_iou": 0.523, "fw_iou": 0.75}}
    (run / "results.json").write_text(json.dumps(record))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "RESULTS.md").write_text("before\n<!-- released:begin -->\nold\n"
                                     "<!-- released:end -->\nafter\n")
    released = write_index(tmp_path / "releases", docs).read_text()
    row = ("| lite_run | `--model tiny` | Tiny | VGG-16  (from scratch) | parsenet | 80.0 | "
           "60.0 | 50.0 | 70.0 | 1.5 | bf16 | EPYC | 86.1 / 52.3 |")
    assert row in released.splitlines()
    results = (docs / "RESULTS.md").read_text()
    assert row in results.splitlines() and "\nold\n" not in results
    assert results.startswith("before\n") and results.endswith("after\n")


def test_the_release_protocol_eval_has_one_key_whichever_tool_wrote_it(tmp_path) -> None:
    """The older eval_multiscale_flip key moves to release_eval (its scales: the config's
    eval.scales); a publish_run entry without weights gets the released model's."""
    config = {**CONFIG, "eval": {"mode": "whole", "scales": [0.75, 1.0], "flip": False}}
    figures = {"pixel_acc": 0.9, "mean_acc": 0.8, "mean_iou": 0.6, "fw_iou": 0.85,
               "per_class_iou": [0.6, None]}
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps(
        {"metrics": METRICS, "config": config, "eval_multiscale_flip": figures}))
    published = tmp_path / "published"
    published.mkdir()
    (published / "results.json").write_text(json.dumps(
        {"metrics": METRICS, "config": config,
         "release_eval": {"overrides": {"flip": True}, "metrics": figures}}))
    main([str(old), str(published)])
    moved = json.loads((old / "results.json").read_text())
    assert "eval_multiscale_flip" not in moved
    assert moved["release_eval"] == {
        "overrides": {"mode": "multiscale", "flip": True, "scales": [0.75, 1.0]},
        "weights": "fp32 checkpoint", "metrics": figures}
    kept = json.loads((published / "results.json").read_text())["release_eval"]
    assert kept == {"overrides": {"flip": True}, "weights": "released fp16", "metrics": figures}


def test_release_eval_folds_in_an_eval_json(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    _full_run(run)
    scored = tmp_path / "eval.json"
    scored.write_text(json.dumps({"mode": "multiscale", "metrics": {**METRICS, "mean_iou": 0.55}}))
    main([str(run), "--release-eval", str(scored), "--release-eval-set", "mode=multiscale",
          "--release-eval-set", "scales=[0.75, 1.0]"])
    entry = json.loads((run / "results.json").read_text())["release_eval"]
    assert entry == {"overrides": {"mode": "multiscale", "scales": [0.75, 1.0]},
                     "weights": "fp32 checkpoint",
                     "metrics": {"pixel_acc": 0.8, "mean_acc": 0.6, "mean_iou": 0.55,
                                 "fw_iou": 0.7, "per_class_iou": [0.5, None]}}
    capsys.readouterr()
    scored.write_text(json.dumps({"metrics": {"mean_iou": 0.5}}))
    for argv in ([str(run), "--release-eval", str(scored), "--release-eval-set", "flip=true"],
                 [str(run), "--release-eval", str(scored)],
                 [str(run), "--release-eval-set", "flip=true"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err  # the usage, then one line of error
        assert err.strip().splitlines()[-1].startswith("python -m lab.tools.slim_runs: error: ")


def test_a_resumed_runs_wall_time_covers_every_process(tmp_path):
    # The first process was stopped by SIGTERM (no end event); the trainer's wall_time_s in
    # metrics.json is the second process's alone.
    log = [{"kind": "event", "iteration": 0, "time": 0.1, "event": "start"},
           {"kind": "train", "iteration": 10, "time": 300.0, "loss": 1.0},
           {"kind": "event", "iteration": 12, "time": 330.0, "event": "sigterm"},
           {"kind": "event", "iteration": 12, "time": 0.1, "event": "resume"},
           {"kind": "train", "iteration": 20, "time": 100.0, "loss": 0.5},
           {"kind": "event", "iteration": 20, "time": 119.0, "event": "end",
            "wall_time_s": 120.0}]
    assert log_segments(log) == [330.0, 119.0]
    assert log_wall_seconds(log) == 449.0  # one process without its own figure: the clocks
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    (run / "metrics.json").write_text(json.dumps({"metrics": {"mean_iou": 0.5},
                                                  "wall_time_s": 120.0}))
    assert slim_record(run)["wall_time_s"] == 449.0
    log[2] = {**log[2], "event": "end", "wall_time_s": 335.0}  # both ended on their own
    assert log_wall_seconds(log) == 455.0
