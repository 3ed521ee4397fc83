"""Claim 2 (Sec. 4.2): global context helps more as images grow relative to the receptive
field. The pieces that are not training: which datasets and scales, their images, the frozen
EfficientNet-Lite0 trunk, and its measured effective receptive field (:mod:`parsenet.erf`).

    python -m lab.study.context_size erf --dataset camvid --scale 1.0

writes ``lab/runs/study/claim-context-size/erf/<dataset>_x<scale>.json`` (skipped if present).
A dataset at scale s is its images resized by s (bilinear, antialiased); labels are never
resized: predictions are scored at the native label resolution, so the metric is the same
at every scale and only the image side relative to the fixed ERF changes.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from lab.study.spec import EVIDENCE
from parsenet.backbones.efficientnet_lite import LITE_PREPROCESSING, EfficientNetLite
from parsenet.backbones.efficientnet_lite_weights import load_lite_weights
from parsenet.config import load_config
from parsenet.data.dataset import SegmentationDataset
from parsenet.erf import (
    effective_receptive_field,
    mass_square_side,
    theoretical_receptive_field,
)
from parsenet.recipe import dataset_from_config

__all__ = ["DATASETS", "OUT_ROOT", "lite_trunk", "scaled", "val_dataset", "erf_images",
           "measure_lite_erf"]

# The released lite models' configs: same roots and splits (SiftFlow: every 10th id held out).
DATASETS = {"siftflow": "configs/cpu/lite_siftflow.yaml",
            "camvid": "configs/cpu/lite_camvid.yaml",
            "stanford": "configs/cpu/lite_stanford.yaml"}
OUT_ROOT = EVIDENCE / "claim-context-size"
MAPS = Path("runs/erf_maps")  # the mean |gradient| maps (MBs each: not committed)


def lite_trunk(output_stride: int = 16) -> EfficientNetLite:
    """The ImageNet Lite0 trunk giving the head tap, frozen: eval mode (BatchNorm on its
    running statistics) and no parameter requires grad."""
    trunk = EfficientNetLite(("head",), output_stride)
    load_lite_weights(trunk, "imagenet")
    trunk.eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk


def scaled(image: Tensor, scale: float) -> Tensor:
    """uint8 ... x 3 x H x W resized by ``scale`` (sides rounded), antialiased."""
    if scale == 1.0:
        return image
    h, w = image.shape[-2:]
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    return TF.resize(image, size, antialias=True)


def val_dataset(dataset: str, split: str = "val") -> SegmentationDataset:
    """The raw uint8 (image, mask) pairs of ``dataset``'s split, as its lite config has it."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    return dataset_from_config(load_config(DATASETS[dataset]).data, split)


def erf_images(dataset: str, count: int, scale: float = 1.0) -> list[Tensor]:
    """The first ``count`` val images of the dataset's most common size (the ERF is averaged
    over one size), scaled and normalised for Lite0."""
    data = val_dataset(dataset)
    images = [data.load(i)[0] for i in range(len(data))]
    modal = Counter(tuple(im.shape[-2:]) for im in images).most_common(1)[0][0]
    chosen = [im for im in images if tuple(im.shape[-2:]) == modal][:count]
    return [LITE_PREPROCESSING(scaled(im.as_subclass(Tensor), scale)) for im in chosen]


def measure_lite_erf(dataset: str, scale: float = 1.0, count: int = 32,
                     output_stride: int = 16) -> tuple[dict[str, Any], np.ndarray]:
    """ERF of the Lite0 head tap on ``count`` val images of ``dataset`` at ``scale``: the
    figures (``image_side`` = sqrt(H W)) and the mean |gradient| map."""
    trunk = lite_trunk(output_stride)
    images = erf_images(dataset, count, scale)
    result = effective_receptive_field(lambda x: trunk(x)["head"], images,
                                       stride=trunk.output_stride, offset=trunk.grid_offset)
    h, w = result.grad_map.shape
    # The 50% square is reported too: it is far less sensitive to mass lost at the border.
    side50, clipped50 = mass_square_side(result.grad_map, result.centre, 0.5)
    record = {"dataset": dataset, "scale": scale, "output_stride": output_stride,
              "tap": "head", **result.as_dict(), "erf_side50": side50,
              "clipped50": clipped50,
              "theoretical_rf": theoretical_receptive_field(trunk.modules()),
              "image_side": math.sqrt(h * w)}
    return record, result.grad_map


def plot_erf(erf_dir: str | Path, out_png: str | Path) -> Path:
    """The measured ERF maps (``<erf_dir>/*.json``, maps in :data:`MAPS`), log colour
    scale, with the 50% and 95% squares drawn on each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    from parsenet.viz import save_figure

    files = sorted(Path(erf_dir).glob("*.json"))
    records = [json.loads(f.read_text()) for f in files]
    fig, axes = plt.subplots(1, len(files), figsize=(4 * len(files), 3.6), squeeze=False)
    for ax, file, rec in zip(axes[0], files, records, strict=True):
        grad = np.load(MAPS / file.with_suffix(".npy").name)
        ax.imshow(grad + grad.max() * 1e-4, cmap="magma",
                  norm=LogNorm(vmin=grad.max() * 1e-4, vmax=grad.max()))
        cy, cx = rec["centre_yx"]
        for side, colour in ((rec["erf_side"], "cyan"), (rec["erf_side50"], "white")):
            ax.add_patch(Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False,
                                   color=colour, lw=1))
        clipped = " (clipped)" if rec["clipped"] else ""
        ax.set_title(f"{rec['dataset']} x{rec['scale']:g}, {grad.shape[1]}x{grad.shape[0]}\n"
                     f"95%: {rec['erf_side']} px{clipped}, 50%: {rec['erf_side50']} px",
                     fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"EfficientNet-Lite0 head tap (OS{records[0]['output_stride']}): mean |d "
                 f"centre cell / d input| over {records[0]['images']} val images; "
                 f"theoretical RF {records[0]['theoretical_rf']} px", fontsize=9)
    return save_figure(fig, out_png)


def _erf_main(args: argparse.Namespace) -> None:
    out = OUT_ROOT / "erf" / f"{args.dataset}_x{args.scale:g}_os{args.output_stride}.json"
    if out.exists():
        print(f"{out}: exists, skipped")
        return
    record, grad_map = measure_lite_erf(args.dataset, args.scale, args.images,
                                        args.output_stride)
    out.parent.mkdir(parents=True, exist_ok=True)
    MAPS.mkdir(parents=True, exist_ok=True)  # for the plot; outside the committed run dirs
    np.save(MAPS / out.with_suffix(".npy").name, grad_map.astype(np.float32))
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.study.context_size")
    sub = parser.add_subparsers(dest="command", required=True)
    erf = sub.add_parser("erf", help="measure the Lite0 head tap's ERF on val images")
    erf.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    erf.add_argument("--scale", type=float, default=1.0)
    erf.add_argument("--images", type=int, default=32)
    erf.add_argument("--output-stride", type=int, default=16, choices=(16, 32))
    erf.add_argument("--threads", type=int, default=1)
    plot = sub.add_parser("plot-erf", help="draw the measured ERF maps")
    plot.add_argument("--out", default="docs/images/erf_lite0.png")
    args = parser.parse_args(argv)
    if args.command == "plot-erf":
        print(plot_erf(OUT_ROOT / "erf", args.out))
        return
    torch.set_num_threads(args.threads)
    _erf_main(args)


if __name__ == "__main__":
    main()
