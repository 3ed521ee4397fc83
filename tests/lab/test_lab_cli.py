"""``python -m lab.study``: parsenet study over the lab's CPU spec, and --write-md."""

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from lab.study.__main__ import main
from lab.study.spec import SPEC_FILE
from parsenet.apps import study


def _fake_study_runs(out_root: Path) -> tuple[Any, str]:
    """Finished runs (no training) for every seed of the first variant of the first table of
    the real study spec, mean IU 30, 32, ...; returns the table and that variant's mean IU
    cell as the report prints it."""
    table = next(iter(study.load_tables(SPEC_FILE).values()))
    variant = table.variants[0]
    values = [30.0 + 2 * i for i in range(len(variant.seeds))]
    for seed, value in zip(variant.seeds, values, strict=True):
        run = study.run_dir(out_root, table, variant, seed)
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(
            {"iteration": 5, "wall_time_s": 60.0,
             "metrics": {"pixel_acc": 0.7, "mean_acc": 0.5, "mean_iou": value / 100,
                         "fw_iou": 0.6}}))

    def cell(column: list[float]) -> str:  # mean, and sample std when there are two seeds
        spread = f" ± {statistics.stdev(column):.1f}" if len(column) > 1 else ""
        return f"{statistics.mean(column):.1f}{spread}"

    cells = [cell([v] * len(values)) for v in (70.0, 50.0)] + [cell(values)]
    cells += [cell([60.0] * len(values)), "1.0"]  # f.w. IU, wall minutes per run
    return table, f"| {variant.label} | {len(values)}/{len(values)} | " + " | ".join(cells)


def test_study_report_prints_finished_runs_and_trains_nothing(tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("study --report trained")

    monkeypatch.setattr("parsenet.engine.trainer.train", no_training)
    runs = tmp_path / "runs"
    table, row_start = _fake_study_runs(runs)
    assert main(["--table", table.key, "--report", "--out-root", str(runs)]) == 0
    printed = capsys.readouterr().out
    assert table.title in printed and row_start in printed
    result = json.loads((runs / table.key / "results.json").read_text())
    assert result["rows"][0]["finished"] == len(table.variants[0].seeds)
    assert sum(row["finished"] for row in result["rows"][1:]) == 0
    with pytest.raises(SystemExit) as exit_info:  # --report and --dry-run exclude each other
        main(["--table", table.key, "--report", "--dry-run"])
    assert exit_info.value.code == 2


def test_study_write_md_regenerates_marked_sections(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    table, row_start = _fake_study_runs(runs)
    assert main(["--table", table.key, "--report", "--out-root", str(runs)]) == 0
    capsys.readouterr()
    docs = tmp_path / "docs"
    docs.mkdir()
    original = (f"# Results\n<!-- study:{table.key}:begin -->\nstale\n"
                f"<!-- study:{table.key}:end -->\n<!-- study:unknown:begin -->\nkept\n"
                "<!-- study:unknown:end -->\n")
    (docs / "RESULTS.md").write_text(original)
    other = tmp_path / "OTHER.md"
    other.write_text(original)
    # Without PATH: docs/RESULTS.md of the working directory; only --write-md, no --table.
    monkeypatch.chdir(tmp_path)
    assert main(["--write-md", "--out-root", str(runs)]) == 0
    assert f"rewrote study section(s) {table.key} " in capsys.readouterr().out
    text = (docs / "RESULTS.md").read_text()
    assert "stale" not in text and "kept\n<!-- study:unknown:end -->" in text
    assert row_start in text and f"`python -m lab.study --table {table.key}`" in text
    assert other.read_text() == original
    assert main(["--write-md", str(other), "--out-root", str(runs)]) == 0
    assert other.read_text() == text


def test_write_md_errors_are_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.md"
    assert main(["--write-md", str(missing), "--out-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lab.study: error:") and str(missing) in err
    assert len(err.splitlines()) == 1


def test_lab_study_without_arguments_says_what_to_give(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "give --table KEY" in capsys.readouterr().err
