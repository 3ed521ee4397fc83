"""The claims table that opens docs/RESULTS.md: every ``claims:`` entry of the study's
``claim-*`` tables, the paper's figures, ours (mean IU, mean +- sample std, seeds), the
verdict and the command. Reads the run directories; trains nothing.

Verdict rule (also printed under the table):

* a directional claim ("A beats B"): **held** if mean(A) > mean(B) and every seed of A
  beats every seed of B; **did not hold** if mean(A) < mean(B) and every seed of B beats
  every seed of A; otherwise **inside the spread**.
* an "equal" claim ("A and B are about equal"): **held** if neither row's seeds all beat
  the other's (inside the spread); **did not hold** if they do, either way.
* A diverged seed (non-finite loss: the paper's "collapse") ranks below every finished
  seed; a row whose seeds all diverged has no mean. Fewer than two seeds (finished or
  diverged) on either side: **not run** (or **too few seeds**).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lab.study.spec import EVIDENCE, SPEC_FILE, table_command
from parsenet.apps.study.reporting import collect_rows
from parsenet.apps.study.spec import Table, load_tables

__all__ = ["claims_rows", "context_trend_rows", "trend_pairs", "format_claims_table",
           "format_claims_summary",
           "verdict", "VERDICT_RULE", "CLAIM_PREFIX", "CONTEXT_SUMMARY"]

CLAIM_PREFIX = "claim-"  # tables whose claims: entries the opening table reads
# Claim 2's own summary (python -m lab.study.context_study report), under out_root
CONTEXT_SUMMARY = "claim-context-size/results.json"
# Sec. 4.2's figures for the trend (A vs B): pool6 + fc7 minus fc7 on PASCAL-Context without
# norm (Table 4) and on SiftFlow (Table 3), whose images are the smaller.
_PAPER_TREND = "T4 PASCAL-Context +1.6 vs T3 SiftFlow +0.1"
VERDICT_RULE = __doc__.split("Verdict rule (also printed under the table):\n\n", 1)[1].split(
    '\n"""')[0].strip()


def _scores(row: dict[str, Any]) -> list[float]:
    """Mean IU of each seed that ended; a diverged seed is -inf (below every finished one)."""
    return [r["mean_iou"] if r["status"] == "finished" else -math.inf
            for r in row["runs"] if r["status"] in ("finished", "diverged")]


def verdict(better: list[float], worse: list[float], kind: str = "") -> str:
    """The verdict of the rule above for the two rows' per-seed scores."""
    if not better and not worse:
        return "not run"
    if len(better) < 2 or len(worse) < 2:
        return "too few seeds"
    a_wins, b_wins = min(better) > max(worse), min(worse) > max(better)
    if kind == "equal":
        return "did not hold" if a_wins or b_wins else "held"
    finite_a = [v for v in better if math.isfinite(v)]
    finite_b = [v for v in worse if math.isfinite(v)]
    mean_a = sum(finite_a) / len(finite_a) if finite_a else -math.inf
    mean_b = sum(finite_b) / len(finite_b) if finite_b else -math.inf
    if a_wins and mean_a > mean_b:
        return "held"
    if b_wins and mean_b > mean_a:
        return "did not hold"
    return "inside the spread"


def _ours(row: dict[str, Any]) -> str:
    done, diverged, total = row["finished"], row["diverged"], len(row["runs"])
    if "mean_iou" not in row:
        return f"diverged ({diverged}/{total} seeds)" if diverged else "not run"
    spread = row.get("mean_iou_spread")
    text = f"{row['mean_iou']:.1f}" + (f" ± {spread:.1f}" if spread is not None else "")
    text += f" ({done} seed{'s' if done != 1 else ''}"
    return text + (f", {diverged} diverged)" if diverged else ")")


def _paper(table: Table, better: dict[str, Any], worse: dict[str, Any]) -> str:
    """"T4: 40.2 vs 36.5" for each paper table both rows stand in (paper_figures.yaml)."""
    def by_table(row: dict[str, Any]) -> dict[str, tuple[str, float]]:
        return {p["table"]: (p["id"], p["figures"].get("mean_iou")) for p in row["paper"]}
    a, b = by_table(better), by_table(worse)
    # Two rows standing for the same row of the paper are no comparison the paper made.
    cells = [f"T{k}: {a[k][1]:g} vs {b[k][1]:g}" for k in a if k in b and a[k][0] != b[k][0]
             and a[k][1] is not None and b[k][1] is not None]
    return "; ".join(cells) or "-"


