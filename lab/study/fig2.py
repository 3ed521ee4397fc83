"""The paper's Fig. 2 on our pretrained VGG-16: features of different layers differ in scale.

The paper plots, for one position of one image, the feature vector made by concatenating
conv4_3, conv5_3, fc7 and pool6, once as it is and once after each layer's L2Norm. We draw
that (top two panels) and, below, each layer's distribution of per-pixel norms over the
whole image before and after L2Norm, with the per-layer means from
:func:`parsenet.viz.feature_norms` (the demo's Fig. 2 numbers) in the labels.

    python -m lab.study.fig2 --out docs/images/fig2_pretrained_vgg.png

The convs are HED's (``weights: hed``); HED has no fc6/fc7, so unless ``--fc-weights``
gives a state dict holding trained ``backbone.layers.fc6/fc7`` tensors, fc7 is the
untrained (xavier) layer and the plot says so.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from parsenet.backbones.weights import read_state_dict
from parsenet.config import load_config
from parsenet.errors import WeightsError
from parsenet.models.builders import parsenet_vgg16
from parsenet.recipe import dataset_from_config
from parsenet.viz import FIG2_LAYERS, feature_norms, save_figure

__all__ = ["fig2_model", "position_vectors", "plot_fig2"]

TAPS = ("conv4", "conv5", "fc7")
LAYERS = (*TAPS, "pool6")
COLOURS = {"conv4": "#4c72b0", "conv5": "#55a868", "fc7": "#c44e52", "pool6": "#8172b2"}


def _fc_tensors(path: str) -> dict[str, Tensor]:
    """``{fc6,fc7}.{weight,bias}`` from a state dict whose keys hold ``fc6``/``fc7``
    (``backbone.layers.fc6.0.weight``, a head's ``fc6.weight``, ...)."""
    state = read_state_dict(path)
    found: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        for layer in ("fc6", "fc7"):
            if layer in parts and parts[-1] in ("weight", "bias") and value.dim() in (1, 4):
                found[f"{layer}.{parts[-1]}"] = value
    if len(found) != 4:
        raise WeightsError(f"{path}: expected fc6/fc7 weight and bias, found {sorted(found)}")
    return found


def fig2_model(num_classes: int, fc_weights: str | None = None) -> tuple[nn.Module, str]:
    """LargeFOV ParseNet with conv4_3 + conv5_3 + fc7 + pool6, every branch L2Norm'd (scale
    10, the paper's init), HED convs; and where fc6/fc7 came from."""
    fc = _fc_tensors(fc_weights) if fc_weights else None
    width = int(fc["fc6.weight"].shape[0]) if fc else None
    model = parsenet_vgg16(num_classes=num_classes, base="largefov", features=TAPS,
                           context=True, fusion="early", normalize=True, weights="hed",
                           fc_channels=width)
    source = "fc6/fc7 untrained (xavier): HED has none"
    if fc:
        fc6, fc7 = model.backbone.fc_layers()
        with torch.no_grad():
            for layer, conv in (("fc6", fc6), ("fc7", fc7)):
                conv.weight.copy_(fc[f"{layer}.weight"])
                conv.bias.copy_(fc[f"{layer}.bias"])
        source = f"fc6/fc7 ({width} ch) from {fc_weights}"
    model.eval()
    return model, source


@torch.no_grad()
def position_vectors(model: nn.Module, image: Tensor, position: tuple[int, int] | None = None
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Per layer: the raw and L2Norm'd feature vector at ``position`` (a cell of the
    output grid, default the centre), and the per-pixel norms over the whole map."""
    maps = model.feature_maps(image.unsqueeze(0), TAPS)
    norms = model.branch_norms()
    h, w = maps["fc7"].shape[-2:]
    y, x = position if position is not None else (h // 2, w // 2)
    out = {}
    for name in LAYERS:
        raw = maps[name].float()
        normed = norms[name](raw)
        out[name] = {"raw": raw[0, :, y, x].numpy(), "normed": normed[0, :, y, x].numpy(),
                     "raw_norms": raw.pow(2).sum(1).sqrt().flatten().numpy(),
                     "normed_norms": normed.pow(2).sum(1).sqrt().flatten().numpy()}
    return out


def _vector_panel(ax: Any, vectors: dict[str, dict[str, np.ndarray]], key: str,
                  title: str) -> None:
    start = 0
    for name in LAYERS:
        v = vectors[name][key]
        ax.plot(np.arange(start, start + v.size), v, lw=0.6, color=COLOURS[name],
                label=f"{FIG2_LAYERS[name]} (norm {np.linalg.norm(v):.3g})")
        start += v.size
    ax.set_xlim(0, start)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("feature value")
    ax.legend(fontsize=7, ncol=4, loc="upper left")


def plot_fig2(vectors: dict[str, dict[str, np.ndarray]],
              means: dict[str, tuple[float, float | None]], out_png: str | Path,
              subtitle: str) -> Path:
    """Three panels: the concatenated vector at one position before / after L2Norm, and
    each layer's per-pixel norm distribution over the image (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), gridspec_kw={"height_ratios": [1, 1, 1.1]})
    _vector_panel(axes[0], vectors, "raw", "concatenated feature at one position, original")
    _vector_panel(axes[1], vectors, "normed", "after L2Norm of each layer (scale 10)")
    axes[1].set_xlabel("feature dimension (conv4_3 | conv5_3 | fc7 | pool6)")
    data, labels, colours = [], [], []
    for name in LAYERS:
        before, after = means[name]
        data += [vectors[name]["raw_norms"], vectors[name]["normed_norms"]]
        after_text = f"{after:.3g}" if after is not None else "-"
        labels += [f"{FIG2_LAYERS[name]}\nbefore\nmean {before:.3g}",
                   f"{FIG2_LAYERS[name]}\nafter\nmean {after_text}"]
        colours += [COLOURS[name], COLOURS[name]]
    box = axes[2].boxplot(data, patch_artist=True, showfliers=False)
    for patch, colour, k in zip(box["boxes"], colours, range(len(colours)), strict=True):
        patch.set_facecolor(colour)
        patch.set_alpha(0.85 if k % 2 == 0 else 0.35)
    axes[2].set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("per-pixel L2 norm")
    axes[2].set_title("per-pixel norms over the whole image", fontsize=10)
    axes[2].grid(axis="y", alpha=0.3, which="both")
    fig.suptitle(f"Features are in different scale (cf. ParseNet Fig. 2)\n{subtitle}",
                 fontsize=10)
    return save_figure(fig, out_png)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.study.fig2")
    parser.add_argument("--config", default="configs/cpu/siftflow_hed_parsenet.yaml",
                        help="dataset of the image (its data: section)")
    parser.add_argument("--index", type=int, default=0, help="val image index")
    parser.add_argument("--fc-weights", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/images/fig2_pretrained_vgg.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)  # the untrained fc6/fc7's xavier draw: the same plot twice
    data_cfg = load_config(args.config).data
    probe = dataset_from_config(data_cfg, "val")
    model, source = fig2_model(probe.num_classes, args.fc_weights)
    data = dataset_from_config(data_cfg, "val", preprocessing=model.preprocessing)
    image = data[args.index][0]
    vectors = position_vectors(model, image)
    means = feature_norms(model, [image], TAPS)
    subtitle = (f"HED VGG-16 convs; {source}\n{Path(data_cfg.root).name} val image "
                f"{probe.ids[args.index]} ({image.shape[-1]}x{image.shape[-2]}), centre cell")
    out = plot_fig2(vectors, means, args.out, subtitle)
    summary = {"image": probe.ids[args.index], "fc": source,
               "mean_norms": {k: list(v) for k, v in means.items()},
               "centre_norms": {k: [float(np.linalg.norm(v["raw"])),
                                    float(np.linalg.norm(v["normed"]))]
                                for k, v in vectors.items()}}
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(out, json.dumps(summary))


if __name__ == "__main__":
    main()
