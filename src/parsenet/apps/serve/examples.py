"""Example images for the page, generated in memory from the built-in context dataset.

They are held-out images of the demo's test split (same generator parameters as
configs/demo.yaml), so the demo's two models have never seen them in training and their
disagreement on the look-alike objects is the demo's point. Nothing is shipped or written.
"""

from __future__ import annotations

from functools import lru_cache

from parsenet.apps.serve.results import png_bytes
from parsenet.data.synthetic import SyntheticParams, render_dataset_image

__all__ = ["example_pngs", "EXAMPLE_COUNT"]

EXAMPLE_COUNT = 3


@lru_cache(maxsize=1)
def example_pngs(count: int = EXAMPLE_COUNT) -> tuple[tuple[str, bytes], ...]:
    """(name, PNG bytes) of the first ``count`` images of the generated test split."""
    params = SyntheticParams()
    out = []
    for i in range(count):
        scene = render_dataset_image(params, "test", i)
        out.append((f"context-test-{i:04d} ({scene.scene})", png_bytes(scene.image)))
    return tuple(out)
