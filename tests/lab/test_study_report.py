"""The study's reporting on run folders written by the tests (nothing is trained): rows,
mean ± spread, diverged and missing runs, claims, feature norms, RESULTS.md sections."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from lab.study.__main__ import main as lab_main
from lab.study.results_md import render_section, write_results_md
from lab.study.spec import SPEC_FILE
from parsenet.apps import study
from parsenet.apps.study import reporting


def _write_spec(tmp_path: Path) -> Path:
    variants = [
        {"name": "a", "label": "variant A", "config": "unused.yaml", "seeds": [0, 1],
         "paper": ["table3_siftflow_fc7", "table4_context_fc7"]},
        {"name": "b", "label": "variant B", "config": "unused.yaml", "seeds": [0, 1]},
        {"name": "c", "label": "variant C", "config": "unused.yaml", "seeds": [0]},
    ]
    spec = {"tables": {"t": {"title": "A fake table", "protocol": "proto", "note": "the note",
                             "paper_tables": "Table 9", "variants": variants,
                             "paper_keys": ["3"],
                             "claims": [["a", "b", "a beats b"], ["c", "b", "c beats b"]]}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _finish(run: Path, mean_iou: float, wall_s: float = 120.0) -> None:
    run.mkdir(parents=True)
    metrics = {"pixel_acc": 0.8, "mean_acc": 0.6, "mean_iou": mean_iou, "fw_iou": 0.7}
    (run / "metrics.json").write_text(json.dumps(
        {"iteration": 10, "final_loss": 1.5, "images_per_s": 2.0, "wall_time_s": wall_s,
         "metrics": metrics}))


@pytest.fixture()
def fake_study(tmp_path: Path) -> tuple[Path, Path]:
    """a: two finished seeds (mean IU 50, 54); b: seed 0 finished (45), seed 1 diverged;
    c: not run. Seed 0 of a has feature norms."""
    spec = _write_spec(tmp_path)
    runs = tmp_path / "runs"
    _finish(runs / "proto" / "a" / "seed0", 0.50)
    _finish(runs / "proto" / "a" / "seed1", 0.54, wall_s=240.0)
    _finish(runs / "proto" / "b" / "seed0", 0.45)
    (runs / "proto" / "b" / "seed1").mkdir(parents=True)
    (runs / "proto" / "b" / "seed1" / "diverged.json").write_text(
        json.dumps({"error": "loss is nan at iteration 3"}))
    norms = {"feature_norm": {"conv3": 100.0, "conv4": 10.0, "conv5": 1.0, "fc7": 0.5,
                              "pool6": 2.0},
             "after_l2norm": {}, "l2norm_scale_mean": {"norms.fc7": 12.5}}
    (runs / "proto" / "a" / "seed0" / "feature_norms.json").write_text(json.dumps(norms))
    return spec, runs


def _row_line(text: str, label: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
    assert len(lines) == 1, text
    return lines[0]


def test_rows_average_finished_seeds_and_count_the_others(fake_study) -> None:
    spec, runs = fake_study
    rows = study.collect_rows(study.resolve_table("t", spec), runs)
    a, b, c = rows
    assert (a["finished"], a["diverged"], b["finished"], b["diverged"], c["finished"]) == (
        2, 0, 1, 1, 0)
    assert a["mean_iou"] == pytest.approx(52.0)
    assert a["mean_iou_spread"] == pytest.approx(math.sqrt(8.0))  # sample std of 50, 54
    assert b["mean_iou_spread"] is None and "mean_iou" not in c
    assert a["wall_s"] == pytest.approx(180.0)  # no attempts.json: the trainer's wall time
    assert [r["status"] for r in b["runs"]] == ["finished", "diverged"]
    assert b["runs"][1]["error"] == "loss is nan at iteration 3"
    # paper_keys ["3"] keeps the Table 3 row of the two the variant stands for.
    assert [p["id"] for p in a["paper"]] == ["table3_siftflow_fc7"] and c["paper"] == []
    assert a["paper"][0]["figures"]["mean_iou"] == 35.4


def test_table_cells_claims_and_section(fake_study, capsys) -> None:
    spec, runs = fake_study
    rows = study.report("t", out_root=runs, spec_file=spec)
    printed = capsys.readouterr().out
    assert "A fake table" in printed
    row_a = _row_line(printed, "variant A")
    assert "| 2/2 | 80.0 ± 0.0 | 60.0 ± 0.0 | 52.0 ± 2.8 | 70.0 ± 0.0 | 3.0 |" in row_a
    assert "100 / 10 / 1 / 0.5 / 2 (scale 12.5)" in row_a
    assert row_a.endswith(
        "| T3 fc7: pixel acc 85.1, mean acc 44.1, mean IU 35.4, f.w. IU 75.6 |")
    assert "| feature norm conv3 / conv4 / conv5 / fc7 / pool6 (learned L2Norm scale) |" in printed
    row_b = _row_line(printed, "variant B")
    assert "| 1/2 | 80.0 (1 div.) |" in row_b and "45.0 (1 div.)" in row_b
    assert row_b.endswith("| - | no such row in the paper |")
    assert _row_line(printed, "variant C").startswith("| variant C | 0/1 | - | - | - | - | - |")
    # Claims: the difference of the means, and per seed only where both sides finished.
    claims = study.comparisons(study.resolve_table("t", spec), rows)
    assert claims[0] == ("- a beats b: ours +7.0 mean IU (variant A vs variant B; "
                         "per seed: +5.0)")
    assert claims[1].startswith("- c beats b: not measured yet (variant C: 0 seeds")
    assert claims[0] in printed

    result = json.loads((runs / "t" / "results.json").read_text())
    assert result["rows"] == json.loads(json.dumps(rows)) and result["claims"] == claims
    assert result["command"] == f"parsenet study --spec {spec} --table t"
    section = render_section(result, spec)
    assert "Runs finished: 3, diverged: 1, not run yet: 1 (c seed 0)." in section
    assert "the note" in section and "Paper: Table 9." in section
    assert f"at commit `{result['machine']['commit']}`" in section


def test_the_norm_column_names_the_taps_the_runs_measured(fake_study) -> None:
    spec, runs = fake_study
    lite = {"feature_norm": {"stride8": 34.6, "stride16": 50.6, "head": 14.0},
            "after_l2norm": {}, "l2norm_scale_mean": {}}
    for name in ("a/seed0", "a/seed1"):
        (runs / "proto" / name / "feature_norms.json").write_text(json.dumps(lite))
    table = study.resolve_table("t", spec)
    text = study.format_table(table, study.collect_rows(table, runs))
    assert "| feature norm stride8 / stride16 / head (learned L2Norm scale) |" in text
    assert "| 34.6 / 50.6 / 14 |" in _row_line(text, "variant A")
    assert _row_line(text, "variant B").endswith("| - | no such row in the paper |")


def test_write_results_md_rewrites_only_marked_sections_with_results(fake_study) -> None:
    spec, runs = fake_study
    study.report("t", out_root=runs, spec_file=spec)
    md = runs.parent / "RESULTS.md"
    md.write_text("intro\n<!-- study:t:begin -->\nstale\n<!-- study:t:end -->\n"
                  "<!-- study:other:begin -->\nkept\n<!-- study:other:end -->\noutro\n")
    assert write_results_md(md, runs, spec) == ["t"]
    text = md.read_text()
    assert "stale" not in text and "kept" in text
    assert text.startswith("intro\n<!-- study:t:begin -->\nCommand: "
                           f"`parsenet study --spec {spec} --table t`")
    assert text.endswith("<!-- study:t:end -->\n<!-- study:other:begin -->\nkept\n"
                         "<!-- study:other:end -->\noutro\n")
    assert "52.0 ± 2.8" in text
    # Idempotent: rendering the same results.json again gives the same file.
    assert write_results_md(md, runs, spec) == ["t"] and md.read_text() == text


def test_package_keeps_the_public_names_of_the_former_module() -> None:
    for name in ("run_study", "report", "collect_rows", "format_table",
                 "load_tables", "resolve_table", "comparisons",
                 "machine_facts", "measure_feature_norms", "run_dir", "is_finished",
                 "command_for", "Table", "Variant", "METRICS"):
        assert hasattr(study, name), name
    assert study.report is reporting.report and study.runner.run_study is study.run_study


def test_module_main_report_and_write_md_train_nothing(tmp_path: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m lab.study --table K --report --write-md PATH`` on the real spec."""
    def no_training(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("--report trained")

    monkeypatch.setattr("parsenet.engine.trainer.train", no_training)
    table = next(iter(study.load_tables(SPEC_FILE).values()))
    variant = table.variants[0]
    runs = tmp_path / "runs"
    for seed in variant.seeds:
        _finish(study.run_dir(runs, table, variant, seed), 0.25)
    md = tmp_path / "RESULTS.md"
    md.write_text(f"<!-- study:{table.key}:begin -->\n<!-- study:{table.key}:end -->\n")
    lab_main(["--table", table.key, "--report", "--out-root", str(runs),
                "--write-md", str(md)])
    printed = capsys.readouterr().out
    expected = f"| {variant.label} | {len(variant.seeds)}/{len(variant.seeds)} | 80.0"
    assert expected in printed and f"rewrote study section(s) {table.key} from" in printed
    assert expected in md.read_text()
    written = sorted(p.name for p in runs.rglob("*") if p.is_file())
    assert written == sorted(["metrics.json"] * len(variant.seeds) + ["results.json"])


def test_results_md_without_runs_gets_only_its_paper_column_refreshed(tmp_path: Path) -> None:
    """No results.json (runs/ is not committed): our figures stay, the paper's come in."""
    old = ("Command: `x`\n\nan old note\n\n| variant | seeds | pixel acc | mean acc | mean IU "
           "| f.w. IU | wall | norms | paper (n/a: not retrieved) |\n|" + " --- |" * 9 + "\n"
           "| fc7 (baseline) | 2/2 | 63.4 | 13.5 | 9.2 | 46.5 | 1.5 | 5 | n/a |\n"
           "| not a variant | 1/1 | 1 | 2 | 3 | 4 | 5 | 6 | n/a |")
    md = tmp_path / "RESULTS.md"
    md.write_text(f"intro\n<!-- study:3:begin -->\n{old}\n<!-- study:3:end -->\noutro\n")
    assert write_results_md(md, tmp_path / "no_runs") == ["3 (paper column)"]
    text = md.read_text()
    assert ("| fc7 (baseline) | 2/2 | 63.4 | 13.5 | 9.2 | 46.5 | 1.5 | 5 | T3 fc7: pixel acc "
            "85.1, mean acc 44.1, mean IU 35.4, f.w. IU 75.6; T4 fc7, w/o Norm: mean IU 36.6 |"
            ) in text
    assert "| not a variant | 1/1 | 1 | 2 | 3 | 4 | 5 | 6 | n/a |" in text  # not ours to touch
    assert "an old note" not in text and study.resolve_table(3, SPEC_FILE).note in text
    assert text.startswith("intro\n") and text.endswith("outro\n")


def test_claims_summary_counts_each_verdict_per_table() -> None:
    from lab.study.claims import format_claims_summary

    def entry(table: str, verdict: str) -> dict:
        return {"table": table, "verdict": verdict,
                "command": f"python -m lab.study --table {table}"}

    entries = [entry("claim-a", "held"), entry("claim-a", "did not hold"),
               entry("claim-a", "held"), entry("claim-b", "inside the spread"),
               entry("claim-b", "not run"), entry("claim-b", "too few seeds")]
    lines = format_claims_summary(entries).splitlines()
    assert lines[0].startswith("| claims of | held | did not hold | inside the spread | not run")
    assert lines[2] == "| claim-a | 2 | 1 | 0 | 0 | `python -m lab.study --table claim-a` |"
    assert lines[3] == "| claim-b | 0 | 0 | 1 | 2 | `python -m lab.study --table claim-b` |"
    assert len(lines) == 4


def test_committed_results_md_opens_with_a_short_summary() -> None:
    """The page's opening (title to the first full table) stays short, and its summary is
    the generated one."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md").read_text()
    opening = text.split("\n## ", 1)[0]
    assert len(opening.splitlines()) <= 40
    assert "<!-- study:summary:begin -->\n| claims of |" in opening
