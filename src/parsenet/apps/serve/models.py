"""The models ``parsenet serve`` shows: which checkpoints a name stands for, and running them.

A served model is a checkpoint loaded with :func:`parsenet.engine.checkpoint.load_model` and
run by the :class:`~parsenet.engine.inferencer.Inferencer` that ``parsenet predict`` uses,
with the same rule for whole or sliding windows, so the page shows what predict would
write.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from parsenet.apps.demo_runs import DEMO_RUNS, RUN_TITLES
from parsenet.apps.tasks import load_source
from parsenet.config import DataConfig
from parsenet.data.palette import voc_palette
from parsenet.engine.inferencer import InferenceOptions, Inferencer
from parsenet.engine.memory import DEFAULT_BUDGET_GB
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
    try:
        release = released(name)  # the one check of a released name, listing the others
    except UsageError as e:
        raise UsageError(f"{e}; serve also takes --model demo or --checkpoint PATH") from None
    baseline = f"{release.name}_baseline"
    pair = ([(f"{baseline} (baseline)", released(baseline))] if baseline in known_models()
            else [])
    return [*pair, (release.name, release)]


@dataclass
class ServedModel:
    """A loaded checkpoint with what the page needs to draw its predictions."""

    name: str
    checkpoint: Path
    model: nn.Module
    classes: list[str]
    palette: np.ndarray  # K x 3 uint8
    inferencer: Inferencer
    data: DataConfig | None = None  # the training config's dataset: the page's examples

    @property
    def mode(self) -> str:
        """The checkpoint config's eval mode: what images run in when they fit."""
        return self.inferencer.options.preferred

    @property
    def options(self) -> dict[str, Any]:
        """window, stride, scales, flip (:func:`~parsenet.engine.inference.predict_logits`)."""
        return self.inferencer.options.run_options

    def predict(self, image: Tensor, mode: str | None = None,
                on_pass: Callable[[], None] | None = None) -> np.ndarray:
        """Class ids (H x W int64) for a uint8 3 x H x W RGB image (``mode`` None: the
        inferencer's choice), through the inferencer's own image path, as predict labels
        it (the checkpoint's data.resize included)."""
        labels, _ = self.inferencer.label_image(image, on_pass=on_pass, mode=mode)
        return labels.numpy().astype(np.int64)


def _unique_titles(titles: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for title in titles:
        seen[title] = seen.get(title, 0) + 1
        out.append(title if seen[title] == 1 else f"{title} ({seen[title]})")
    return out


def load_served_models(checkpoints: Sequence[tuple[str | None, Any]], *,
                       backend: str = "auto", memory_budget_gb: float = DEFAULT_BUDGET_GB,
                       flip: bool | None = None) -> list[ServedModel]:
    """Load (title, checkpoint) pairs on the CPU, each in an inferencer on ``backend``
    (:mod:`parsenet.engine.backends`) that slides images whose memory estimate exceeds
    ``memory_budget_gb``; a None title becomes the run's config name (or the file name).
    ``flip``: test-time flip, None: each model's own eval.flip. One or two models: the
    page compares at most two."""
    from parsenet.apps.tasks import content_file

    if not 1 <= len(checkpoints) <= 2:
        raise UsageError(f"serve shows one or two models, got {len(checkpoints)} checkpoints")

    loaded = []
    for title, source in checkpoints:
        bundle, _ = load_source(source)
        path = Path("released") / source.name if isinstance(source, Release) else Path(source)
        config = bundle.config
        classes = list(bundle.classes)
        palette = bundle.palette if bundle.palette is not None else voc_palette(len(classes))
        options = InferenceOptions.from_eval(config.eval, mode="auto",
                                             budget_gb=memory_budget_gb, flip=flip,
                                             resize=config.data.resize)
        inferencer = Inferencer.create(bundle.model, num_classes=len(classes), options=options,
                                       backend=backend, checkpoint=content_file(source),
                                       preprocessing=bundle.preprocessing)
        loaded.append(ServedModel(
            name=title or config.name or path.stem, checkpoint=path,
            model=bundle.model, classes=classes,
            palette=np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:len(classes)],
            inferencer=inferencer, data=config.data))
    for served, title in zip(loaded, _unique_titles([m.name for m in loaded]), strict=True):
        served.name = title
    return loaded
