"""The models ``parsenet serve`` shows: which checkpoints a name stands for, and running them.

A served model is a checkpoint loaded with :func:`parsenet.engine.checkpoint.load_model` and
run with :func:`parsenet.engine.inference.predict_logits` in the mode its config evaluates
with, so the page shows what ``parsenet predict`` would write.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from parsenet.apps.demo_runs import DEMO_RUNS, RUN_TITLES
from parsenet.apps.tasks import load_source
from parsenet.config import DataConfig
from parsenet.data.palette import voc_palette
from parsenet.engine.inference import predict_logits
from parsenet.errors import UsageError
from parsenet.models.released import Release, ReleasedWeights, released

__all__ = ["ServedModel", "known_models", "default_model", "named_checkpoints",
           "load_served_models"]

# configs/demo.yaml's train.out_dir, where `make demo` leaves the two runs.
DEMO_DIR = Path("runs") / "demo"


def known_models() -> tuple[str, ...]:
    """``demo`` and the released models shipped with the package (``parsenet models``)."""
    return ("demo", *(m.value.name for m in ReleasedWeights.available()))


def default_model() -> str:
    """What serve shows with no --model/--checkpoint: the released Stanford Background pair
    (natural photos, baseline beside ParseNet) where it ships, else the demo's pair."""
    return "stanford" if "stanford" in known_models() else "demo"


def named_checkpoints(name: str, *, demo_dir: str | os.PathLike = DEMO_DIR
                      ) -> list[tuple[str, Any]]:
    """The (title, checkpoint path or :class:`~parsenet.models.released.Release`) pairs that
    ``--model NAME`` stands for.

    ``"demo"``: the baseline and ParseNet that ``make demo`` trains (a UsageError says how to
    get them when they are missing). A released model's name: that model, beside its
    ``<name>_baseline`` release when one ships (the paper's Fig. 3, live)."""
    if name == "demo":
        root = Path(demo_dir)
        pairs = [(RUN_TITLES[m], root / m / "checkpoints" / "last.pt") for m in DEMO_RUNS]
        missing = [str(path) for _, path in pairs if not path.is_file()]
        if missing:
            raise UsageError(f"the demo models are not there ({', '.join(missing)}): run "
                             f"`make demo` first (a few minutes on a CPU), or pass "
                             f"--checkpoint PATH")
        return pairs
    known = known_models()
    if name not in known:
        raise UsageError(f"--model {name!r}: unknown model (known: {', '.join(known)}); "
                         f"or pass --checkpoint PATH")
    baseline = f"{name}_baseline"
    pair = [(f"{baseline} (baseline)", released(baseline))] if baseline in known else []
    return [*pair, (name, released(name))]


def _windows(size: int, window: int, stride: int) -> int:
    # The count of inference._window_starts: windows clipped to the image, one if it fits.
    return 1 if size <= window else math.ceil((size - window) / stride) + 1


class _CountingPredictor:
    """The model, calling ``on_pass`` after every forward pass (progress of big images)."""

    def __init__(self, model: nn.Module, on_pass: Callable[[], None]) -> None:
        self.model, self.on_pass = model, on_pass

    def __call__(self, x: Tensor) -> Tensor:
        out = self.model(x)
        self.on_pass()
        return out


@dataclass
class ServedModel:
    """A loaded checkpoint with what the page needs to draw its predictions."""

    name: str
    checkpoint: Path
    model: nn.Module
    classes: list[str]
    palette: np.ndarray  # K x 3 uint8
    mode: str  # the checkpoint config's eval mode
    options: dict[str, Any] = field(default_factory=dict)  # window, stride, scales, flip
    data: DataConfig | None = None  # the training config's dataset: the page's examples

    def passes(self, height: int, width: int, mode: str) -> int:
        """Forward passes :meth:`predict` makes on an image of this size in ``mode``."""
        views = 2 if self.options.get("flip") else 1
        if mode == "multiscale":
            return views * len(self.options.get("scales", (1.0,)))
        if mode == "slide":
            window, stride = self.options["window"], self.options["stride"]
            return views * _windows(height, window, stride) * _windows(width, window, stride)
        return views

    def predict(self, image: Tensor, mode: str,
                on_pass: Callable[[], None] = lambda: None) -> np.ndarray:
        """Class ids (H x W int64) for a uint8 3 x H x W RGB image."""
        x = self.model.preprocessing(image).unsqueeze(0)
        with torch.inference_mode():
            logits = predict_logits(_CountingPredictor(self.model, on_pass), x, mode,
                                    **self.options)
        return logits.argmax(1)[0].numpy()


def _unique_titles(titles: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for title in titles:
        seen[title] = seen.get(title, 0) + 1
        out.append(title if seen[title] == 1 else f"{title} ({seen[title]})")
    return out


def load_served_models(checkpoints: Sequence[tuple[str | None, Any]]
                       ) -> list[ServedModel]:
    """Load (title, checkpoint) pairs on the CPU; a None title becomes the run's config name
    (or the file name). One or two models: the page compares at most two."""
    if not 1 <= len(checkpoints) <= 2:
        raise UsageError(f"serve shows one or two models, got {len(checkpoints)} checkpoints")

    loaded = []
    for title, source in checkpoints:
        bundle, _ = load_source(source)
        path = Path("released") / source.name if isinstance(source, Release) else Path(source)
        config = bundle.config
        ev = config.eval
        classes = list(bundle.classes)
        palette = bundle.palette if bundle.palette is not None else voc_palette(len(classes))
        options = {"window": ev.window, "stride": ev.stride, "scales": tuple(ev.scales),
                   "flip": ev.flip}
        loaded.append(ServedModel(
            name=title or config.name or path.stem, checkpoint=path,
            model=bundle.model, classes=classes,
            palette=np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:len(classes)],
            mode=ev.mode, options=options, data=config.data))
    for served, title in zip(loaded, _unique_titles([m.name for m in loaded]), strict=True):
        served.name = title
    return loaded
