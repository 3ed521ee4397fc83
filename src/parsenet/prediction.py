"""One image through ``predict``: read, choose whole or sliding windows by the memory
estimate, label, write the label PNG and the overlay; out-of-memory as one line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from parsenet.data.image_safety import DEFAULT_MAX_PIXELS
from parsenet.engine.memory import InferenceMemory, choose_mode, is_out_of_memory
from parsenet.errors import ResourceError
from parsenet.preprocessing import Preprocessing

__all__ = ["PredictionJob", "OVERLAY_MAX_SIDE"]

# The overlay is for looking at: a 6000 x 6000 photo's three panels at full size would be an
# 18000-pixel-wide JPEG and cost more memory than the prediction. The label PNG keeps the
# full size.
OVERLAY_MAX_SIDE = 2048


def _shrunk(rgb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape
    scale = OVERLAY_MAX_SIDE / max(h, w)
    if scale >= 1:
        return rgb, labels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)),
            np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST)))


@dataclass
class PredictionJob:
    """What every image of one ``predict`` call shares; :meth:`predict` does one image."""

    classes: list[str]
    preprocessing: Preprocessing  # its ToModelInput, as in the datasets
    device: str
    palette: Any
    alpha: float
    mode: str  # whole | slide | multiscale | auto
    preferred: str  # what auto uses when it fits: the config's eval mode
    budget: float  # bytes
    opts: dict[str, Any]
    run: Callable[[torch.Tensor], torch.Tensor] | None = None
    memory: InferenceMemory | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused from their header
    _palette: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from parsenet.viz import voc_palette

        palette = self.palette if self.palette is not None else voc_palette(len(self.classes))
        self._palette = np.asarray(palette, dtype=np.uint8)

    def predict(self, path: Path, out_stem: Path) -> tuple[Path, Path, str]:
        """Write ``<out_stem>.png`` and ``<out_stem>_overlay.jpg``; returns them and the
        mode used."""
        from parsenet.data.decode import read_image
        from parsenet.viz import (
            colorize,
            legend_entries,
            overlay,
            save_label_png,
            side_by_side,
            with_legend,
        )

        image = read_image(path, max_pixels=self.max_pixels)
        h, w = image.shape[-2:]
        assert self.memory is not None
        mode = choose_mode(self.mode, h, w, self.memory, self.budget,
                           window=self.opts["window"], scales=self.opts["scales"],
                           flip=self.opts["flip"], preferred=self.preferred)
        labels = self._labels(path, image, mode).numpy()
        label_png = out_stem.with_name(out_stem.name + ".png")
        save_label_png(labels, self._palette, label_png)
        legend = legend_entries(labels, self.classes, self._palette)  # shares at full size
        rgb, small = _shrunk(image.permute(1, 2, 0).contiguous().numpy(), labels)
        del image, labels
        panels = [("image", rgb), ("overlay", overlay(rgb, small, self._palette, self.alpha)),
                  ("prediction", colorize(small, self._palette))]
        overlay_path = out_stem.with_name(out_stem.name + "_overlay.jpg")
        with_legend(side_by_side(panels), legend).save(overlay_path, quality=92)
        return label_png, overlay_path, mode

    def _labels(self, path: Path, image: torch.Tensor, mode: str) -> torch.Tensor:
        from parsenet.engine.inference import predict_labels

        try:
            x = self.preprocessing(image).unsqueeze(0).to(self.device)
            with torch.inference_mode():
                return predict_labels(self.run, x, mode, **self.opts)[0].to(torch.uint8).cpu()
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            raise ResourceError(self._oom_message(path, *image.shape[-2:], mode)) from None

    def _oom_message(self, path: Path, h: int, w: int, mode: str) -> str:
        assert self.memory is not None
        window, flip, gb = self.opts["window"], self.opts["flip"], self.budget / 1e9
        if mode == "slide":
            need = self.memory.slide(h, w, window, flip) / 1e9
            fits = self.memory.largest_window(h, w, self.budget, flip)
            return (f"{path}: out of memory predicting this {h}x{w} image in {window}x{window} "
                    f"sliding windows (estimated {need:.1f} GB); windows up to {fits}x{fits} "
                    f"fit in {gb:.1f} GB (--window {fits})")
        need = self.memory.estimate(mode, h, w, window=window, scales=self.opts["scales"],
                                    flip=flip) / 1e9
        side = self.memory.largest_whole_side(self.budget)
        return (f"{path}: out of memory predicting this {h}x{w} image {mode} (estimated "
                f"{need:.1f} GB); images up to about {side}x{side} fit whole in {gb:.1f} GB, "
                f"larger ones need --mode slide (or auto)")
