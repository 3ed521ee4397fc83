"""Evaluating a model on a dataset: the confusion matrix of its predictions, through the
:class:`~parsenet.engine.inferencer.Inferencer` that ``predict`` and ``serve`` use (kept out
of :mod:`parsenet.engine.inference`, which the inferencer itself builds on)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from parsenet.choices import EVAL_MODES
from parsenet.engine.inference import scale_limit_problem
from parsenet.errors import ConfigError
from parsenet.labels import IGNORE_INDEX
from parsenet.metrics import MEAN_IU_CONVENTIONS, SegmentationMetrics
from parsenet.preprocessing import Preprocessing, preprocessing_for

if TYPE_CHECKING:  # annotations only: the inferencer (and the data transforms it imports)
    # loads when evaluate is first called
    from parsenet.engine.inferencer import InferenceOptions, Inferencer

__all__ = ["evaluate"]


def _dist_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _eval_options(eval_cfg: Any, mode: str | None) -> tuple[str, dict[str, Any], str | None]:
    """(mode, predict_logits options, mean-IU convention) from ``eval_cfg`` and ``mode``."""
    opts: dict[str, Any] = {}
    mean_iu = getattr(eval_cfg, "mean_iu", None)
    if mean_iu is not None and mean_iu not in MEAN_IU_CONVENTIONS:
        raise ConfigError(f"eval.mean_iu must be one of {sorted(MEAN_IU_CONVENTIONS)}, got "
                          f"{mean_iu!r}")
    if eval_cfg is not None:
        opts = {"window": eval_cfg.window, "stride": eval_cfg.stride,
                "scales": tuple(eval_cfg.scales), "flip": eval_cfg.flip}
        mode = mode or eval_cfg.mode
    mode = mode or "whole"
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    for scale in opts.get("scales", ()) if mode == "multiscale" else ():
        if (problem := scale_limit_problem(scale)) is not None:  # before any image is read
            raise ConfigError(f"eval.scales: {problem}")
    return mode, opts, mean_iu


def _model_input(image: Any, preprocessing: Preprocessing | None, device: torch.device
                 ) -> Tensor:
    """A dataset item's image as a 1 x 3 x H x W float32 batch on ``device``: normalised
    already (eval transforms), or uint8, normalised here by ``preprocessing``."""
    image = torch.as_tensor(image)
    if image.dtype == torch.uint8:
        if preprocessing is None:
            raise ValueError("dataset yields uint8 images and no preprocessing is known "
                             "(pass preprocessing= or eval transforms)")
        image = preprocessing(image)
    return image.unsqueeze(0).to(device, torch.float32)


def _labels(inferencer: Any, batch: Tensor, mode: str, size: tuple[int, int]) -> Tensor:
    """The class of each label pixel; an image warped to another size than its label
    (``data.resize``) has its scores resized bilinearly to the label's before the argmax."""
    return inferencer.labels(batch, mode, size=size)


def _inferencer(model: nn.Module, num_classes: int, options: InferenceOptions,
                prepare: Preprocessing | None, backend: str, device: torch.device,
                checkpoint: Any) -> Inferencer:
    """The inferencer that runs ``model`` on ``backend``."""
    from parsenet.engine.inferencer import Inferencer
    from parsenet.engine.memory import InferenceMemory

    if backend == "eager":  # the module itself: the figures the releases were scored by
        return Inferencer(model, num_classes, InferenceMemory(0.0, num_classes), options,
                          prepare, "eager", device)
    return Inferencer.create(model, num_classes=num_classes, options=options, backend=backend,
                             device=str(device), checkpoint=checkpoint, preprocessing=prepare)


def _score_images(inferencer: Inferencer, dataset: Any, total: int,
                  metrics: SegmentationMetrics, prepare: Preprocessing | None,
                  device: torch.device, mode: str, progress: bool) -> None:
    """Adds this rank's share of the first ``total`` images to ``metrics``: every
    world-size-th image from its rank, so that the ranks' matrices sum to the whole set."""
    rank, world = _dist_rank_world()
    for i in tqdm(range(rank, total, world), desc=f"eval ({mode})",
                  disable=not progress or rank != 0, leave=False):
        image, mask = dataset[i]
        target = torch.as_tensor(mask).to(torch.int64)
        labels = _labels(inferencer, _model_input(image, prepare, device), mode,
                         tuple(target.shape[-2:]))
        metrics.update(labels[0], target)


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    num_classes: int,
    mode: str | None = None,
    device: str | torch.device = "cpu",
    max_images: int = 0,
    progress: bool = True,
    eval_cfg: Any = None,
    preprocessing: Preprocessing | None = None,
    backend: str = "eager",
    checkpoint: Any = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` one image at a time, at native size (or at the
    size the eval transforms warp the image to, scored against the full-size label).

    ``dataset[i]`` is an eval-transformed ``(image 3xHxW float, mask HxW int)``; a uint8
    image is normalised with ``preprocessing`` (default ``model.preprocessing``), the same
    transform the eval pipeline ends with. ``eval_cfg`` (a
    :class:`parsenet.config.EvalConfig`) supplies window, stride, scales and flip, and the
    mode when ``mode`` is None (default ``"whole"``), and ``mean_iu``, the mean-IU
    convention (:mod:`parsenet.metrics`; default ``"present"``). ``max_images`` > 0
    evaluates the first that many images only. Under torch.distributed each rank takes
    every world-size-th image and the confusion matrices are summed, so every rank returns
    the metrics of the whole set. ``backend`` (:mod:`parsenet.engine.backends`; eager runs
    the module as it is) and ``checkpoint`` (the file keying an export cache) choose the
    runtime; the images go through the :class:`~parsenet.engine.inferencer.Inferencer`
    that ``predict`` and ``serve`` use.

    Returns :meth:`SegmentationMetrics.compute`'s dict plus ``images`` (number evaluated),
    ``mode`` and ``backend``. The model is moved to ``device`` and left there; its
    train/eval state is restored.
    """
    from parsenet.engine.inferencer import InferenceOptions

    mode, opts, mean_iu = _eval_options(eval_cfg, mode)
    options = InferenceOptions(mode=mode, preferred=mode, **opts)
    device = torch.device(device)
    ignore_index = getattr(dataset, "ignore_index", IGNORE_INDEX)
    metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index, mean_iu=mean_iu)
    total = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    prepare = preprocessing_for(model, preprocessing)
    was_training = model.training
    model.to(device).eval()
    try:
        inferencer = _inferencer(model, num_classes, options, prepare, backend, device,
                                 checkpoint)
        _score_images(inferencer, dataset, total, metrics, prepare, device, mode, progress)
    finally:
        model.train(was_training)
    metrics.all_reduce()
    return {**metrics.compute(), "images": total, "mode": mode, "backend": inferencer.backend}
