"""The paper's ablations at CPU scale: train a table's variants, print ours beside the paper's.

    run_study(3)             # SiftFlow analogue of Tables 3/4: layers x (no norm, L2Norm)
    run_study("6")           # SiftFlow analogue of Tables 6/7: fusion and scale
    run_study("camvid")      # context on CamVid: baseline vs ParseNet

Each variant is a config file plus dotted overrides (the same ones ``parsenet train --config
... --set ...`` takes) and a list of seeds. A run lives in ``<out_root>/<protocol>/<variant>/
seed<k>``; tables that share a protocol (SiftFlow's Tables 3 and 6) share runs. A finished run
(``metrics.json``, or ``diverged.json`` when the loss became NaN, which the paper calls a
collapse) is skipped; an interrupted one resumes from its last checkpoint. Every finished run
also gets ``feature_norms.json``: the mean L2 norm of each layer's features on validation
images (the paper's Fig. 2), which tells whether the scale gap that motivates L2Norm exists.

Results go to ``<out_root>/<table>/results.json``; :func:`write_results_md` regenerates the
marked sections of docs/RESULTS.md from those files, so no figure there is typed by hand.
The tables (variants, seeds, claims) are data: ``configs/cpu/study.yaml``; every figure of
the paper's Tables 1-8 ships in ``paper_figures.yaml`` beside this module
(:mod:`parsenet.apps.study.paper`). ``run_study(3, paper=True)`` runs the paper's own rows
(configs/paper/table3_*.yaml); ``budget_minutes=`` fits them into a time budget
(:mod:`parsenet.apps.study.budget`).
"""

from __future__ import annotations

import sys

from parsenet.apps.study.budget import plan_iterations
from parsenet.apps.study.paper import (
    PaperFigures,
    PaperRow,
    PaperTable,
    format_figures,
    format_paper_list,
    load_paper_figures,
)
from parsenet.apps.study.reporting import (
    collect_rows,
    comparisons,
    format_table,
    machine_facts,
    refresh_paper_cells,
    render_section,
    report,
    write_results_md,
)
from parsenet.apps.study.runner import measure_feature_norms, run_study
from parsenet.apps.study.spec import (
    METRICS,
    NORM_IMAGES,
    SPEC_FILE,
    Table,
    Variant,
    command_for,
    is_finished,
    load_tables,
    paper_tables,
    resolve_table,
    run_dir,
)
from parsenet.cli import main as cli_main

__all__ = ["run_study", "report", "write_results_md", "collect_rows", "format_table", "load_tables",
           "Table", "Variant", "METRICS", "NORM_IMAGES", "SPEC_FILE", "command_for", "comparisons",
           "is_finished", "machine_facts", "measure_feature_norms", "render_section",
           "resolve_table", "run_dir", "main", "paper_tables", "plan_iterations",
           "PaperFigures", "PaperRow", "PaperTable", "format_figures", "format_paper_list",
           "load_paper_figures", "refresh_paper_cells"]


def main(argv: list[str] | None = None) -> int:
    """``python -m parsenet.apps.study ...`` = ``parsenet study ...`` (the same options)."""
    return cli_main(["study", *(sys.argv[1:] if argv is None else argv)])
