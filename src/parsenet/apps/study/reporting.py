"""The study's reporting: rows from the run directories, the Markdown tables beside the
paper's figures, the claims as measured deltas, the machine facts, and the generated
sections of docs/RESULTS.md. Reads runs; trains nothing."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from parsenet.apps.checkout import git_commit
from parsenet.apps.study.paper import PaperRow, format_figures
from parsenet.apps.study.spec import (
    METRICS,
    SPEC_FILE,
    Table,
    command_for,
    load_tables,
    paper_tables,
    resolve_table,
    run_dir,
    with_overrides,
)
from parsenet.apps.tables import format_markdown_table

PAPER_HEADER = "paper (Table: row: figures, src/parsenet/apps/study/paper_figures.yaml)"


def _is_paper(key: str) -> bool:
    return key.startswith("paper")  # the keys of runner.paper_tables


def _read_json(path: Path) -> Any:
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
            metrics, diverged = _read_json(path / "metrics.json"), _read_json(
                path / "diverged.json")
            attempts = _read_json(path / "attempts.json") or []
            run: dict[str, Any] = {"seed": seed, "dir": str(path),
                                   "command": command_for(v, seed, path, table)}
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
            run["feature_norms"] = _read_json(path / "feature_norms.json")
            run["commits"] = sorted({a["commit"] for a in attempts if a.get("commit")})
            runs.append(run)
        done = [r for r in runs if r["status"] == "finished"]
        row: dict[str, Any] = {"variant": v.name, "label": v.label, "config": v.config,
                               "overrides": list(v.overrides), "runs": runs,
                               "finished": len(done),
                               "diverged": sum(r["status"] == "diverged" for r in runs),
                               "paper": _paper_rows(table, v.paper)}
        for m in METRICS:
            if done:
                row[m], row[m + "_spread"] = _mean_spread([r[m] for r in done])
        walls = [r["wall_s"] for r in runs if r["wall_s"] and r["status"] != "missing"]
        row["wall_s"] = sum(walls) / len(walls) if walls else None
        rows.append(row)
    return rows


def _paper_rows(table: Table, ids: tuple[str, ...]) -> list[dict[str, Any]]:
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


def _paper_cell(row: dict[str, Any]) -> str:
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
              _paper_cell(row)] for row in rows]
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
           out_root: str | Path = "runs/study", spec_file: str | Path = SPEC_FILE,
           paper: bool = False, budget_minutes: float | None = None) -> list[dict[str, Any]]:
    """Tabulate the finished runs of ``table`` (training nothing): print the table and
    write ``<out_root>/<table>/results.json``; returns the rows. ``budget_minutes``: the
    runs of a budgeted study (:func:`~parsenet.apps.study.runner.run_study`)."""
    spec = table if isinstance(table, Table) else with_overrides(
        resolve_table(table, spec_file, paper), [], budget_minutes)
    rows = collect_rows(spec, out_root, seeds)
    result = {"table": spec.key, "title": spec.title, "paper_tables": spec.paper_tables,
              "protocol": spec.protocol, "note": spec.note,
              "command": f"parsenet study {'--paper ' if _is_paper(spec.key) else ''}"
                         f"--table {spec.key}", "rows": rows,
              "claims": comparisons(spec, rows), "machine": machine_facts(),
              "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = Path(out_root) / spec.key / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{spec.title}\n\n{format_table(spec, rows)}\n")
    print("\n".join(result["claims"]))
    return rows


def render_section(result: dict[str, Any], spec_file: str | Path = SPEC_FILE) -> str:
    """The Markdown of one table's results.json."""
    spec = resolve_table(result["table"], spec_file, _is_paper(result["table"]))
    m = result["machine"]
    runs = [r for row in result["rows"] for r in row["runs"]]
    missing = [f"{row['variant']} seed {r['seed']}" for row in result["rows"]
               for r in row["runs"] if r["status"] == "missing"]
    commits = sorted({c for r in runs for c in r.get("commits", [])})
    lines = [
        f"Command: `{result['command']}` (from the repo root). Written {result['written']} "
        f"at commit `{m['commit']}`; runs trained at commit(s) "
        f"{', '.join(f'`{c}`' for c in commits) or 'not recorded'} on {m['cpus']} CPUs "
        f"({m['platform']}, Python "
        f"{m['python']}, torch {m['torch']}, {m['torch_threads']} threads). "
        f"Paper: {result['paper_tables']}.",
        "", result["note"], "", format_table(spec, result["rows"]), "",
        "Claims (mean IU difference, ours; the paper's reading is in the text):", "",
        *result["claims"], "",
        f"Runs finished: {sum(r['status'] == 'finished' for r in runs)}, diverged: "
        f"{sum(r['status'] == 'diverged' for r in runs)}, not run yet: {len(missing)}"
        + (f" ({', '.join(missing)})." if missing else "."),
    ]
    return "\n".join(lines)


