"""``parsenet demo``: the paper's central claim, measured in a few minutes on a CPU.

On the generated context dataset (:mod:`parsenet.data.synthetic`: objects whose look is the
same for two classes, the scene deciding which) the demo trains two models with one
config, one budget, one seed and one augmentation:

    baseline   DeepLab-LargeFOV (width-reduced, BatchNorm): the config with
               ``model.args.context = false`` and ``model.args.normalize = false``
    ParseNet   the same backbone + pool6 (global context) + L2Norm with learned scales,
               late fusion: the config as written

It then evaluates both on the held-out generated split and prints what it measured: pixel
acc., mean acc., mean IU, f.w. IU, the IU of the ambiguous classes, the mean IU of the
locally decidable classes, and the effective receptive field of each model. Into the output
folder (``runs/demo``) go the two training runs, ``overlays/*.png`` (input | truth |
baseline | ParseNet), ``curves.png``, ``feature_norms.png`` (the paper's Fig. 2 analogue)
and ``results.json``. Nothing printed is a stored number.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parsenet.apps.demo_runs import DEMO_RUNS, RUN_TITLES
from parsenet.apps.tables import format_text_table
from parsenet.config import Config, load_config
from parsenet.data.synthetic import (
    AMBIGUOUS_PAIRS,
    LOCAL_CLASSES,
    PALETTE,
    SyntheticParams,
    ensure_dataset,
    min_cue_distance,
)
from parsenet.engine.checkpoint import load_model
from parsenet.engine.precision import cpu_kind
from parsenet.engine.trainer import train
from parsenet.erf import effective_receptive_field
from parsenet.labels import class_ids
from parsenet.recipe import dataset_from_config
from parsenet.viz import feature_norms, plot_curves, plot_feature_norms, side_by_side, with_legend

__all__ = ["run_demo", "demo_configs", "erf_radius", "format_comparison",
           "BASELINE_CHANGES"]

# The only difference between the two models: no context branch, no L2Norm.
BASELINE_CHANGES = {"context": False, "normalize": False}
AMBIGUOUS_CLASSES = tuple(c for pair in AMBIGUOUS_PAIRS.values() for c in pair)


def demo_configs(config: Config, out_dir: str | os.PathLike) -> dict[str, Config]:
    """The baseline's and ParseNet's training configs, each writing into its own folder."""
    configs = {}
    for name in DEMO_RUNS:
        c = copy.deepcopy(config)
        if name == "baseline":
            c.model.args = {**c.model.args, **BASELINE_CHANGES}
        c.name = f"{config.name}-{name}"
        c.train.out_dir = str(Path(out_dir) / name)
        configs[name] = c
    return configs


def erf_radius(model: torch.nn.Module, images: torch.Tensor, fraction: float = 0.9) -> float:
    """The demo's effective receptive field: the radius (px) of the disc around the centre
    pixel that holds ``fraction`` of the gradient magnitude of that pixel's winning score
    with respect to the input, averaged over ``images`` (N x 3 x H x W, normalised). The
    theoretical field of LargeFOV is 419 px; the effective one, where the output really
    looks, is much smaller."""
    was_training = model.training
    model.eval()
    try:
        # The logits are at input resolution: the centre cell is the centre pixel.
        return effective_receptive_field(model, images, stride=1, offset=0.0,
                                         fraction=fraction, shape="disc", channels="argmax",
                                         average="extents").side
    finally:
        model.train(was_training)


def _row_values(metrics: dict[str, Any], classes: list[str]) -> dict[str, float | None]:
    # Classes absent from the split have no IU (None in the trainer's JSON-ready metrics).
    iou = {c: float("nan") if v is None else float(v)
           for c, v in zip(classes, metrics["per_class_iou"], strict=True)}
    local = [iou[c] for c in LOCAL_CLASSES]
    values = {"pixel acc": metrics["pixel_acc"], "mean acc": metrics["mean_acc"],
              "mean IU": metrics["mean_iou"], "f.w. IU": metrics["fw_iou"]}
    values.update({f"IU {c} (ambiguous)": iou[c] for c in AMBIGUOUS_CLASSES})
    values["mean IU, local classes"] = float(np.nanmean(local))
    values["min IU, local classes"] = float(np.nanmin(local))
    # None, not NaN, for a class absent from the split: results.json stays valid JSON.
    return {k: None if np.isnan(v) else 100.0 * float(v) for k, v in values.items()}


def format_comparison(rows: dict[str, dict[str, float | None]],
                      extra: dict[str, dict[str, str]]) -> str:
    """Side-by-side table: one line per figure, one column per model."""
    cells = [[n, *('-' if rows[m][n] is None else format(rows[m][n], '.1f') for m in rows)]
             for n in next(iter(rows.values()))]
    cells += [[n, *(extra[m][n] for m in rows)] for n in next(iter(extra.values()))]
    return "\n".join(format_text_table(["", *(RUN_TITLES[m] for m in rows)], cells,
                                        [None, *(9 for _ in rows)], rule="line"))


def _ambiguous_mean(row: dict[str, float | None]) -> float:
    return float(np.nanmean([np.nan if row[f"IU {c} (ambiguous)"] is None
                             else row[f"IU {c} (ambiguous)"] for c in AMBIGUOUS_CLASSES]))


def _verdict(rows: dict[str, dict[str, float | None]], gain: float, erf: dict[str, float],
             cue_distance: int) -> str:
    """What the measured figures say about the paper's claim (nothing here is stored)."""
    base, parse = rows["baseline"], rows["parsenet"]
    local = base["mean IU, local classes"] or 0.0
    checks = [
        f"ParseNet - baseline mean IU: {gain:+.1f} points (demo goal >= +10: "
        f"{'met' if gain >= 10 else 'NOT met'})",
        f"baseline mean IU on the locally decidable classes: {local:.1f} (goal >= 90, so its "
        f"losses are not under-training: {'met' if local >= 90 else 'NOT met'})",
        f"mean IU on the ambiguous classes: baseline {_ambiguous_mean(base):.1f}, ParseNet "
        f"{_ambiguous_mean(parse):.1f}",
    ]
    if gain >= 10 and local >= 90:
        checks.append(
            f"Every scene cue is at least {cue_distance} px from a look-alike object's "
            f"centre, in the sparse outer part of the baseline's effective receptive field "
            f"(90% of its input gradient lies within {erf['baseline']:.0f} px): it segments "
            f"what it sees, but cannot tell which of a pair it is looking at. ParseNet's "
            f"pool6 averages the whole image, so it reads the scene.")
    return "\n".join(checks)


