"""Claim 2's runs: pool6's gain per dataset x input scale, on a frozen Lite0 trunk.

    python -m lab.study.context_study run       # every point, resumable
    python -m lab.study.context_study report    # results.json + the gain plot

Rows, one recipe for all (:data:`CONFIGS`): ``baseline`` = head tap -> L2Norm -> 1x1
classifier; ``parsenet`` = + pool6 of the head tap, L2Norm, late fusion (the released lite
models' head); ``nonorm`` = ParseNet without L2Norm (run where time allows). Each run is
``parsenet.engine.trainer.train`` with the inputs of :func:`input_overrides`: the whole
trunk frozen and its output cached once per image (``train.frozen_prefix``), whole images
warped to the point's resolution without augmentation (``data.resize``), the loss on every
4th pixel (``train.loss_stride``). The committed runs were made by the cached engine of
commit e87bbdf (``parsenet.apps.study.cached``), which evaluated on cached validation
features. Runs: ``lab/runs/study/claim-context-size/
<dataset>_x<scale>_<row>/seed<k>`` (the study's layout, so ``configs/cpu/study.yaml``'s
table ``claim-context-size`` reads them). A finished run (``metrics.json``, or the
``results.json`` it is slimmed to) is skipped, an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lab.study.context_size import DATASETS, OUT_ROOT
from parsenet.apps.study import is_finished, read_run
from parsenet.config import load_config
from parsenet.errors import TrainingDivergedError

__all__ = ["POINTS", "ROWS", "CONFIGS", "SEEDS", "run_path", "run_point", "collect",
           "plot_gain", "input_overrides"]

# (dataset, scale) -> input resolution (H, W), in the order they run (cost: the native
# sizes first, then the scales of the controlled comparison). Stanford's images (mostly
# 320 x 240, some 320 x 213 or portrait) are all warped to 240 x 320.
POINTS: dict[tuple[str, float], tuple[int, int]] = {
    ("siftflow", 1.0): (256, 256),
    ("stanford", 1.0): (240, 320),
    ("camvid", 1.0): (360, 480),
    ("camvid", 0.5): (180, 240),
    ("camvid", 1.5): (540, 720),  # the one point past the ERF (side/ERF 1.29)
}
# SiftFlow x1.5 (384 x 384; its cache ~30 min) is left out for time. Add it here to run it:
# every piece takes any scale.
ROWS: dict[str, list[str]] = {
    "baseline": ["model.args.context=false", "model.args.normalize=true"],
    "parsenet": ["model.args.context=true", "model.args.normalize=true"],
    "nonorm": ["model.args.context=true", "model.args.normalize=false"],
}
ROW_LABELS = {"baseline": "head tap, L2Norm (baseline)",
              "parsenet": "head tap + pool6, L2Norm, late fusion (ParseNet)",
              "nonorm": "head tap + pool6, late fusion, no L2Norm"}
SEEDS = (0, 1, 2)
# One recipe for every row and point: configs/cpu/context_<dataset>.yaml (the lite
# configs' optimiser; 300 iterations of batch 8; fp32). The rows change model.args only.
CONFIGS = {d: f"configs/cpu/context_{d}.yaml" for d in DATASETS}
# The training loss on every 4th pixel of each row and column (train.loss_stride):
# measured, the full-size loss made an iteration 3.5-5 s on CamVid (contended CPU).
LOSS_STRIDE = 4
OUTPUT_STRIDE = 16  # the recipe's; cached crops are aligned to it
CACHE_ROOT = "runs/cache/prefix"


def _name(dataset: str, scale: float, row: str) -> str:
    return f"{dataset}_x{scale:g}_{row}"


def run_path(dataset: str, scale: float, row: str, seed: int) -> Path:
    return OUT_ROOT / _name(dataset, scale, row) / f"seed{seed}"


def input_overrides(dataset: str, scale: float, cache_root: str = CACHE_ROOT) -> list[str]:
    """Every row's inputs at a point: whole images warped to its resolution, one view each
    (a square crop that holds the image, padding left out of the loss and of pool6), the
    trunk frozen and cached, the loss on every LOSS_STRIDE-th pixel."""
    h, w = POINTS[(dataset, scale)]
    crop = -(-max(h, w) // OUTPUT_STRIDE) * OUTPUT_STRIDE
    return [f"data.resize=[{h}, {w}]", f"data.crop_size={crop}", "data.scale_range=[1.0, 1.0]",
            "data.flip=false", "data.color_jitter=0.0", "train.frozen_prefix.upto=all",
            f"train.frozen_prefix.cache={cache_root}", f"train.loss_stride={LOSS_STRIDE}"]


def overrides(dataset: str, scale: float, row: str, seed: int) -> list[str]:
    """The config overrides of one run (on ``CONFIGS[dataset]``)."""
    return [*input_overrides(dataset, scale), *ROWS[row], f"train.seed={seed}",
            f"train.out_dir={run_path(dataset, scale, row, seed)}", "train.progress=false"]


def run_point(dataset: str, scale: float, row: str, seed: int) -> str:
    """Train one run unless finished; returns "finished", "diverged" or "skipped"."""
    from parsenet.engine.trainer import train

    path = run_path(dataset, scale, row, seed)
    if is_finished(path):
        return "skipped"
    config = load_config(CONFIGS[dataset], overrides(dataset, scale, row, seed))
    resume = (path / "checkpoints" / "last.pt").is_file()
    try:
        train(config, resume=resume)
    except TrainingDivergedError as e:
        path.mkdir(parents=True, exist_ok=True)
        (path / "diverged.json").write_text(json.dumps({"error": str(e)}, indent=2) + "\n")
        return "diverged"
    return "finished"


# The paper's claim per point, where it makes one (Sec. 4.2): pool6 "is essentially a noop"
# on SiftFlow's 256 x 256; it "helps" on PASCAL-Context (~500 x 375, CamVid's size and up).
PAPER_CLAIMS: dict[tuple[str, float], tuple[str, str]] = {
    ("siftflow", 1.0): ("SiftFlow 256 x 256: pool6 is about a no-op (Sec. 4.2)", "equal"),
    ("camvid", 1.0): ("CamVid 480 x 360 (PASCAL-Context's size): pool6 helps", ""),
}

# The paper's rows our rows stand for, where it has them (paper_figures.yaml ids): SiftFlow
# Table 3 (FCN-32s, no norm), PASCAL-Context Table 4 with norm for the CamVid claim.
PAPER_ROWS: dict[tuple[str, float], tuple[str, dict[str, list[str]]]] = {
    ("siftflow", 1.0): ("3", {"baseline": ["table3_siftflow_fc7"],
                              "parsenet": ["table3_siftflow_pool6_fc7"]}),
    ("camvid", 1.0): ("4", {"baseline": ["table4_context_fc7_norm"],
                            "parsenet": ["table4_context_pool6_fc7_norm"]}),
}


def table_key(dataset: str, scale: float) -> str:
    return f"claim-context-size-{dataset}-x{scale:g}"


def spec_tables(seeds: Sequence[int] = SEEDS) -> dict[str, dict[str, Any]]:
    """The ``configs/cpu/study.yaml`` tables of claim 2, one per point (a table's overrides
    give its inputs, :func:`input_overrides`), all in protocol ``claim-context-size``."""
    tables = {}
    for (dataset, scale), (h, w) in POINTS.items():
        variants = [{"name": _name(dataset, scale, row),
                     "label": f"{dataset} x{scale:g}, {ROW_LABELS[row]}",
                     "config": CONFIGS[dataset], "overrides": list(ROWS[row]),
                     "seeds": list(seeds)} for row in ROWS]
        paper_key, paper_rows = PAPER_ROWS.get((dataset, scale), ("", {}))
        for v, row in zip(variants, ROWS, strict=True):
            if row in paper_rows:
                v["paper"] = paper_rows[row]
        claims = []
        if (dataset, scale) in PAPER_CLAIMS:
            text, kind = PAPER_CLAIMS[(dataset, scale)]
            claims.append([_name(dataset, scale, "parsenet"), _name(dataset, scale, "baseline"),
                           text] + ([kind] if kind else []))
        tables[table_key(dataset, scale)] = {
            "title": f"Claim 2: pool6 on {dataset} x{scale:g} ({w} x {h}), frozen "
                     "ImageNet EfficientNet-Lite0",
            "paper_tables": "Sec. 4.2 (no table: SiftFlow small gain, PASCAL-Context +1.5)",
            "protocol": OUT_ROOT.name, "overrides": input_overrides(dataset, scale),
            **({"paper_keys": [paper_key]} if paper_key else {}),
            "note": "See the claim 2 section (python -m lab.study.context_study). The "
                    "committed runs: the cached engine of commit e87bbdf.",
            "variants": variants, "claims": claims}
    return tables


def _mean_spread(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _miou(dataset: str, scale: float, row: str) -> dict[int, float]:
    out = {}
    for seed in SEEDS:
        record = read_run(run_path(dataset, scale, row, seed))
        if "metrics" in record:
            out[seed] = 100.0 * record["metrics"]["mean_iou"]
    return out


def _erf_reference() -> dict[str, Any]:
    """The ERF used on the x axis: measured on CamVid x2 (960 x 720), the largest canvas,
    where the 95% square stays inside the image."""
    file = OUT_ROOT / "erf" / "camvid_x2_os16.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def collect() -> dict[str, Any]:
    """Per point: mean IU of each row (mean, sample std over seeds, per seed), pool6's gain
    per seed (parsenet - baseline, same seed) and its mean/std, image side / ERF."""
    erf = _erf_reference()
    points = []
    for (dataset, scale), (h, w) in POINTS.items():
        rows = {row: _miou(dataset, scale, row) for row in ROWS}
        seeds = sorted(set(rows["parsenet"]) & set(rows["baseline"]))
        gains = [rows["parsenet"][s] - rows["baseline"][s] for s in seeds]
        erf_file = OUT_ROOT / "erf" / f"{dataset}_x{scale:g}_os16.json"
        own_erf = json.loads(erf_file.read_text()) if erf_file.is_file() else None
        side = math.sqrt(h * w)
        point: dict[str, Any] = {
            "dataset": dataset, "scale": scale, "resolution": [h, w], "image_side": side,
            "side_over_erf95": side / erf["erf_side"] if erf else None,
            "side_over_erf50": side / erf["erf_side50"] if erf else None,
            "own_erf": own_erf and {k: own_erf[k] for k in
                                    ("erf_side", "erf_side50", "clipped", "images")},
            "gain_seeds": dict(zip(seeds, gains, strict=True)),
        }
        point["gain_mean"], point["gain_std"] = _mean_spread(gains)
        for row, values in rows.items():
            mean, std = _mean_spread(list(values.values()))
            point[row] = {"mean_iou": mean, "std": std, "seeds": values}
        points.append(point)
    return {"metric": "val mean IU (%), present-class convention", "erf_reference": erf,
            "points": points}


def plot_gain(summary: dict[str, Any], out_png: str | Path) -> Path:
    """pool6's mean-IU gain (mean +- std over seeds, seeds as dots) against image side /
    ERF (95% square), one point per dataset x scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from parsenet.viz import save_figure

    colours = {"siftflow": "#4c72b0", "camvid": "#c44e52", "stanford": "#55a868"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in summary["points"]:
        if p["gain_mean"] is None or p["side_over_erf95"] is None:
            continue
        x, c = p["side_over_erf95"], colours[p["dataset"]]
        ax.errorbar([x], [p["gain_mean"]], yerr=[p["gain_std"] or 0.0], fmt="o", color=c,
                    capsize=4, ms=7)
        ax.scatter([x] * len(p["gain_seeds"]), list(p["gain_seeds"].values()), color=c,
                   s=10, alpha=0.5)
        ax.annotate(f"{p['dataset']} x{p['scale']:g}\n{p['resolution'][1]}x"
                    f"{p['resolution'][0]}", (x, p["gain_mean"]), textcoords="offset points",
                    xytext=(8, -4), fontsize=7)
    ax.axhline(0.0, color="grey", lw=0.8)
    erf = summary["erf_reference"]
    ax.set_xlabel(f"image side sqrt(H W) / ERF (95% square, {erf.get('erf_side')} px, "
                  "Lite0 head tap)")
    ax.set_ylabel("pool6 gain in val mean IU (points)")
    ax.set_title("Claim 2: does global context help more as images grow past the ERF?\n"
                 "frozen ImageNet EfficientNet-Lite0, OS16; ParseNet head - baseline head",
                 fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_png)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.study.context_study")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every (point, row, seed), resumable")
    run.add_argument("--rows", nargs="+", default=["baseline", "parsenet"], choices=ROWS)
    run.add_argument("--points", nargs="+", default=None,
                     help="dataset:scale, e.g. camvid:1.5 (default: all, in order)")
    run.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    sub.add_parser("report", help="write results.json and the gain plot")
    sub.add_parser("spec", help="print the study.yaml tables of claim 2")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "spec":
        import yaml

        print(yaml.safe_dump(spec_tables(), sort_keys=False, width=100))
        return
    if args.command == "report":
        from lab.study.context_report import SECTION, render, write_section

        summary = collect()
        (OUT_ROOT / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(plot_gain(summary, "docs/images/claim2_context_gain.png"))
        erf = [json.loads(f.read_text()) for f in sorted((OUT_ROOT / "erf").glob("*.json"))]
        fig2_file = Path("docs/images/fig2_pretrained_vgg.json")
        fig2 = json.loads(fig2_file.read_text()) if fig2_file.is_file() else None
        print(write_section(render(summary, erf, SECTION, fig2)))
        return
    points = list(POINTS) if args.points is None else [
        (p.split(":")[0], float(p.split(":")[1])) for p in args.points]
    for dataset, scale in points:
        for seed in args.seeds:
            for row in args.rows:
                outcome = run_point(dataset, scale, row, seed)
                print(f"{_name(dataset, scale, row)} seed{seed}: {outcome}", flush=True)


if __name__ == "__main__":
    main()
