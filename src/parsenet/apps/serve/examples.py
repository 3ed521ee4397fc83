"""Example images for the page, from each model's own domain.

A model's examples are a few images of the validation split its training config names
(``data.root``), when that dataset is on this machine: road scenes for a CamVid model,
outdoor scenes for SiftFlow, and so on. No dataset image ships with the package: none of
the three datasets states a licence that allows redistributing it. The demo's models, whose
data is generated, get held-out generated images (the demo's test split, same generator
parameters as configs/demo.yaml), made in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from parsenet.apps.serve.results import png_bytes
from parsenet.config import DataConfig
from parsenet.data.synthetic import SyntheticParams, render_dataset_image
from parsenet.errors import ParseNetError

__all__ = ["Examples", "examples_for", "EXAMPLE_COUNT"]

EXAMPLE_COUNT = 3
log = logging.getLogger("parsenet.serve")


@dataclass(frozen=True)
class Examples:
    """(name, PNG bytes) of each example, and where they come from, in words."""

    images: tuple[tuple[str, bytes], ...]
    source: str


def _generated(count: int) -> Examples:
    params = SyntheticParams()
    images = []
    for i in range(count):
        scene = render_dataset_image(params, "test", i)
        images.append((f"context-test-{i:04d} ({scene.scene})", png_bytes(scene.image)))
    return Examples(tuple(images), "held-out images of the demo's generated test split")


def _from_dataset(data: DataConfig, count: int) -> Examples:
    from parsenet.data.decode import read_image
    from parsenet.recipe import dataset_from_config

    dataset = dataset_from_config(data, "val")  # raw items: only the file names are used
    picks = sorted({round(k * len(dataset) / count) for k in range(count)} - {len(dataset)})
    images = []
    for index in picks:
        rgb = read_image(dataset.image_path(index)).permute(1, 2, 0).numpy()
        # Re-encoded as PNG: the page's example route serves PNG.
        images.append((f"{Path(data.root).name} {dataset.ids[index]}", png_bytes(rgb)))
    return Examples(tuple(images), f"the validation split of {data.root}")


def examples_for(data: DataConfig | None, count: int = EXAMPLE_COUNT) -> Examples:
    """``count`` images spread over the validation split that ``data`` describes, or none
    (with the reason as ``source``) when that dataset is not on this machine."""
    if data is None:
        return Examples((), "no dataset is known for these models")
    if data.format == "synthetic":
        return _generated(count)
    if not Path(data.root).is_dir():
        return Examples((), f"their dataset ({data.root}) is not on this machine")
    try:
        return _from_dataset(data, count)
    except (ParseNetError, OSError) as e:  # a damaged copy: the page still works without
        log.warning("no examples from %s: %s", data.root, e)
        return Examples((), f"{data.root} could not be read ({e})")
