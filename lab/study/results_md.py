"""The generated sections of docs/RESULTS.md: each ``<!-- study:<key>:begin/end -->``
section from its table's ``results.json``, and the claims table from the run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.study.claims import claims_rows, format_claims_summary, format_claims_table
from lab.study.spec import EVIDENCE, SPEC_FILE, table_command
from parsenet.apps.study.reporting import (
    PAPER_HEADER,
    format_table,
    is_paper_table,
    paper_cell,
    paper_rows,
    read_json,
)
from parsenet.apps.study.spec import Table, load_tables, paper_tables, resolve_table

__all__ = ["render_section", "refresh_paper_cells", "write_results_md"]


def render_section(result: dict[str, Any], spec_file: str | Path = SPEC_FILE) -> str:
    """The Markdown of one table's results.json."""
    spec = resolve_table(result["table"], spec_file, is_paper_table(result["table"]))
    m = result["machine"]
    runs = [r for row in result["rows"] for r in row["runs"]]
    missing = [f"{row['variant']} seed {r['seed']}" for row in result["rows"]
               for r in row["runs"] if r["status"] == "missing"]
    commits = sorted({c for r in runs for c in r.get("commits", [])})
    lines = [
        f"Command: `{table_command(result['table'], spec_file)}` (from the repo root). Written "
        f"{result['written']} "
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
            paper = paper_rows(table, labels[cells[0][2:]].paper)
            lines[i] = " | ".join([*cells[:-1], f"{paper_cell({'paper': paper})} |"])
    if len(lines) > 2 and lines[0].startswith("Command:") and lines[1] == "" and table.note:
        lines[2] = table.note
    return "\n".join(lines)


def write_results_md(path: str | Path = "docs/RESULTS.md", out_root: str | Path = EVIDENCE,
                     spec_file: str | Path = SPEC_FILE) -> list[str]:
    """Replace each ``<!-- study:<key>:begin -->`` ... ``<!-- study:<key>:end -->`` section of
    ``path`` by the rendering of ``<out_root>/<key>/results.json``; returns the keys
    rewritten. A section whose results.json is absent gets only its paper column and note
    refreshed (:func:`refresh_paper_cells`; its key is returned with " (paper column)").
    ``<!-- study:claims:begin/end -->`` gets the claims table of every ``claim-*`` table
    (:mod:`lab.study.claims`), read from the run directories under ``out_root``, and
    ``<!-- study:summary:begin/end -->`` its counts per verdict.
    Text outside the markers is left as it is."""
    path = Path(path)
    text = path.read_text()
    written = []
    tables = {**load_tables(spec_file), **paper_tables()}
    for key, table in tables.items():
        begin, end = f"<!-- study:{key}:begin -->", f"<!-- study:{key}:end -->"
        if begin not in text or end not in text:
            continue
        result = read_json(Path(out_root) / key / "results.json")
        head, rest = text.split(begin, 1)
        old, tail = rest.split(end, 1)
        if result is None:
            body = refresh_paper_cells(old.strip("\n"), table)
            key = f"{key} (paper column)"
        else:
            body = render_section(result, spec_file)
        text = f"{head}{begin}\n{body}\n{end}{tail}"
        written.append(key)
    entries = None
    for key, render in (("claims", format_claims_table), ("summary", format_claims_summary)):
        begin, end = f"<!-- study:{key}:begin -->", f"<!-- study:{key}:end -->"
        if begin in text and end in text:  # from the run directories
            entries = claims_rows(out_root, spec_file) if entries is None else entries
            head, rest = text.split(begin, 1)
            text = f"{head}{begin}\n{render(entries)}\n{end}{rest.split(end, 1)[1]}"
            written.append(key)
    path.write_text(text)
    return written