def _colour(mask: np.ndarray) -> np.ndarray:
    return PALETTE[np.clip(mask, 0, len(PALETTE) - 1)]


def _save_overlays(models: dict[str, torch.nn.Module], dataset: Any, raw: Any,
                   classes: list[str], out: Path, count: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, len(dataset))):
        image, mask = dataset[i]
        raw_image = raw[i][0].permute(1, 2, 0).numpy()
        panels = [("input", raw_image), ("truth", _colour(np.asarray(mask)))]
        with torch.no_grad():
            for name in DEMO_RUNS:
                pred = class_ids(models[name](image[None]))[0].numpy()
                panels.append((RUN_TITLES[name], _colour(pred)))
        legend = [(name, tuple(int(v) for v in PALETTE[k]), None)
                  for k, name in enumerate(classes)]
        path = out / f"{dataset.ids[i]}.png"
        with_legend(side_by_side(panels), legend).save(path)
        paths.append(path)
    return paths


def _train_pair(cfg: Config, out: Path, resume: bool, say: Callable[..., None]
                ) -> dict[str, dict[str, Any]]:
    """Stage 1: train the baseline and ParseNet (or resume / re-evaluate their runs)."""
    results: dict[str, dict[str, Any]] = {}
    for name, c in demo_configs(cfg, out).items():
        say(f"\n== training {RUN_TITLES[name]} ({c.train.iterations} iterations x batch "
            f"{c.train.batch_size}, seed {c.train.seed}) -> {c.train.out_dir}")
        last = Path(c.train.out_dir) / "checkpoints" / "last.pt"
        resumed = resume and last.is_file()
        # The demo owns its output folder: without resume it trains afresh each time.
        results[name] = train(c, resume=resumed, overwrite=not resumed)
    return results


def _measure(results: dict[str, dict[str, Any]], models: dict[str, torch.nn.Module],
             test_set: Any, classes: list[str]
             ) -> tuple[dict[str, dict[str, float | None]], dict[str, float],
                        dict[str, dict[str, str]]]:
    """Stage 2: the table's rows, each model's effective receptive field, the extra lines."""
    rows = {name: _row_values(results[name]["metrics"], classes) for name in DEMO_RUNS}
    probe = torch.stack([test_set[i][0] for i in range(min(8, len(test_set)))])
    erf = {name: erf_radius(models[name], probe) for name in DEMO_RUNS}
    extra = {name: {"eff. receptive field (px)": f"{erf[name]:.0f}",
                    "training time (s)": f"{results[name]['wall_time_s']:.0f}",
                    "images / s": f"{results[name]['images_per_s'] or 0:.1f}"}
             for name in DEMO_RUNS}
    return rows, erf, extra


