"""The study's runner: a table's jobs, training each with :func:`parsenet.engine.trainer.train`
(skipping finished runs, resuming interrupted ones), and the feature norms and loss curve of
every finished run. A table that trains heads on a frozen, cached trunk says so in config
overrides (``train.frozen_prefix``, ``data.resize``, ``train.loss_stride``). The tables are data
(:mod:`parsenet.apps.study.spec`); what it prints comes from
:mod:`parsenet.apps.study.reporting`."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from tqdm.auto import tqdm

from parsenet.apps.study.budget import plan_iterations
from parsenet.apps.study.reporting import git_commit, report
from parsenet.apps.study.spec import (
    NORM_IMAGES,
    Table,
    Variant,
    command_for,
    config_file,
    is_finished,
    resolve_table,
    run_dir,
    run_overrides,
    with_overrides,
)
from parsenet.config import ConfigError
from parsenet.engine import trainer  # trainer.train looked up per call: tests replace it
from parsenet.engine.checkpoint import load_model
from parsenet.engine.rundir import clear_run
from parsenet.errors import TrainingDivergedError
from parsenet.recipe import dataset_from_config, load_recipe
from parsenet.viz import feature_norms, plot_curves

# The layers of the paper's Fig. 2 on a VGG-16; other backbones: the model's own taps.
VGG_NORM_TAPS = ("conv3", "conv4", "conv5", "fc7")


def _jobs(table: Table, seeds: list[int] | None, only: list[str] | None
          ) -> list[tuple[Variant, int]]:
    names = {v.name for v in table.variants}
    unknown = sorted(set(only or []) - names)
    if unknown:
        raise ConfigError(f"table {table.key}: unknown variant(s) {unknown}; known: "
                          f"{[v.name for v in table.variants]}")
    jobs = [(v, s) for v in table.variants if not only or v.name in only
            for s in (seeds if seeds is not None else v.seeds)]
    # Priority first (the key comparisons), then seed, so both sides of a comparison finish
    # before a second seed of either starts.
    order = {v.name: i for i, v in enumerate(table.variants)}
    return sorted(jobs, key=lambda j: (j[0].priority, j[1], order[j[0].name]))


def _train_one(variant: Variant, seed: int, path: Path) -> None:
    config = load_recipe(config_file(variant.config), run_overrides(variant, seed, path))
    resume = (path / "checkpoints" / "last.pt").is_file()
    path.mkdir(parents=True, exist_ok=True)
    attempts_file = path / "attempts.json"
    attempts = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
    start, outcome = time.perf_counter(), "interrupted"
    try:
        if not resume:  # a run killed before its first checkpoint starts again afresh
            clear_run(path)
        trainer.train(config, resume=resume)  # looked up per call: tests replace it
        outcome = "finished"
    except TrainingDivergedError as e:
        outcome = "diverged"
        (path / "diverged.json").write_text(json.dumps({"error": str(e)}, indent=2) + "\n")
    finally:
        attempts.append({"resumed": resume, "outcome": outcome, "commit": git_commit(),
                         "seconds": time.perf_counter() - start})
        attempts_file.write_text(json.dumps(attempts, indent=2) + "\n")
    if outcome == "finished":
        measure_feature_norms(path)
        plot_curves(path / "log.jsonl", path / "curve.png", title=f"{path.parent.name}/"
                    f"{path.name}")


def measure_feature_norms(path: Path, images: int = NORM_IMAGES) -> dict[str, Any]:
    """Mean per-pixel L2 norm of conv3, conv4, conv5, fc7 (on a VGG-16; otherwise the
    model's taps) and pool6 of the trained model, before and after its own L2Norm
    (:func:`parsenet.viz.feature_norms`), and the learned L2Norm scales; written to
    ``feature_norms.json``. Images: the first validation images, at the run's evaluation
    scale (and its data.resize)."""
    loaded = load_model(path / "checkpoints" / "last.pt")
    model, config = loaded.model, loaded.config
    dataset = dataset_from_config(config.data, "val", preprocessing=loaded.preprocessing)
    scale = config.eval.scales[0] if config.eval.mode == "multiscale" else 1.0
    count = min(images, len(dataset))
    batch = [dataset[i][0].unsqueeze(0) for i in range(count)]
    if scale != 1.0:
        batch = [F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
                 for x in batch]
    taps = (VGG_NORM_TAPS if "fc7" in model.backbone.named_stages()
            else tuple(model.features))
    norms = feature_norms(model, batch, taps=taps)
    scales = {name: float(norm.weight.detach().abs().mean())
              for name, norm in model.branch_norms().items() if norm.weight.requires_grad}
    result = {"images": count, "input_scale": scale,
              "feature_norm": {k: before for k, (before, _) in norms.items()},
              "after_l2norm": {k: after for k, (_, after) in norms.items()},
              "l2norm_scale_mean": scales}
    (path / "feature_norms.json").write_text(json.dumps(result, indent=2) + "\n")
    return result



def run_study(table: str | int, *, seeds: list[int] | None = None,
              out_root: str | Path = "runs/study", only: list[str] | None = None,
              dry_run: bool = False, spec_file: str | Path | None = None, paper: bool = False,
              overrides: list[str] | None = None, budget_minutes: float | None = None
              ) -> list[dict[str, Any]]:
    """Train the variants of ``table`` that have not finished, print the table, write
    ``<out_root>/<table>/results.json``; returns the rows. ``only`` restricts to some
    variant names, ``seeds`` replaces every variant's seeds for training (the table shows
    the variant's own seeds and these), ``dry_run`` lists the runs. ``spec_file``: the
    study spec that defines ``table``; ``paper``: the paper's Table ``table``
    (configs/paper). ``overrides`` (``key=value``) apply to every run. ``budget_minutes``:
    the runs still to train share this much time; each one's iterations are set from timed
    warm-up iterations (:mod:`parsenet.apps.study.budget`)."""
    spec = with_overrides(resolve_table(table, spec_file, paper), list(overrides or []),
                           budget_minutes)
    jobs = _jobs(spec, seeds, only)
    if dry_run:
        for v, s in jobs:
            path = run_dir(out_root, spec, v, s)
            state = "done" if is_finished(path) else "to run"
            budgeted = " (train.iterations: set from the warm-up)" if budget_minutes else ""
            print(f"[{state}] {v.name} seed {s}: {command_for(v, s, path)}{budgeted}")
        return [{"variant": v.name, "seed": s, "dir": str(run_dir(out_root, spec, v, s)),
                 "finished": is_finished(run_dir(out_root, spec, v, s))} for v, s in jobs]
    pending = [j for j in jobs if not is_finished(run_dir(out_root, spec, *j))]
    share = budget_minutes * 60.0 / max(len(pending), 1) if budget_minutes is not None else 0
    for v, s in tqdm(jobs, desc=f"study {spec.key}", unit="run"):
        path = run_dir(out_root, spec, v, s)
        if is_finished(path):
            if ((path / "metrics.json").is_file()
                    and not (path / "feature_norms.json").is_file()):
                measure_feature_norms(path)  # stopped between training and measuring
            continue
        if budget_minutes is not None:
            plan = plan_iterations(config_file(v.config), run_overrides(v, s, path), path, share)
            tqdm.write(f"budget {share / 60:.2f} min: {plan['s_per_iteration']:.3g} s per "
                       f"iteration over {plan['warmup_iterations']} warm-up iterations -> "
                       f"{plan['iterations']} iterations")
            v = replace(v, overrides=(*v.overrides, f"train.iterations={plan['iterations']}"))
        tqdm.write(f"training {v.name} seed {s} -> {path}")
        _train_one(v, s, path)
    # The table (and so docs/RESULTS.md's section) shows every seed run so far, not only
    # the ones this call was asked for.
    every_seed = replace(spec, variants=tuple(
        replace(v, seeds=tuple(sorted({*v.seeds, *(seeds or ())}))) for v in spec.variants))
    return report(every_seed, out_root=out_root, spec_file=spec_file)
