"""What each ``parsenet`` command does with its parsed arguments: call the library, print.

Each command imports the library code it runs when it runs, not at module level: so that
``parsenet --help``, a mistyped option or ``parsenet bench`` answer without importing torch,
and the commands that need an optional extra (serve, the demo's matplotlib) fail alone, with
one line (:class:`Unavailable`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

from parsenet.apps.checkout import repo_root
from parsenet.errors import UsageError

__all__ = ["Unavailable", "EXIT_USER_ERROR", "cmd_train", "cmd_train_head", "cmd_models",
           "cmd_eval", "cmd_predict", "cmd_export", "cmd_summary", "cmd_demo", "cmd_study",
           "cmd_serve", "cmd_bench"]

EXIT_USER_ERROR = 2


class Unavailable(Exception):
    """A command whose implementation is not installed (exit 1, one line)."""


def _print_validation(metrics: dict) -> None:
    if metrics.get("mean_iou") is not None:
        print(f"validation: pixel acc {100 * metrics['pixel_acc']:.2f}, mean IoU "
              f"{100 * metrics['mean_iou']:.2f}")


def cmd_train(args: argparse.Namespace) -> int:
    from parsenet.config import load_config
    from parsenet.engine.trainer import train

    config = load_config(args.config, args.set)
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    if result.get("rank", 0) != 0:  # under torchrun, one process reports
        return 0
    _print_validation(result.get("metrics") or {})
    print(f"{result.get('iteration')} iterations; run directory {result.get('out_dir')}, "
          f"last checkpoint {result.get('last_checkpoint')}")
    return 0


def cmd_train_head(args: argparse.Namespace) -> int:
    from parsenet.apps.study.cached.engine import train_cached
    from parsenet.config import load_config

    config = load_config(args.config, args.set)
    result = train_cached(config, resolution=tuple(args.resolution), cache_root=args.cache_root,
                          progress=config.train.progress, loss_stride=args.loss_stride)
    _print_validation(result["metrics"])
    print(f"{result['iteration']} iterations; run directory {config.train.out_dir}, model "
          f"{config.train.out_dir}/checkpoints/model.pt")
    return 0


def _source(args: argparse.Namespace) -> object:
    """--checkpoint PATH, or --model NAME as its :class:`Release`."""
    if args.model is None:
        return args.checkpoint
    from parsenet.models.released import released

    return released(args.model)


def cmd_models(args: argparse.Namespace) -> int:
    from parsenet.models.released import ReleasedWeights

    available = ReleasedWeights.available()
    width = max((len(m.value.name) for m in available), default=0)
    for member in available:
        meta = member.value.meta
        val = meta.get("val_metrics", {})
        print(f"{member.value.name:{width}s}  {meta.get('dataset', '?')}, {len(meta['classes'])} "
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
                                 progress=not args.no_progress, backend=args.backend)
    print(f"{result['checkpoint']} (iteration {result['iteration']}) on {result['split']} "
          f"of {result['data_root']}, backend {result['metrics']['backend']}")
    print(format_metrics(result["metrics"], result["classes"]))
    print(f"\nwritten: {result['json']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from parsenet.apps.tasks import predict_images

    result = predict_images(_source(args), args.inputs, args.out, backend=args.backend,
                            mode=args.mode, device=args.device,
                            progress=not args.no_progress, skip_errors=args.skip_errors,
                            export_cache=args.export_cache,
                            memory_budget_gb=args.memory_budget,
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

    if args.calibration is not None and not args.int8:
        raise UsageError("--calibration calibrates an --int8 export; add --int8")
    result = export_checkpoint(_source(args), args.format, args.out, check=not args.no_check,
                               int8=args.int8, calibration=args.calibration)
    precision = f", {result['precision']}" if "precision" in result else ""
    calibrated = (f", calibrated on {result['calibration_images']} images"
                  if result.get("calibration_images") else "")
    print(f"exported {result['path']} ({result['format']}{precision}, {result['exporter']} "
          f"exporter{calibrated})")
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
            raise Unavailable(f"{what} is not available ({module} is missing)") from None
        raise
    except AttributeError:
        raise Unavailable(f"{what} is not available ({module}.{attribute} is missing)"
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
        print(_optional("parsenet.apps.study.paper", "format_paper_list", "the study")())
        return 0
    if args.table is None and args.write_md is None:
        raise UsageError("study: give --table N (to train or, with --report, tabulate a table) "
                         "and/or --write-md [PATH], or --list")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise UsageError(f"study: --budget-minutes must be > 0, got {args.budget_minutes}")
    if args.table is not None and args.report:
        report = _optional("parsenet.apps.study", "report", "the study")
        report(args.table, seeds=args.seeds, out_root=args.out_root, paper=args.paper,
               budget_minutes=args.budget_minutes)
    elif args.table is not None:
        run_study = _optional("parsenet.apps.study", "run_study", "the study")
        kwargs: dict[str, Any] = {"out_root": args.out_root, "dry_run": args.dry_run,
                                  "paper": args.paper, "overrides": _study_overrides(args),
                                  "budget_minutes": args.budget_minutes}
        if args.seeds:
            kwargs["seeds"] = args.seeds
        if args.only:
            kwargs["only"] = args.only
        run_study(args.table, **kwargs)
    if args.write_md is not None:
        write_results_md = _optional("parsenet.apps.study", "write_results_md", "the study")
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
            raise Unavailable(f"serve needs the serve extra ({e.name} is missing): "
                               f"pip install 'parsenet[serve]'") from None
        raise
    limits = UploadLimits(max_bytes=int(args.max_mb * 1e6),
                          max_pixels=int(args.max_megapixels * 1e6))
    settings = ServeSettings(limits=limits, memory_budget_gb=args.memory_budget)
    serve(args.model, args.checkpoint, host=args.host, port=args.port, settings=settings,
          backend=args.backend)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    root = repo_root()
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise Unavailable("the benchmarks are not available: they live in the source "
                           "repository (benchmarks/), not in the installed package")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    bench_main = _optional("benchmarks.__main__", "main", "the benchmarks")
    argv = ["--quick"] if args.quick else []
    argv += ["--only", args.only] if args.only else []
    argv += ["--out", args.out] if args.out else []
    return int(bench_main(argv) or 0)
