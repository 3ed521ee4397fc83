"""The paper's rows in the study: `--list`, `--paper` tables, the time budget, and the paper
column of RESULTS.md refreshed from the packaged figures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from parsenet.apps import study
from parsenet.apps.study import budget, spec
from parsenet.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)  # the configs' paths are relative to the repo root
    return REPO


def test_the_figures_file_holds_every_cell_of_tables_1_to_8() -> None:
    figures = study.load_paper_figures()
    counts = {k: len(t.rows) for k, t in figures.tables.items()}
    assert counts == {"1": 5, "2": 4, "3": 5, "4": 12, "5": 4, "6": 6, "7": 6, "8": 6}
    cells = [v for r in figures.rows.values() for v in r.figures.values()]
    # 22 columns in Table 8, 4 in Table 3; only Table 8's two "-" background cells are None.
    assert len(cells) == 5 + 4 + 5 * 4 + 12 + 4 + 6 + 6 + 6 * 22
    assert sum(v is None for v in cells) == 2
    parsenet = figures.rows["table8_voc_test_parsenet"].figures
    assert (parsenet["bkg"], parsenet["tv"], parsenet["mean_iou"]) == (92.4, 65.0, 69.8)
    assert figures.rows["table4_context_pool6_fc7_conv5_conv4_conv3"].figures == {
        "mean_iou": 0.009}


def test_list_prints_every_row_with_its_figures_and_config(in_repo: Path, capsys) -> None:
    assert cli_main(["study", "--list"]) == 0
    printed = capsys.readouterr().out
    figures = study.load_paper_figures()
    for row in figures.rows.values():
        assert f"  {row.label}: {study.format_figures(row)}" in printed, row.id
        if row.reported_by:
            assert f"reported by {row.reported_by}" in printed
        else:
            assert row.config in printed and (REPO / row.config).is_file(), row.id
    assert "T3" not in printed and "mean acc 44.1" in printed and "bkg 92.4" in printed


def test_paper_tables_are_tables_1_to_8_and_dry_run(in_repo: Path, tmp_path: Path,
                                                    capsys) -> None:
    tables = spec.paper_tables()
    assert list(tables) == [f"paper{k}" for k in "12345678"]
    assert study.resolve_table(3, paper=True).key == "paper3"
    assert [v.name for v in tables["paper8"].variants] == [
        "table8_voc_test_parsenet_baseline", "table8_voc_test_parsenet"]
    jobs = study.run_study(3, paper=True, dry_run=True, out_root=tmp_path,
                           overrides=["train.device=cuda"], budget_minutes=10)
    assert [Path(j["dir"]).parts[-3:-1] for j in jobs] == [
        ("paper3_budget10min", v.name) for v in tables["paper3"].variants]
    printed = capsys.readouterr().out
    assert printed.count("--config configs/paper/table3_siftflow_") == 4
    assert "--set 'train.device=cuda'" in printed and not list(tmp_path.iterdir())


def test_a_plan_fills_the_budget_and_is_reused(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "_time_warmup", lambda *a: (0.1, 2.0))
    plan = budget.plan_iterations("x.yaml", [], tmp_path / "run", seconds=12.5)
    assert plan["iterations"] == 105  # (12.5 s - 2.0 s of warm-up) / 0.1 s per iteration
    monkeypatch.setattr(budget, "_time_warmup", lambda *a: (1.0, 50.0))
    # An interrupted run keeps its plan (and so its LR schedule).
    assert budget.plan_iterations("x.yaml", [], tmp_path / "run", 12.5) == plan
    # A budget smaller than the warm-up still trains one iteration.
    assert budget.plan_iterations("x.yaml", [], tmp_path / "r2", 12.5)["iterations"] == 1


def _tiny_data(root: Path, n: int = 8, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images/all", "labels/all"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("sky\nground\nthing\n")
    for i in range(n):
        label = np.zeros((size, size), np.uint8)
        label[size // 2:] = 1
        label[5:15, 5:15] = 2
        image = np.stack([label * 90] * 3, -1) + rng.integers(0, 40, (size, size, 3))
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / "all" / f"{i:03d}.png")
        Image.fromarray(label).save(root / "labels" / "all" / f"{i:03d}.png")
    return root


def _tiny_config(tmp_path: Path) -> Path:
    config = {
        "name": "tiny",
        "model": {"name": "parsenet_vgg16", "args": {"width": 0.0625, "features": ["fc7"],
                                                     "context": False, "normalize": False}},
        "data": {"root": str(_tiny_data(tmp_path / "data")), "format": "folder",
                 "train_split": "all", "val_split": "all", "holdout_every": 4,
                 "crop_size": 32, "scale_range": [1.0, 1.0], "workers": 0},
        "train": {"iterations": 1000, "batch_size": 2, "lr": 0.01, "amp": "off",
                  "checkpoint_every": 1000, "log_every": 1},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_budgeted_paper_table_on_cpu_prints_ours_beside_the_papers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`parsenet study --paper --table 3 --device cpu --budget-minutes 0.05`, with Table 3's
    rows standing on a tiny config (the real rows need full-size data and weights)."""
    config = str(_tiny_config(tmp_path))
    ids = ("table3_siftflow_pool6_fc7",)  # one row keeps the test cheap
    real = spec.paper_tables()["paper3"]
    tiny = dataclasses.replace(real, variants=tuple(
        spec.Variant(name=i, label=i, config=config, paper=(i,),
                       overrides=("model.args.context=true",) if "pool6" in i else ())
        for i in ids))
    monkeypatch.setattr(spec, "paper_tables", lambda: {"paper3": tiny})
    out = tmp_path / "runs"
    assert cli_main(["study", "--paper", "--table", "3", "--device", "cpu",
                     "--budget-minutes", "0.05", "--out-root", str(out)]) == 0
    printed = capsys.readouterr().out
    for i in ids:
        run = out / "paper3_budget0.05min" / i / "seed0"
        plan = json.loads((run / "budget.json").read_text())
        assert plan["budget_s"] == pytest.approx(3.0)  # 0.05 min, all for the one run
        expected = max(1, int((3.0 - plan["warmup_wall_s"]) // plan["s_per_iteration"]))
        assert plan["iterations"] == expected
        assert json.loads((run / "metrics.json").read_text())["iteration"] == expected
        assert not (run / "warmup").exists()
    line = next(x for x in printed.splitlines() if x.startswith("| table3_siftflow_pool6_fc7"))
    assert line.startswith("| table3_siftflow_pool6_fc7 | 1/1 | ")  # ours, finished
    assert line.endswith("| T3 pool6 + fc7: pixel acc 85.7, mean acc 43.9, mean IU 35.5, "
                         "f.w. IU 76.4 |")
    result = json.loads((out / "paper3" / "results.json").read_text())
    assert result["command"] == "parsenet study --paper --table paper3"
    # --report finds the budgeted runs (and trains nothing: they are finished).
    assert cli_main(["study", "--paper", "--table", "3", "--report", "--budget-minutes",
                     "0.05", "--out-root", str(out)]) == 0
    assert "| table3_siftflow_pool6_fc7 | 1/1 | " in capsys.readouterr().out


@pytest.mark.slow
def test_the_real_table3_rows_run_on_a_budget(in_repo: Path, tmp_path: Path, capsys) -> None:
    """Table 3's own configs, at tiny width on tiny data, on a budget."""
    data = _tiny_data(tmp_path / "data")
    sets = [f"data.root={data}", "data.format=folder", "data.train_split=all",
            "data.val_split=all", "data.holdout_every=4", "data.workers=0",
            "model.args.width=0.0625", "model.args.weights=null", "model.preprocessing=null",
            "train.checkpoint_every=1000"]
    argv = ["study", "--paper", "--table", "3", "--device", "cpu", "--budget-minutes", "0.05",
            "--only", "table3_siftflow_fc7", "table3_siftflow_pool6_fc7",
            "--out-root", str(tmp_path / "runs")]
    assert cli_main(argv + [a for s in sets for a in ("--set", s)]) == 0
    assert "T3 pool6 + fc7: pixel acc 85.7" in capsys.readouterr().out


def test_committed_results_md_has_no_paper_cell_left_at_na() -> None:
    text = (REPO / "docs" / "RESULTS.md").read_text()
    assert "not retrieved" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | " in line]
    assert rows and not [r for r in rows if r.endswith("| n/a |")]


def test_a_figures_file_with_a_missing_cell_is_refused(tmp_path: Path) -> None:
    from parsenet.config import ConfigError

    bad = {"tables": {"3": {"title": "T3", "dataset": "d",
                            "columns": ["pixel_acc", "mean_iou"]}},
           "rows": {"r": {"table": "3", "label": "fc7", "figures": {"mean_iou": 35.4}}}}
    path = tmp_path / "figures.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="row r: columns .*mean_iou.* are not table 3's"):
        study.load_paper_figures(path)