def _draw(results: dict[str, dict[str, Any]], models: dict[str, torch.nn.Module],
          test_set: Any, raw_test: Any, classes: list[str], out: Path, overlays: int
          ) -> dict[str, Any]:
    """Stage 3: overlays, training curves and ParseNet's feature norms (Fig. 2 analogue)."""
    overlay_paths = _save_overlays(models, test_set, raw_test, classes, out / "overlays",
                                   overlays)
    logs = {RUN_TITLES[n]: Path(results[n]["out_dir"]) / "log.jsonl" for n in DEMO_RUNS}
    curves = plot_curves(logs, out / "curves.png", title="demo training curves")
    norms = feature_norms(models["parsenet"],
                          [test_set[i][0] for i in range(min(8, len(test_set)))],
                          taps=("conv4", "conv5", "fc7"))
    norms_png = plot_feature_norms(norms, out / "feature_norms.png",
                                   title="ParseNet feature norms (Fig. 2 analogue)")
    return {"overlays": overlay_paths, "curves": curves, "norms": norms,
            "norms_png": norms_png}


def _header(cfg: Config, n_test: int, amp: str) -> str:
    n_train = cfg.data.synthetic.get("splits", {}).get(cfg.data.train_split, "?")
    return (f"ParseNet demo: {n_test} held-out generated images "
            f"({n_train} for training), seed {cfg.train.seed}; both models: "
            f"{cfg.train.iterations} iterations x batch {cfg.train.batch_size}, "
            f"width {cfg.model.args.get('width', 1.0)} LargeFOV"
            f"{' + BatchNorm' if cfg.model.args.get('batch_norm') else ''}\n"
            f"precision {amp} (train.amp={cfg.train.amp}); CPU kind "
            f"{cpu_kind()}, {torch.get_num_threads()} threads")


def run_demo(config: str | os.PathLike = "configs/demo.yaml", *, seed: int | None = None,
             out_dir: str | os.PathLike | None = None, overrides: list[str] | None = None,
             overlays: int = 6, resume: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Train the baseline and ParseNet on the generated data, evaluate, draw, report.

    ``seed`` replaces ``train.seed`` (initialisation, batch order, dropout); ``out_dir``
    replaces ``train.out_dir``; ``overrides`` are dotted ``key=value`` strings as for
    ``parsenet train``. ``resume`` continues each model's run from its last checkpoint
    when there is one (a finished run is only re-evaluated). Returns the measured table
    and the output paths.
    """
    start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    cfg = load_config(config, overrides)
    if seed is not None:
        cfg.train.seed = int(seed)
    out = Path(out_dir or cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    ensure_dataset(cfg.data.root, progress=cfg.train.progress, **cfg.data.synthetic)
    data_s = time.perf_counter() - t
    results = _train_pair(cfg, out, resume, say)

    loaded = {name: load_model(results[name]["last_checkpoint"]) for name in DEMO_RUNS}
    models = {name: loaded[name].model for name in DEMO_RUNS}
    test_set = dataset_from_config(cfg.data, "val",
                                   preprocessing=loaded["parsenet"].preprocessing)
    raw_test = dataset_from_config(cfg.data, "val")
    classes = list(results["parsenet"]["metrics"].get("classes") or test_set.classes)
    rows, erf, extra = _measure(results, models, test_set, classes)
    drawn = _draw(results, models, test_set, raw_test, classes, out, overlays)

    gain = rows["parsenet"]["mean IU"] - rows["baseline"]["mean IU"]
    header = _header(cfg, len(test_set), results["parsenet"]["amp"])
    table = format_comparison(rows, extra)
    clearance = SyntheticParams.from_kwargs(cfg.data.synthetic).cue_clearance
    summary = _verdict(rows, gain, erf, min_cue_distance(clearance))
    norm_lines = "feature norms (mean per pixel, before -> after L2Norm): " + ", ".join(
        f"{k} {b:.3g}" + (f" -> {a:.3g}" if a is not None else "") for k, (b, a) in
        drawn["norms"].items())
    total = time.perf_counter() - start
    say("\n" + header + "\n\n" + table + "\n\n" + summary + "\n" + norm_lines)
    say(f"\noutputs in {out}/: overlays/ ({len(drawn['overlays'])} PNG), curves.png, "
        f"feature_norms.png, results.json; data generation {data_s:.0f} s, "
        f"total {total:.0f} s")

    report = {"seed": cfg.train.seed, "table": rows, "extra": extra,
              "mean_iou_gain": gain, "effective_receptive_field_px": erf,
              "feature_norms": {k: list(v) for k, v in drawn["norms"].items()},
              "overlays": [str(p) for p in drawn["overlays"]], "curves": str(drawn["curves"]),
              "feature_norms_png": str(drawn["norms_png"]), "data_time_s": data_s,
              "total_time_s": total, "runs": {n: results[n]["out_dir"] for n in DEMO_RUNS},
              "printed": "\n".join([header, "", table, "", summary, norm_lines])}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
