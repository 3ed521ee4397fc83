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
The tables (variants, seeds, claims) are data: ``configs/cpu/study.yaml``; the paper's
figures are in ``configs/paper/paper_results.yaml`` (``n/a`` where not retrieved).
"""

from __future__ import annotations

from parsenet.study.reporting import (
    collect_rows,
    comparisons,
    format_table,
    machine_facts,
    render_section,
    report,
    write_results_md,
)
from parsenet.study.runner import (
    METRICS,
    NORM_IMAGES,
    SPEC_FILE,
    Table,
    Variant,
    command_for,
    is_finished,
    load_tables,
    measure_feature_norms,
    resolve_table,
    run_dir,
    run_study,
)

__all__ = ["run_study", "report", "write_results_md", "collect_rows", "format_table", "load_tables",
           "Table", "Variant", "METRICS", "NORM_IMAGES", "SPEC_FILE", "command_for", "comparisons",
           "is_finished", "machine_facts", "measure_feature_norms", "render_section",
           "resolve_table", "run_dir", "main"]


def main(argv: list[str] | None = None) -> None:
    """``python -m parsenet.study --table 3 [--only a b] [--seeds 0 1] [--dry-run]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m parsenet.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="a key of configs/cpu/study.yaml")
    parser.add_argument("--only", nargs="+", help="variant names to run")
    parser.add_argument("--seeds", nargs="+", type=int, help="replace the variants' seeds")
    parser.add_argument("--out-root", default="runs/study")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--report", action="store_true", help="tabulate finished runs only")
    parser.add_argument("--write-md", metavar="PATH", help="then regenerate this RESULTS.md")
    args = parser.parse_args(argv)
    if args.report:
        report(args.table, seeds=args.seeds, out_root=args.out_root)
    else:
        run_study(args.table, seeds=args.seeds, out_root=args.out_root, only=args.only,
                  dry_run=args.dry_run)
    if args.write_md:
        print("rewrote sections:", write_results_md(args.write_md, args.out_root))
