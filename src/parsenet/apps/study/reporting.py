"""The study's reporting: rows from the run directories, the Markdown tables beside the
paper's figures, the claims as measured deltas and the machine facts, written to
``<out_root>/<table>/results.json``. Reads runs; trains nothing."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from parsenet.apps.study.paper import PaperRow, format_figures
from parsenet.apps.study.spec import (
    METRICS,
    Table,
    command_for,
    read_run,
    resolve_table,
    run_dir,
    with_overrides,
)
from parsenet.apps.tables import format_markdown_table

__all__ = ["PAPER_HEADER", "collect_rows", "comparisons", "format_table", "git_commit",
           "is_paper_table", "machine_facts", "paper_cell", "paper_rows", "read_json",
           "report"]

PAPER_HEADER = "paper (Table: row: figures, src/parsenet/apps/study/paper_figures.yaml)"


def is_paper_table(key: str) -> bool:
    """Whether a table key is one of the paper's Tables 1-8 (:func:`spec.paper_tables`)."""
    return key.startswith("paper")


def git_commit() -> str:
    """The short commit of the folder the command runs in (the user's project, recorded
    with each run), or "unknown" outside a git repository."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _mean_spread(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def collect_rows(table: Table, out_root: str | Path = "runs/study",
                 seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """One row per variant from the run directories (finished seeds only)."""
    rows = []
    for v in table.variants:
        runs = []
        for seed in (seeds if seeds is not None else v.seeds):
            path = run_dir(out_root, table, v, seed)
            record = read_run(path)
            metrics = record if "metrics" in record else None
            diverged, attempts = record.get("diverged"), record.get("attempts") or []
            run: dict[str, Any] = {"seed": seed, "dir": str(path),
                                   "command": command_for(v, seed, path)}
            if metrics:
                run.update(status="finished", iterations=metrics.get("iteration"),
                           final_loss=metrics.get("final_loss"),
                           images_per_s=metrics.get("images_per_s"),
                           **{m: 100.0 * metrics["metrics"][m] for m in METRICS})
            elif diverged:
                run.update(status="diverged", error=diverged["error"])
            else:
                run.update(status="missing")
            run["wall_s"] = (sum(a["seconds"] for a in attempts) if attempts
                             else (metrics or {}).get("wall_time_s"))
            run["feature_norms"] = record.get("feature_norms")
            run["commits"] = sorted({a["commit"] for a in attempts if a.get("commit")})
            runs.append(run)
        done = [r for r in runs if r["status"] == "finished"]
        row: dict[str, Any] = {"variant": v.name, "label": v.label, "config": v.config,
                               "overrides": list(v.overrides), "runs": runs,
                               "finished": len(done),
                               "diverged": sum(r["status"] == "diverged" for r in runs),
                               "paper": paper_rows(table, v.paper)}
        for m in METRICS:
            if done:
                row[m], row[m + "_spread"] = _mean_spread([r[m] for r in done])
        walls = [r["wall_s"] for r in runs if r["wall_s"] and r["status"] != "missing"]
        row["wall_s"] = sum(walls) / len(walls) if walls else None
        rows.append(row)
    return rows


def paper_rows(table: Table, ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """The paper's rows a variant stands for, limited to the table's ``paper_keys``."""
    rows = [table.paper[i] for i in ids]
    return [{"id": r.id, "table": r.table, "label": r.label, "figures": r.figures}
            for r in rows if not table.paper_keys or r.table in table.paper_keys]


def _cell(row: dict[str, Any], metric: str) -> str:
    if metric not in row:
        return "diverged" if row["diverged"] else "-"
    spread = row.get(metric + "_spread")
    text = f"{row[metric]:.1f}" + (f" ± {spread:.1f}" if spread is not None else "")
    return text + (f" ({row['diverged']} div.)" if row["diverged"] else "")


def paper_cell(row: dict[str, Any]) -> str:
    """The paper's figures of the rows this variant stands for, each named by table and row."""
    cells = [f"T{p['table']} {p['label']}: " + format_figures(PaperRow(
                 id=p["id"], table=p["table"], label=p["label"], figures=p["figures"]))
             for p in row.get("paper") or []]
    return "; ".join(cells) or "no such row in the paper"


def _norms(row: dict[str, Any]) -> list[dict[str, float]]:
    return [r["feature_norms"]["feature_norm"] for r in row["runs"] if r.get("feature_norms")]


