"""Where the lab's study spec lives and the one command that reproduces each of its tables."""

from __future__ import annotations

from pathlib import Path

from lab import REPO
from parsenet.apps.study.reporting import is_paper_table

__all__ = ["EVIDENCE", "SPEC_FILE", "table_command"]

# The CPU study's tables (variants, seeds, claims); the configs it names are paths from the
# repo root, where the lab runs.
SPEC_FILE = REPO / "configs" / "cpu" / "study.yaml"
# The committed runs (slimmed by lab.tools.slim_runs), relative to the repo root so the
# records written there name no machine's folders.
EVIDENCE = Path("lab/runs/study")


def table_command(key: str, spec_file: str | Path = SPEC_FILE) -> str:
    """The command that trains (or, with --report, tabulates) one table, from the repo root:
    the lab's for its own spec, parsenet study's for the paper's tables or another spec."""
    if is_paper_table(key):
        return f"parsenet study --paper --table {key}"
    if Path(spec_file).resolve() == SPEC_FILE:
        return f"python -m lab.study --table {key}"
    return f"parsenet study --spec {spec_file} --table {key}"
