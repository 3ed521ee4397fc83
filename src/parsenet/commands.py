"""What each ``parsenet`` command does with its parsed arguments: call the library, print.

Each command imports the library code it runs when it runs, not at module level: so that
``parsenet --help`` or a mistyped option answer without importing torch,
and the commands that need an optional extra (serve, the demo's matplotlib) fail alone, with
one line (:class:`Unavailable`).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from collections.abc import Callable
from typing import Any

from parsenet.errors import UsageError

__all__ = ["Unavailable", "EXIT_USER_ERROR", "cmd_train", "cmd_train_head", "cmd_models",
           "cmd_eval", "cmd_predict", "cmd_export", "cmd_summary", "cmd_demo", "cmd_study",
           "cmd_serve", "cmd_convert"]

EXIT_USER_ERROR = 2


class Unavailable(Exception):
    """A command whose implementation is not installed (exit 1, one line)."""


def _print_validation(metrics: dict) -> None:
    if metrics.get("mean_iou") is not None:
        print(f"validation: pixel acc {100 * metrics['pixel_acc']:.2f}, mean IoU "
              f"{100 * metrics['mean_iou']:.2f}")


def _pixel_limit_set(args: argparse.Namespace) -> list[str]:
    """--max-megapixels as the config override it stands for."""
    return [] if args.max_megapixels is None else [f"data.max_megapixels={args.max_megapixels}"]


def cmd_train(args: argparse.Namespace, overrides: tuple[str, ...] = ()) -> int:
    from parsenet.engine.distributed import StoppedBySigterm
    from parsenet.engine.trainer import train
    from parsenet.recipe import load_recipe

    # --set has the last word over the command's own overrides
    config = load_recipe(args.config, [*overrides, *args.set, *_pixel_limit_set(args)])
    try:
        result = train(config, resume=args.resume, overwrite=args.overwrite)
    except StoppedBySigterm as stopped:
        if stopped.rank == 0:
            sets = [word for value in args.set for word in ("--set", value)]
            again = shlex.join(["parsenet", args.command, "--config", args.config, *sets,
                                "--resume"])
            print(f"parsenet: stopped by SIGTERM; saved {stopped.saved}; resume with {again}",
                  file=sys.stderr)
        return int(stopped.code)
    if result.get("rank", 0) != 0:  # under torchrun, one process reports
        return 0
    _print_validation(result.get("metrics") or {})
    print(f"{result.get('iteration')} iterations; run directory {result.get('out_dir')}, "
          f"last checkpoint {result.get('last_checkpoint')}")
    return 0


def cmd_train_head(args: argparse.Namespace) -> int:
    """``train`` with the whole backbone frozen and its output cached: the head alone."""
    return cmd_train(args, ("train.frozen_prefix.upto=all",
                            f"train.frozen_prefix.cache={args.cache_root}"))


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

    split, overrides = args.split, [*args.set, *_pixel_limit_set(args)]
    if args.data_root is not None:  # any folder-layout dataset; the split is a folder name
        overrides += [f"data.root={args.data_root}", "data.format=folder",
                      f"data.val_split={split}", "data.holdout_every=0"]
        split = "val"
    elif split not in ("train", "val"):
        raise UsageError(f"--split {split!r}: give train or val, or --data-root with it")
    result = evaluate_checkpoint(_source(args), config=args.config, overrides=overrides,
                                 split=split, mode=args.mode, device=args.device,
                                 max_images=args.max_images, out=args.out,
                                 progress=not args.no_progress, overwrite=args.overwrite,
                                 backend=args.backend)
    print(f"{result['checkpoint']} (iteration {result['iteration']}) on {result['split']} "
          f"of {result['data_root']}, backend {result['metrics']['backend']}")
    print(format_metrics(result["metrics"], result["classes"]))
    print(f"\nwritten: {result['json']}" if result["json"] else
          "\nno JSON written (a released model has no run folder): --out FILE writes one")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from parsenet.apps.tasks import predict_images

    result = predict_images(_source(args), args.inputs, args.out, backend=args.backend,
                            mode=args.mode, device=args.device,
                            progress=not args.no_progress, skip_errors=args.skip_errors,
                            export_cache=args.export_cache,
                            memory_budget_gb=args.memory_budget,
                            window=args.window, max_megapixels=args.max_megapixels,
                            overwrite=args.overwrite, flip=args.flip, scales=args.scales)
    modes = ", ".join(f"{m} {result['modes'].count(m)}" for m in sorted(set(result["modes"])))
    counts = f" ({modes})" if result["mode"] == "auto" and modes else ""
    print(f"{len(result['outputs'])} image(s), backend {result['backend']}, mode "
          f"{result['mode']}{counts}: labels and overlays in {args.out}")
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
                               int8=args.int8, calibration=args.calibration,
                               overwrite=args.overwrite)
    precision = f", {result['precision']}" if "precision" in result else ""
    calibrated = (f", calibrated on {result['calibration_images']} images"
                  if result.get("calibration_images") else "")
    print(f"exported {result['path']} ({result['format']}{precision}, {result['exporter']} "
          f"exporter{calibrated})")
    for size, diff in result["diffs"].items():
        print(f"  {size}: max abs diff vs eager {diff:.2e}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from parsenet.convert import convert_caffe

    done = convert_caffe(args.caffemodel, args.out, prototxt=args.prototxt,
                         overwrite=args.overwrite)
    if done.kind == "model":
        print(f"{done.path}: parsenet_vgg16, {done.num_classes} classes, from {done.source}; "
              f"load it with --checkpoint {done.path}")
    else:
        print(f"{done.path}: VGG-16 trunk (conv1_1 ... fc7) from {done.source}; train from it "
              f"with --set model.args.weights={done.path}")
    if done.passed_over:
        print(f"  not part of the model (parsenet upsamples on its own): "
              f"{', '.join(done.passed_over)}")
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
    if args.table is None:
        raise UsageError("study: give --table N (to train or, with --report, tabulate a table) "
                         "or --list")
    if not args.paper and args.spec is None:
        raise UsageError(f"study: --table {args.table}: give --paper (the paper's Tables 1-8) "
                         "or --spec FILE (a study spec of your own tables)")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise UsageError(f"study: --budget-minutes must be > 0, got {args.budget_minutes}")
    if args.report:
        report = _optional("parsenet.apps.study", "report", "the study")
        report(args.table, seeds=args.seeds, out_root=args.out_root, paper=args.paper,
               spec_file=args.spec, budget_minutes=args.budget_minutes)
        return 0
    run_study = _optional("parsenet.apps.study", "run_study", "the study")
    kwargs: dict[str, Any] = {"out_root": args.out_root, "dry_run": args.dry_run,
                              "paper": args.paper, "spec_file": args.spec,
                              "overrides": _study_overrides(args),
                              "budget_minutes": args.budget_minutes}
    if args.seeds:
        kwargs["seeds"] = args.seeds
    if args.only:
        kwargs["only"] = args.only
    run_study(args.table, **kwargs)
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
    if args.max_waiting < 0:
        raise UsageError(f"--max-waiting must be >= 0, got {args.max_waiting}")
    settings = ServeSettings(limits=limits, max_waiting=args.max_waiting,
                             memory_budget_gb=args.memory_budget)
    serve(args.model, args.checkpoint, host=args.host, port=args.port, settings=settings,
          backend=args.backend, flip=args.flip)
    return 0
