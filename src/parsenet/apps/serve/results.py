"""What one prediction returns: label maps drawn as PNGs, the legend, the disagreement map.

Two models' disagreement is the paper's Fig. 3 done on the user's image: the pixels where
the baseline and ParseNet name different classes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from parsenet.apps.serve.models import ServedModel
from parsenet.viz import class_shares, colorize, label_image, overlay

__all__ = ["png_bytes", "legend", "disagreement_map", "build_result", "DISAGREE_COLOR"]

DISAGREE_COLOR = (255, 0, 255)  # magenta: in no dataset palette used here as a class colour


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """PNG-encode quickly: level 1 is several times faster than the default on big images
    for files about a third larger, and the page is local."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hex(colour: Sequence[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in colour)


def legend(labels: np.ndarray, classes: Sequence[str], palette: np.ndarray
           ) -> list[dict[str, Any]]:
    """Classes present in ``labels``, most pixels first: id, name, colour, share (0-1)."""
    return [{"id": k, "name": classes[k], "color": _hex(palette[k]), "share": share}
            for k, share in class_shares(labels, len(classes))]


def disagreement_map(rgb: np.ndarray, first: np.ndarray, second: np.ndarray
                     ) -> tuple[np.ndarray, float]:
    """The image in dimmed grey with the pixels where the two label maps differ in
    magenta, and the share of such pixels."""
    differ = first != second
    grey = rgb.astype(np.float32).mean(axis=2, keepdims=True) * 0.5 + 64
    out = np.repeat(grey, 3, axis=2).astype(np.uint8)
    out[differ] = DISAGREE_COLOR
    return out, float(differ.mean()) if differ.size else 0.0


def _model_entry(rgb: np.ndarray, served: ServedModel, labels: np.ndarray, alpha: float,
                 images: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": served.name, "checkpoint": str(served.checkpoint),
                             "legend": legend(labels, served.classes, served.palette)}
    if images:
        entry["label_png"] = _b64(png_bytes(label_image(labels, served.palette)))
        entry["color_png"] = _b64(png_bytes(colorize(labels, served.palette)))
        entry["overlay_png"] = _b64(png_bytes(overlay(rgb, labels, served.palette, alpha)))
    return entry


def build_result(rgb: np.ndarray, models: Sequence[ServedModel],
                 labels: Sequence[np.ndarray], *, mode: str, seconds: float,
                 alpha: float = 0.5, images: bool = True) -> dict[str, Any]:
    """The JSON the page and scripts get: size, inference mode and time, one entry per
    model (legend; base64 PNGs unless ``images`` is False) and, for two models with the
    same classes, the disagreement share and map."""
    result: dict[str, Any] = {
        "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "mode": mode,
        "seconds": round(seconds, 3),
        "models": [_model_entry(rgb, m, lab, alpha, images)
                   for m, lab in zip(models, labels, strict=True)],
        "disagreement": None,
    }
    if len(models) == 2 and models[0].classes == models[1].classes:
        picture, share = disagreement_map(rgb, labels[0], labels[1])
        result["disagreement"] = {"share": share}
        if images:
            result["disagreement"]["png"] = _b64(png_bytes(picture))
    return result