def _norm_taps(rows: list[dict[str, Any]]) -> list[str]:
    """The taps the rows' feature norms name, first seen first (VGG: conv3 ... pool6; an
    EfficientNet-Lite: its taps)."""
    return list(dict.fromkeys(t for row in rows for n in _norms(row) for t in n))


def _norm_cell(row: dict[str, Any], taps: list[str]) -> str:
    norms = _norms(row)
    if not norms:
        return "-"
    means = [[n[t] for n in norms if t in n] for t in taps]
    text = " / ".join(f"{sum(v) / len(v):.3g}" if v else "-" for v in means)
    scales = [v for r in row["runs"] if r.get("feature_norms")
              for v in r["feature_norms"]["l2norm_scale_mean"].values()]
    return text + (f" (scale {sum(scales) / len(scales):.4g})" if scales else "")


def format_table(table: Table, rows: list[dict[str, Any]]) -> str:
    """A Markdown table: ours (mean ± sample std over finished seeds) beside the paper's."""
    taps = _norm_taps(rows)
    header = ["variant", "seeds", "pixel acc", "mean acc", "mean IU", "f.w. IU",
              "wall (min/run)",
              f"feature norm {' / '.join(taps) or 'per tap'} (learned L2Norm scale)",
              PAPER_HEADER]
    cells = [[row["label"], f"{row['finished']}/{len(row['runs'])}",
              *(_cell(row, m) for m in METRICS),
              f"{row['wall_s'] / 60:.1f}" if row["wall_s"] else "-", _norm_cell(row, taps),
              paper_cell(row)] for row in rows]
    return "\n".join(format_markdown_table(header, cells))


def comparisons(table: Table, rows: list[dict[str, Any]]) -> list[str]:
    """The table's claims, each as 'ours: delta mean IU' computed from the rows."""
    by_name = {r["variant"]: r for r in rows}
    out = []
    for better, worse, claim, *_ in table.claims:  # a 4th element: the claim's kind
        a, b = by_name[better], by_name[worse]
        if "mean_iou" not in a or "mean_iou" not in b:
            out.append(f"- {claim}: not measured yet ({a['label']}: {a['finished']} seeds, "
                       f"{b['label']}: {b['finished']} seeds finished)")
            continue
        worse_by_seed = {r["seed"]: r for r in b["runs"] if r["status"] == "finished"}
        deltas = [r["mean_iou"] - worse_by_seed[r["seed"]]["mean_iou"] for r in a["runs"]
                  if r["status"] == "finished" and r["seed"] in worse_by_seed]
        per_seed = ", ".join(f"{d:+.1f}" for d in deltas) or "no common seed"
        out.append(f"- {claim}: ours {a['mean_iou'] - b['mean_iou']:+.1f} mean IU "
                   f"({a['label']} vs {b['label']}; per seed: {per_seed})")
    return out


def machine_facts() -> dict[str, Any]:
    # os.cpu_count, not `nproc`: nproc answers OMP_NUM_THREADS, which the study lanes set.
    return {"commit": git_commit(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "processor": platform.processor() or "unknown",
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def report(table: str | int | Table, *, seeds: list[int] | None = None,
           out_root: str | Path = "runs/study", spec_file: str | Path | None = None,
           paper: bool = False, budget_minutes: float | None = None) -> list[dict[str, Any]]:
    """Tabulate the finished runs of ``table`` (training nothing): print the table and
    write ``<out_root>/<table>/results.json``; returns the rows. ``spec_file``: the study
    spec that defines ``table`` (``paper``: the paper's Tables 1-8). ``budget_minutes``:
    the runs of a budgeted study (:func:`~parsenet.apps.study.runner.run_study`)."""
    spec = table if isinstance(table, Table) else with_overrides(
        resolve_table(table, spec_file, paper), [], budget_minutes)
    rows = collect_rows(spec, out_root, seeds)
    result = {"table": spec.key, "title": spec.title, "paper_tables": spec.paper_tables,
              "protocol": spec.protocol, "note": spec.note,
              "command": f"parsenet study {spec.source} --table {spec.key}", "rows": rows,
              "claims": comparisons(spec, rows), "machine": machine_facts(),
              "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = Path(out_root) / spec.key / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{spec.title}\n\n{format_table(spec, rows)}\n")
    print("\n".join(result["claims"]))
    return rows
