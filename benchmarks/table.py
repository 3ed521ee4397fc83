"""Render a run's results (the JSON written by ``python -m benchmarks``) as text or Markdown."""

from __future__ import annotations

from typing import Any

__all__ = ["text_table", "markdown_table", "goal_summary", "verdict"]


def verdict(row: dict[str, Any]) -> str:
    if row.get("met") is None:
        return ""
    return "met" if row["met"] else "MISSED"


def _cells(row: dict[str, Any]) -> list[str]:
    value = row["text"] + (f" ({row['note']})" if row.get("note") else "")
    return [row["metric"], value, row.get("goal") or "", verdict(row)]


def text_table(results: dict[str, Any]) -> str:
    """A plain-text table, one block per section (what the benchmark prints)."""
    lines: list[str] = []
    for section in results["sections"].values():
        lines.append("")
        lines.append(section["title"])
        if section["status"] != "ok":
            lines.append(f"  {section['status']}: {section['reason']}")
            continue
        rows = [_cells(r) for r in section["rows"]]
        widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
        for r in rows:
            lines.append(
                "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            )
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(section: dict[str, Any]) -> str:
    """One section as a Markdown table (or its skip / error reason)."""
    if section["status"] != "ok":
        return f"*{section['status']}: {_md(section['reason'])}*\n"
    lines = ["| metric | value | goal | |", "|---|---|---|---|"]
    for row in section["rows"]:
        cells = _cells(row)
        if cells[3] == "MISSED":
            cells[3] = "**missed**"
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def goal_summary(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Lines naming each goal met and each goal missed (with value and target)."""
    met: list[str] = []
    missed: list[str] = []
    for section in results["sections"].values():
        for row in section.get("rows", []):
            if row.get("met") is None:
                continue
            line = f"{row['metric']}: {row['text']} (goal {row['goal']})"
            (met if row["met"] else missed).append(line)
    return met, missed
