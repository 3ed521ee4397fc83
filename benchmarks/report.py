"""Write docs/PERFORMANCE.md from benchmark runs' JSON, so that no figure is typed by hand.

    python -m benchmarks.report docs/benchmarks/RUN_A.json docs/benchmarks/RUN_B.json \
        --out docs/PERFORMANCE.md

One part per run, headed by the run's machine kind (AVX512-BF16, AVX2, ...): CPUs differ
between sessions, and no figure may silently come from another kind of machine. The prose
around the tables (method, what each goal means) lives in ``benchmarks/notes.md``; its
``{{section:KEY}}`` lines are replaced by that section's table, ``{{missed}}`` by the list of
missed goals with the margin, ``{{met}}`` by the goals met, ``{{meta}}`` by the run's
command, commit and load, ``{{kind}}`` by what the machine kind means for precision,
``{{reading}}`` by the run's own reading of its misses (``RUN.reading.md`` beside its JSON),
``{{profile:KEY}}`` by a profile stored in the run, and ``{{json}}`` by the whole JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from benchmarks.table import markdown_table

__all__ = ["render", "render_page", "margin", "machine_kind"]

NOTES = Path(__file__).with_name("notes.md")
PAGE_HEAD = """# Performance

This file is generated: `python -m benchmarks.report RUN.json [RUN.json ...] --out
docs/PERFORMANCE.md` fills the prose of `benchmarks/notes.md` with the tables of each
benchmark run (the JSON files are in `docs/benchmarks/`). No figure below is typed by hand.
CPUs differ between sessions, so each run is its own part, headed by its machine kind.
"""


def machine_kind(results: dict[str, Any]) -> str:
    """``AVX512-BF16`` or the CPU capability of the run (runs before the field: the latter)."""
    meta = results["meta"]
    return meta.get("cpu_kind") or str(meta.get("cpu_capability", "unknown")).upper()


def _kind_note(results: dict[str, Any]) -> str:
    if machine_kind(results).startswith("AVX512-BF16"):
        return ("This CPU has native bf16 (AVX512-BF16/AMX): `train.amp: auto` trains under "
                "bf16 autocast here.")
    return "This CPU has no native bf16: `train.amp: auto` stays in float32 here."


def margin(row: dict[str, Any]) -> str:
    """How far a numeric goal is missed, e.g. ``"12.3% over"``."""
    match = re.fullmatch(r"(<=|>=) \D*?(\S+)", row.get("goal") or "")
    if not match or not isinstance(row["value"], (int, float)):
        return "missed"
    op, target = match.group(1), float(match.group(2))
    value = float(row["value"])
    if op == "<=":
        return f"{(value / target - 1) * 100:.1f}% over the target"
    return f"{(1 - value / target) * 100:.1f}% under the target"


def _goals(results: dict[str, Any], met: bool) -> str:
    lines = []
    for section in results["sections"].values():
        for row in section.get("rows", []):
            if row.get("met") is not met:
                continue
            line = f"- {section['title'].split(' ', 1)[0]} {row['metric']}: **{row['text']}** "
            line += f"(goal {row['goal']})"
            if not met:
                line += f": {margin(row)}"
            lines.append(line)
    return "\n".join(lines) if lines else "- none"


def _meta(results: dict[str, Any]) -> str:
    m = results["meta"]
    loads = m["loadavg"]
    after = "; ".join(
        f"{key} {vals[0]:.1f}" for key, vals in loads.get("after_each_section", {}).items() if vals
    )
    dirty = f" plus {m['uncommitted_files']} uncommitted files" if m["uncommitted_files"] else ""
    return "\n".join(
        [
            f"- command: `{m['command'].strip()}` ({'quick' if m['quick'] else 'full'} mode)",
            f"- commit: `{m['commit']}`{dirty}",
            f"- run: {m['started_utc']} to {m['finished_utc']} UTC, {m['seconds']:.0f} s",
            f"- machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} "
            f"({m['cpu_capability']}, oneDNN {'on' if m['mkldnn'] else 'off'}), "
            f"{m['threads']} threads, Python {m['python']}",
            f"- load average (1 min) at start {loads['start'][0]:.1f}; after each section: {after}",
            "- contention (seconds our threads were runnable but waiting for a CPU, per second "
            "of the section; 0 = the machine was ours): "
            + "; ".join(
                f"{key} {c['runqueue_wait_s'] / max(c['wall_s'], 1e-9):.2f}"
                for key, c in m.get("contention", {}).items()
            ),
        ]
    )


def _profile(results: dict[str, Any], key: str) -> str:
    section = results["sections"].get(key, {})
    shapes = section.get("details", {}).get("shapes", {})
    blocks = []
    for shape, data in shapes.items():
        rows = data.get("profile_ours") or []
        if not rows:
            continue
        lines = [f"Our L2Norm, one forward + backward at {shape} (torch.profiler, self CPU):", ""]
        lines += ["| op | calls | self ms |", "|---|---|---|"]
        lines += [f"| `{r['op']}` | {r['calls']} | {r['self_ms']:.2f} |" for r in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "*no profile in this run*"


def render(results: dict[str, Any], notes: str, reading: str = "") -> str:
    def replace(match: re.Match[str]) -> str:
        name, _, arg = match.group(1).partition(":")
        if name == "section":
            section = results["sections"].get(arg)
            if section is None:
                return f"*section {arg} was not run*\n"
            return f"**{section['title']}**\n\n{markdown_table(section)}"
        if name == "missed":
            return _goals(results, met=False)
        if name == "met":
            return _goals(results, met=True)
        if name == "meta":
            return _meta(results)
        if name == "kind":
            return _kind_note(results)
        if name == "reading":
            return reading.strip() or "*no reading of the misses was written for this run*"
        if name == "profile":
            return _profile(results, arg)
        if name == "json":
            return "```json\n" + json.dumps(results, indent=1) + "\n```"
        raise ValueError(f"unknown placeholder {{{{{match.group(1)}}}}} in {NOTES}")

    return re.sub(r"\{\{([a-z0-9_]+(?::[a-z0-9_]+)?)\}\}", replace, notes)


def _demote(markdown: str) -> str:
    """Headings one level down, so that each run sits under its machine-kind heading."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.M)


def render_page(runs: list[Path], notes: str) -> str:
    parts = [PAGE_HEAD]
    for path in runs:
        results = json.loads(path.read_text())
        reading_file = path.with_suffix(".reading.md")
        reading = reading_file.read_text() if reading_file.is_file() else ""
        meta = results["meta"]
        sections = ", ".join(results["sections"])
        parts.append(f"## {machine_kind(results)}: {meta['cpu']}, {meta['started_utc'][:10]} "
                     f"({sections})\n\n"
                     f"From `{path.as_posix()}`.\n")
        parts.append(_demote(render(results, notes, reading)))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+",
                        help="JSON files written by python -m benchmarks, one per machine kind")
    parser.add_argument("--out", type=Path, default=None, help="default: print")
    args = parser.parse_args()
    text = render_page(args.results, NOTES.read_text())
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
