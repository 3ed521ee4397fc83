"""Claim 2's section of docs/RESULTS.md, generated from ``collect()``'s summary.

Verdicts (the claims table's rule, :mod:`lab.study.claims`): for one point, pool6
"held" if ParseNet's mean is above the baseline's and every ParseNet seed beats every
baseline seed, "did not hold" if the same is true the other way, "inside the spread"
otherwise. For the trend (the claim
itself), per dataset with two or more scales: the gain "grows" if every seed's gain at the
largest scale is above every seed's gain at the smallest, "shrinks" if every one is below,
"inside the spread" otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lab.study.claims import trend_pairs, verdict

__all__ = ["pair_verdict", "trend_verdicts", "render", "write_section", "BEGIN", "END"]

BEGIN, END = "<!-- claim2:begin -->", "<!-- claim2:end -->"


def pair_verdict(better: list[float], worse: list[float]) -> str:
    """The claims table's rule (:func:`lab.study.claims.verdict`) on per-seed values."""
    return verdict(better, worse)


def trend_verdicts(points: list[dict[str, Any]]) -> dict[str, str]:
    """Per dataset with several scales: does pool6's gain grow from the smallest scale to
    the largest? (:func:`lab.study.claims.trend_pairs`, worded.)"""
    out = {}
    for dataset, small, large, trend in trend_pairs(points):
        word = {"held": "grows", "did not hold": "shrinks"}.get(trend, trend)
        out[dataset] = (f"{word} (x{small['scale']:g} -> x{large['scale']:g}: "
                        f"{_pm(small['gain_mean'], small['gain_std'])} -> "
                        f"{_pm(large['gain_mean'], large['gain_std'])})")
    return out


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:+.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _row_cell(row: dict[str, Any]) -> str:
    if row["mean_iou"] is None:
        return "-"
    spread = f" ± {row['std']:.2f}" if row["std"] is not None else ""
    return f"{row['mean_iou']:.2f}{spread} ({len(row['seeds'])})"


# The per-point column states the outcome; the paper's claims (and their verdicts) are the
# claims table's, which reads the same runs.
_OUTCOME = {"held": "ParseNet better", "did not hold": "baseline better"}


def _results_table(points: list[dict[str, Any]]) -> list[str]:
    lines = ["| dataset x scale | input (W x H) | side / ERF95 | baseline | ParseNet | "
             "ParseNet, no L2Norm | pool6 gain (mean ± std) | gain per seed | every seed says |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda q: q["side_over_erf95"] or 0):
        x = f"{p['side_over_erf95']:.2f}" if p["side_over_erf95"] else "-"
        seeds = ", ".join(f"{g:+.2f}" for g in p["gain_seeds"].values()) or "-"
        verdict = _OUTCOME.get(v := pair_verdict(list(p["parsenet"]["seeds"].values()),
                                                 list(p["baseline"]["seeds"].values())), v)
        lines.append(
            f"| {p['dataset']} x{p['scale']:g} | {p['resolution'][1]} x {p['resolution'][0]} "
            f"| {x} | {_row_cell(p['baseline'])} | {_row_cell(p['parsenet'])} | "
            f"{_row_cell(p['nonorm'])} | {_pm(p['gain_mean'], p['gain_std'])} | {seeds} | "
            f"{verdict} |")
    return lines


def _erf_table(erf_records: list[dict[str, Any]]) -> list[str]:
    lines = ["| images | size (W x H) | ERF 95% square | ERF 50% square | theoretical RF |",
             "|---|---|---|---|---|"]
    for r in erf_records:
        h, w = r["image_hw"]
        clipped = " (reaches the border: a lower bound)" if r["clipped"] else ""
        lines.append(f"| {r['dataset']} val x{r['scale']:g}, {r['images']} images | "
                     f"{w} x {h} | {r['erf_side']} px{clipped} | {r['erf_side50']} px | "
                     f"{r['theoretical_rf']} px |")
    return lines


def render(summary: dict[str, Any], erf_records: list[dict[str, Any]], text: str,
           fig2: dict[str, Any] | None = None) -> str:
    """The section: ``text`` (the prose, with ``{results}``, ``{erf}``, ``{trend}`` and
    ``{fig2}`` placeholders) filled with the tables."""
    trend = trend_verdicts(summary["points"])
    trend_lines = [f"- {d}: pool6's gain {v}" for d, v in trend.items()] or ["- not run yet"]
    return text.format(results="\n".join(_results_table(summary["points"])),
                       erf="\n".join(_erf_table(erf_records)), trend="\n".join(trend_lines),
                       fig2=fig2_lines(fig2) if fig2 else "(not drawn yet)")


def write_section(section: str, path: str | Path = "docs/RESULTS.md") -> Path:
    """Replace the text between :data:`BEGIN` and :data:`END` in ``path`` (appended at the
    end if the markers are absent)."""
    path = Path(path)
    page = path.read_text()
    block = f"{BEGIN}\n{section.strip()}\n{END}"
    if BEGIN in page and END in page:
        page = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, page,
                      flags=re.S)
    else:
        page = page.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(page)
    return path


# The section's prose, with {erf}, {results}, {trend} and {fig2} where the tables go.
SECTION = (Path(__file__).parent / "templates" / "claim2.md").read_text()


def fig2_lines(summary: dict[str, Any]) -> str:
    """The Fig. 2 json's norms as a table."""
    lines = [f"{summary['fc']}; image {summary['image']}.", "",
             "| layer | mean per-pixel norm, before | after L2Norm | at the centre cell |",
             "|---|---|---|---|"]
    for name, (before, after) in summary["mean_norms"].items():
        centre = summary["centre_norms"][name][0]
        lines.append(f"| {name} | {before:.1f} | {after:.1f} | {centre:.1f} |")
    return "\n".join(lines)
