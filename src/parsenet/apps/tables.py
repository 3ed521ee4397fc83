"""The text and Markdown tables the apps print (eval, summary, demo, study), laid out once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = ["format_text_table", "format_markdown_table"]


def format_text_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                      widths: Sequence[int | None],
                      rule: Literal["line", "columns"] | None = None) -> list[str]:
    """Fixed-width lines: the first column left-aligned, the others right-aligned, two
    spaces apart. A column's width is its entry in ``widths``, or with None its longest
    cell; a longer cell widens its own line only. ``rule``: under the header, one line of
    dashes as long as the header ("line"), dashes per column ("columns"), or none."""
    def line(cells: Sequence[str]) -> str:
        first, *others = cells
        parts = [f"{first:<{sizes[0]}}", *(f"{c:>{w}}" for c, w in zip(others, sizes[1:],
                                                                       strict=True))]
        return "  ".join(parts)

    sizes = [w if w is not None else max(len(r[k]) for r in (header, *rows))
             for k, w in enumerate(widths)]
    lines = [line(header)]
    if rule == "line":
        lines.append("-" * len(lines[0]))
    elif rule == "columns":
        lines.append("  ".join("-" * w for w in sizes))
    return [*lines, *(line(r) for r in rows)]


def format_markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: the header, the ``---`` row, one line per row."""
    return [f"| {' | '.join(header)} |", "|" + " --- |" * len(header),
            *(f"| {' | '.join(r)} |" for r in rows)]
