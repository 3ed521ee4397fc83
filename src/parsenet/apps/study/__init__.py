"""The paper's ablations at CPU scale: train a table's variants, print ours beside the paper's.

    run_study(3, paper=True)                     # the paper's Table 3, as the paper ran it
    run_study("camvid", spec_file="study.yaml")  # a table of a study spec file

Each variant is a config file plus dotted overrides (the same ones ``parsenet train --config
... --set ...`` takes) and a list of seeds. A run lives in ``<out_root>/<protocol>/<variant>/
seed<k>``; tables that share a protocol (SiftFlow's Tables 3 and 6) share runs. A finished run
(``metrics.json``, or ``diverged.json`` when the loss became NaN, which the paper calls a
collapse; or a ``results.json`` holding either, :func:`read_run`) is skipped; an
interrupted one resumes from its last checkpoint. Every finished run also gets
``feature_norms.json``: the mean L2 norm of each layer's features on validation images (the
paper's Fig. 2), which tells whether the scale gap that motivates L2Norm exists.

Results go to ``<out_root>/<table>/results.json``. The tables (variants, seeds, claims) are
data: a study spec file (``spec_file=``; the lab's CPU study is ``configs/cpu/study.yaml`` in
the source repository), or the paper's Tables 1-8, whose figures (``paper_figures.yaml``) and
configs (``parsenet/configs/paper``) ship with the package (:mod:`parsenet.apps.study.paper`).
``run_study(3, paper=True)`` runs the paper's own rows; ``budget_minutes=`` fits them into a
time budget (:mod:`parsenet.apps.study.budget`).
"""

from __future__ import annotations

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
    report,
)
from parsenet.apps.study.runner import measure_feature_norms, run_study
from parsenet.apps.study.spec import (
    METRICS,
    NORM_IMAGES,
    Table,
    Variant,
    command_for,
    is_finished,
    load_tables,
    paper_tables,
    read_run,
    resolve_table,
    run_dir,
)

__all__ = ["run_study", "report", "collect_rows", "format_table", "load_tables",
           "Table", "Variant", "METRICS", "NORM_IMAGES", "command_for", "comparisons",
           "is_finished", "read_run", "machine_facts", "measure_feature_norms",
           "resolve_table", "run_dir", "paper_tables", "plan_iterations",
           "PaperFigures", "PaperRow", "PaperTable", "format_figures", "format_paper_list",
           "load_paper_figures"]