def refresh_paper_cells(section: str, table: Table) -> str:
    """A rendered section with only what does not need the runs redone: the paper column
    (from the figures file) and the table's note. Every figure of ours is left as it is.
    Used when a section's results.json is absent (runs/ is not committed)."""
    labels = {v.label: v for v in table.variants}
    lines = section.split("\n")
    for i, line in enumerate(lines):
        cells = line.split(" | ")
        if line.startswith("| variant | seeds |"):
            lines[i] = " | ".join([*cells[:-1], f"{PAPER_HEADER} |"])
        elif line.startswith("| ") and cells[0][2:] in labels:
            paper = _paper_rows(table, labels[cells[0][2:]].paper)
            lines[i] = " | ".join([*cells[:-1], f"{_paper_cell({'paper': paper})} |"])
    if len(lines) > 2 and lines[0].startswith("Command:") and lines[1] == "" and table.note:
        lines[2] = table.note
    return "\n".join(lines)


def write_results_md(path: str | Path = "docs/RESULTS.md", out_root: str | Path = "runs/study",
                     spec_file: str | Path = SPEC_FILE) -> list[str]:
    """Replace each ``<!-- study:<key>:begin -->`` ... ``<!-- study:<key>:end -->`` section of
    ``path`` by the rendering of ``<out_root>/<key>/results.json``; returns the keys
    rewritten. A section whose results.json is absent gets only its paper column and note
    refreshed (:func:`refresh_paper_cells`; its key is returned with " (paper column)").
    ``<!-- study:claims:begin/end -->`` gets the claims table of every ``claim-*`` table
    (:mod:`parsenet.apps.study.claims`), read from the run directories under ``out_root``.
    Text outside the markers is left as it is."""
    path = Path(path)
    text = path.read_text()
    written = []
    tables = {**load_tables(spec_file), **paper_tables()}
    for key, table in tables.items():
        begin, end = f"<!-- study:{key}:begin -->", f"<!-- study:{key}:end -->"
        if begin not in text or end not in text:
            continue
        result = _read_json(Path(out_root) / key / "results.json")
        head, rest = text.split(begin, 1)
        old, tail = rest.split(end, 1)
        if result is None:
            body = refresh_paper_cells(old.strip("\n"), table)
            key = f"{key} (paper column)"
        else:
            body = render_section(result, spec_file)
        text = f"{head}{begin}\n{body}\n{end}{tail}"
        written.append(key)
    begin, end = "<!-- study:claims:begin -->", "<!-- study:claims:end -->"
    if begin in text and end in text:  # the opening claims table, from the run directories
        from parsenet.apps.study.claims import claims_rows, format_claims_table

        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        body = format_claims_table(claims_rows(out_root, spec_file))
        text = f"{head}{begin}\n{body}\n{end}{tail}"
        written.append("claims")
    path.write_text(text)
    return written
