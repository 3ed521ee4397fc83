"""Pictures: coloured label maps, overlays, panels, training curves, feature norms (Fig. 2).

matplotlib is imported inside the plotting functions (Agg backend, no display), so the rest
of the package works without it (``pip install parsenet[viz]``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from parsenet.data.palette import voc_palette
from parsenet.errors import UsageError
from parsenet.labels import PNG_CLASSES, UINT8_CLASSES

__all__ = ["voc_palette", "IGNORE_COLOR", "colorize", "overlay", "save_label_png", "label_image",
           "side_by_side", "class_shares", "LegendEntry", "legend_entries", "legend_strip",
           "with_legend", "plot_curves", "feature_norms", "plot_feature_norms", "FIG2_LAYERS",
           "save_figure"]

# VOC's colour for "void" (label 255): pixels whose label is outside the palette.
IGNORE_COLOR = (224, 224, 192)
# Tap name -> the layer name the paper's Fig. 2 uses.
FIG2_LAYERS = {"conv3": "conv3_3", "conv4": "conv4_3", "conv5": "conv5_3", "fc7": "fc7",
               "pool6": "pool6"}


def _as_numpy(array: Any) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def colorize(mask: Any, palette: Any, ignore_color: Sequence[int] = IGNORE_COLOR
             ) -> np.ndarray:
    """H x W class indices -> H x W x 3 uint8; labels outside the palette get
    ``ignore_color``."""
    mask = _as_numpy(mask).astype(np.int64)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {mask.shape}")
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    table = np.concatenate([palette, np.asarray([ignore_color], dtype=np.uint8)])
    index = np.where((mask >= 0) & (mask < len(palette)), mask, len(palette))
    return table[index]


def overlay(image: Any, mask: Any, palette: Any, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured mask over an H x W x 3 uint8 image; ignored pixels (outside the
    palette) show the image alone."""
    image = _as_numpy(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {image.dtype} {image.shape}")
    mask = _as_numpy(mask).astype(np.int64)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} != image size {image.shape[:2]}")
    colours = colorize(mask, palette).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    valid = ((mask >= 0) & (mask < len(np.asarray(palette).reshape(-1, 3))))[..., None]
    out = np.where(valid, blended, image.astype(np.float32))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def save_label_png(mask: Any, palette: Any, path: str | os.PathLike) -> None:
    """Save class indices as a label PNG whose pixel values are the class ids: a palette
    ("P" mode) PNG that shows them in colour (VOC's convention), or a 16-bit greyscale one
    for more than 256 classes (:func:`label_image`)."""
    image = label_image(mask, palette)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def label_image(mask: Any, palette: Any) -> Image.Image:
    """Class indices as :func:`save_label_png` writes them (for callers that encode the
    image themselves, e.g. into memory). A PNG palette holds 256 colours, so a palette of
    more than 256 classes (one per class, as predict and serve pass it) or an id above 255
    gives a 16-bit greyscale ("I;16") image of the ids instead, as mmseg writes them: the
    format follows the model, not which ids one image happens to hold."""
    mask = _as_numpy(mask)
    if mask.ndim != 2 or mask.min(initial=0) < 0:
        raise ValueError(f"mask must be H x W with values >= 0, got shape {mask.shape}")
    top = int(mask.max(initial=0))
    if top >= PNG_CLASSES:
        raise UsageError(f"class id {top} does not fit a 16-bit label PNG (at most "
                         f"{PNG_CLASSES} classes)")
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(palette) > UINT8_CLASSES or top >= UINT8_CLASSES:
        return Image.fromarray(mask.astype(np.uint16))
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(palette)] = palette
    flat[255] = IGNORE_COLOR if len(palette) < 256 else flat[255]
    image.putpalette(flat.reshape(-1).tolist())
    return image


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def side_by_side(panels: Sequence[tuple[str, Any]], gap: int = 4, title_size: int = 14
                 ) -> Image.Image:
    """Panels (title, H x W x 3 uint8) in one row, each with its title above; shorter
    panels are padded at the bottom with white."""
    if not panels:
        raise ValueError("no panels")
    arrays = [_as_numpy(a) for _, a in panels]
    for (title, _), a in zip(panels, arrays, strict=True):
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"panel {title!r} must be H x W x 3, got shape {a.shape}")
    title_h = title_size + 8
    height = max(a.shape[0] for a in arrays) + title_h
    width = sum(a.shape[1] for a in arrays) + gap * (len(arrays) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(title_size)
    x = 0
    for (title, _), a in zip(panels, arrays, strict=True):
        canvas.paste(Image.fromarray(a.astype(np.uint8)), (x, title_h))
        draw.text((x + 4, 3), str(title), fill="black", font=font)
        x += a.shape[1] + gap
    return canvas


# ---------------------------------------------------------------------------- legend
# (class name, RGB colour, share of the pixels or None where the share is not shown)
LegendEntry = tuple[str, tuple[int, int, int], float | None]


def class_shares(labels: Any, num_classes: int) -> list[tuple[int, float]]:
    """(class id, share of all pixels) of the classes present in an H x W label map, most
    pixels first; labels outside 0..num_classes-1 (ignore) count in the total only."""
    labels = _as_numpy(labels).astype(np.int64).ravel()
    inside = labels[(labels >= 0) & (labels < num_classes)]
    counts = np.bincount(inside, minlength=num_classes)
    total = max(1, labels.size)
    order = np.argsort(-counts, kind="stable")
    return [(int(k), float(counts[k]) / total) for k in order if counts[k] > 0]


def legend_entries(labels: Any, classes: Sequence[str], palette: Any) -> list[LegendEntry]:
    """The legend of a predicted label map: name, colour and share of each class present."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return [(classes[k], tuple(int(v) for v in palette[k]), share)
            for k, share in class_shares(labels, len(classes))]


def _share_text(share: float) -> str:
    # A class on a few pixels of a big image is present, not "0.0%".
    return "<0.1%" if share < 0.0005 else f"{100 * share:.1f}%"


def legend_strip(entries: Sequence[LegendEntry], width: int, text_size: int = 13
                 ) -> Image.Image:
    """A white strip ``width`` pixels wide: a colour swatch and "name share" per entry,
    wrapped onto as many rows as the names need."""
    font = _font(text_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_h, pad, swatch = text_size + 10, 6, text_size
    items, x, y = [], pad, 0
    for name, colour, share in entries:
        text = name if share is None else f"{name} {_share_text(share)}"
        item_w = swatch + 5 + int(measure.textlength(text, font=font)) + 14
        if x + item_w > width and x > pad:
            x, y = pad, y + row_h
        items.append((x, y, text, colour))
        x += item_w
    canvas = Image.new("RGB", (width, y + row_h), "white")
    draw = ImageDraw.Draw(canvas)
    for x, y, text, colour in items:
        top = y + (row_h - swatch) // 2
        draw.rectangle([x, top, x + swatch, top + swatch], fill=tuple(colour), outline="black")
        draw.text((x + swatch + 5, top - 1), text, fill="black", font=font)
    return canvas


def with_legend(picture: Image.Image, entries: Sequence[LegendEntry]) -> Image.Image:
    """``picture`` with :func:`legend_strip` below it."""
    strip = legend_strip(entries, picture.width)
    out = Image.new("RGB", (picture.width, picture.height + strip.height), "white")
    out.paste(picture.convert("RGB"), (0, 0))
    out.paste(strip, (0, picture.height))
    return out


# ---------------------------------------------------------------------------- curves
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such log file")
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):
                continue  # a last line cut by a kill
            raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
    return records


def _runs(sources: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """Normalise plot_curves' input to [(label, records)]."""
    if isinstance(sources, Mapping):
        items = list(sources.items())
    elif isinstance(sources, (str, os.PathLike)):
        items = [(None, sources)]
    else:
        sources = list(sources)
        if sources and isinstance(sources[0], Mapping):  # one run's records
            items = [(None, sources)]
        else:
            items = [(None, s) for s in sources]
    runs = []
    for i, (label, source) in enumerate(items):
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                path = path / "log.jsonl"
            records = _read_jsonl(path)
            label = label or (path.parent.name if path.name == "log.jsonl" else path.stem)
        else:
            records = list(source)
            label = label or f"run {i + 1}"
        runs.append((str(label), records))
    return runs


def _series(records: Iterable[Mapping[str, Any]], kind: str, key: str
            ) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if r.get("kind") == kind and isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(r["iteration"])
            ys.append(value)
    return xs, ys


def plot_curves(sources: Any, out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Loss, learning rate and validation mean IoU against iteration, one line per run.

    ``sources``: a ``log.jsonl`` path (or run directory), a list of them, one run's list of
    records, or ``{label: path or records}``. Runs are labelled by their directory name.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _runs(sources)
    panels = (("train", "loss", "training loss"), ("train", "lr", "learning rate"),
              ("val", "mean_iou", "validation mean IoU"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (kind, key, name) in zip(axes, panels, strict=True):
        for label, records in runs:
            xs, ys = _series(records, kind, key)
            if xs:
                ax.plot(xs, ys, marker="o" if kind == "val" else None, label=label)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_png)


def save_figure(fig, out_png: str | os.PathLike) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------- Fig. 2
def _mean_pixel_norm(x: Tensor) -> tuple[float, int]:
    norms = x.float().pow(2).sum(dim=1).sqrt()  # N x h x w: per-pixel channel L2 norm
    return float(norms.sum()), norms.numel()


@torch.no_grad()
def feature_norms(model: nn.Module, images: Tensor | Iterable[Tensor],
                  taps: Sequence[str] = ("conv4", "conv5", "fc7")
                  ) -> dict[str, tuple[float, float | None]]:
    """Mean per-pixel L2 norm of each layer's feature vectors, before and after L2Norm.

    ``images``: normalised N x 3 x H x W, or an iterable of 3 x H x W / 1 x 3 x H x W
    tensors (any sizes). Uses ``model.feature_maps`` (raw ``taps`` maps and ``pool6``);
    "after" applies the model's own L2Norm of that branch (``model.branch_norms()``), and is
    None for a layer the model does not normalise (e.g. every layer of the baseline). Returns
    ``{tap: (before, after)}`` in the order of ``taps`` then pool6.
    """
    if isinstance(images, Tensor) and images.dim() == 4:
        batches: Iterable[Tensor] = [images]
    else:
        batches = images
    norms = model.branch_norms()
    sums: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            x = x.unsqueeze(0) if x.dim() == 3 else x
            maps = model.feature_maps(x, taps)
            for name, fmap in maps.items():
                acc = sums.setdefault(name, [0.0, 0.0, 0.0])
                total, count = _mean_pixel_norm(fmap)
                acc[0] += total
                acc[2] += count
                if name in norms:
                    acc[1] += _mean_pixel_norm(norms[name](fmap))[0]
    finally:
        model.train(was_training)
    if not sums:
        raise ValueError("no images")
    return {name: (before / count, after / count if name in norms else None)
            for name, (before, after, count) in sums.items()}


def plot_feature_norms(norms: Mapping[str, tuple[float, float | None]],
                       out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Bars of the mean feature norm per layer before and after L2Norm on a log scale: the
    analogue of the paper's Fig. 2 (features of different layers differ in scale by orders
    of magnitude; after L2Norm they sit at the learned scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(norms)
    labels = [FIG2_LAYERS.get(n, n) for n in names]
    before = [norms[n][0] for n in names]
    after = [norms[n][1] for n in names]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
    pos = np.arange(len(names))
    width = 0.38
    ax.bar(pos - width / 2, before, width, label="before L2Norm", color="#4c72b0")
    has_after = [a is not None for a in after]
    if any(has_after):
        ax.bar(pos[has_after] + width / 2, [a for a in after if a is not None], width,
               label="after L2Norm", color="#dd8452")
    for p, value in zip(pos, before, strict=True):
        ax.text(p - width / 2, value, f"{value:.3g}", ha="center", va="bottom", fontsize=8)
    for p, value in zip(pos, after, strict=True):
        if value is not None:
            ax.text(p + width / 2, value, f"{value:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(pos, labels)
    ax.set_ylabel("mean L2 norm of feature vectors")
    ax.set_title(title or "Feature norms per layer (cf. ParseNet Fig. 2)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3, which="both")
    return save_figure(fig, out_png)