def claims_rows(out_root: str | Path = EVIDENCE, spec_file: str | Path = SPEC_FILE
                ) -> list[dict[str, Any]]:
    """One entry per claim of every ``claim-*`` table, from the run directories, then
    claim 2's trend (:func:`context_trend_rows`)."""
    out = []
    for key, table in load_tables(spec_file).items():
        if not key.startswith(CLAIM_PREFIX) or not table.claims:
            continue
        rows = {r["variant"]: r for r in collect_rows(table, out_root)}
        for better, worse, claim, *kind in table.claims:
            a, b = rows[better], rows[worse]
            out.append({"table": key, "claim": claim, "kind": kind[0] if kind else "",
                        "better": a["label"], "worse": b["label"],
                        "paper": _paper(table, a, b), "ours": f"{_ours(a)} vs {_ours(b)}",
                        "verdict": verdict(_scores(a), _scores(b), kind[0] if kind else ""),
                        "command": table_command(key, spec_file)})
    return out + context_trend_rows(out_root)


def _gain(point: dict[str, Any]) -> str:
    seeds = list(point["gain_seeds"].values())
    spread = f" ± {point['gain_std']:.1f}" if point.get("gain_std") is not None else ""
    return f"{point['gain_mean']:+.1f}{spread} ({len(seeds)} seeds)"


def trend_pairs(points: list[dict[str, Any]]
                ) -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    """Claim 2's trend per dataset with two or more scales run: (dataset, smallest point,
    largest point, the verdict of "the largest scale's per-seed gains beat the
    smallest's")."""
    done = [p for p in points if p["gain_seeds"]]
    out = []
    for dataset in sorted({p["dataset"] for p in done}):
        scales = sorted((p for p in done if p["dataset"] == dataset), key=lambda p: p["scale"])
        if len(scales) >= 2:
            small, large = scales[0], scales[-1]
            out.append((dataset, small, large, verdict(list(large["gain_seeds"].values()),
                                                       list(small["gain_seeds"].values()))))
    return out


def context_trend_rows(out_root: str | Path = EVIDENCE) -> list[dict[str, Any]]:
    """Claim 2 itself: per dataset run at two or more scales, pool6's gain (ParseNet minus
    baseline, per seed) at the largest scale against the smallest, from claim 2's summary
    (:data:`CONTEXT_SUMMARY`); none while that summary is absent."""
    path = Path(out_root) / CONTEXT_SUMMARY
    if not path.is_file():
        return []
    out = []
    for dataset, small, large, trend in trend_pairs(json.loads(path.read_text())["points"]):
        out.append({
            "table": "claim-context-size", "kind": "",
            "claim": f"pool6's gain grows as the image grows ({dataset} x{small['scale']:g} "
                     f"-> x{large['scale']:g}, Sec. 4.2)",
            "better": f"pool6 gain, {dataset} x{large['scale']:g}",
            "worse": f"pool6 gain, {dataset} x{small['scale']:g}",
            "paper": _PAPER_TREND, "ours": f"{_gain(large)} vs {_gain(small)}",
            "verdict": trend, "command": "python -m lab.study.context_study report"})
    return out


def format_claims_table(entries: list[dict[str, Any]]) -> str:
    """The Markdown table (and the verdict rule under it)."""
    lines = ["| claim | rows (A vs B) | paper, mean IoU (A vs B) | ours, mean IU (A vs B) "
             "| verdict | command |", "|" + " --- |" * 6]
    for e in entries:
        claim = e["claim"] + (" (A ≈ B)" if e["kind"] == "equal" else " (A > B)")
        lines.append(f"| {claim} | {e['better']} vs {e['worse']} | {e['paper']} | "
                     f"{e['ours']} | {e['verdict']} | `{e['command']}` |")
    return "\n".join(lines) + "\n\nVerdict rule:\n\n" + VERDICT_RULE


VERDICTS = ("held", "did not hold", "inside the spread")


def format_claims_summary(entries: list[dict[str, Any]]) -> str:
    """The page's opening table: per table of claims, how many held, did not, or fell
    inside the spread (any other verdict: not run), and the command that reproduces it."""
    lines = ["| claims of | held | did not hold | inside the spread | not run | command |",
             "|" + " --- |" * 6]
    for command in dict.fromkeys(e["command"] for e in entries):
        mine = [e for e in entries if e["command"] == command]
        counts = [sum(e["verdict"] == v for e in mine) for v in VERDICTS]
        lines.append(f"| {mine[0]['table']} | " + " | ".join(str(c) for c in counts)
                     + f" | {len(mine) - sum(counts)} | `{command}` |")
    return "\n".join(lines)
