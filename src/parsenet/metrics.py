"""Segmentation metrics from a confusion matrix: pixel acc, mean acc, mean IU, f.w. IU.

The four numbers are the ones FCN (Long et al. 2015, Sec. 5) defined and ParseNet reported.
With ``n_ij`` the number of pixels of class ``i`` predicted as class ``j`` and
``t_i = sum_j n_ij`` the pixels of class ``i``:

    pixel acc  = sum_i n_ii / sum_i t_i
    mean acc   = (1/K') sum_i n_ii / t_i
    mean IU    = (1/K') sum_i n_ii / (t_i + sum_j n_ji - n_ii)
    f.w. IU    = (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

Which classes enter mean IU (``K'``), by name (``mean_iu=``, config ``eval.mean_iu``):

* ``"present"`` (default; ``skip_absent=True``): only classes with ground-truth pixels
  (``t_i > 0``). A class predicted but never present is left out. This is the project's
  long-standing default; we found no public ParseNet or PASCAL-Context evaluation script to
  pin it to, so it is named for what it does. (The VOC devkit's ``VOCevalseg.m``, which
  DeepLab and ParseNet used for VOC, takes a plain ``mean`` over all classes: with every
  class present in VOC val/test, all three conventions agree there.)
* ``"nanmean"`` (``skip_absent=False``): FCN's ``score.py`` (``np.nanmean`` of
  ``diag / (gt + pred - diag)``), also torchmetrics' ``MulticlassJaccardIndex(average=
  "macro")`` and mmsegmentation's ``IoUMetric``: every class with a non-empty union
  (present in the ground truth *or* predicted) is averaged, so a class predicted but absent
  counts with IoU 0; a class neither present nor predicted is 0/0 and skipped.

On a split that lacks some classes (SiftFlow test lacks 3 of its 33) the two differ as soon
as one absent class is predicted anywhere. Mean accuracy is ``n_ii / t_i`` averaged over
present classes in both (score.py's nanmean of ``diag / gt`` skips 0/0 the same way).
``compute()`` reports ``mean_iou`` in the chosen convention and, for comparisons,
``mean_iou_present`` and ``mean_iou_nanmean`` both.

Per-class values of classes left out of the means are NaN. f.w. IU weights by ``t_i``, so
absent classes never contribute in either mode.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from parsenet.labels import IGNORE_INDEX

__all__ = ["SegmentationMetrics", "metrics_from_confusion", "MEAN_IU_CONVENTIONS"]

# name -> skip_absent (see the module docstring)
MEAN_IU_CONVENTIONS = {"present": True, "nanmean": False}


def _nanmean(values: Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else math.nan


def _skip_absent(skip_absent: bool, mean_iu: str | None) -> bool:
    if mean_iu is None:
        return skip_absent
    if mean_iu not in MEAN_IU_CONVENTIONS:
        raise ValueError(f"mean_iu must be one of {sorted(MEAN_IU_CONVENTIONS)}, got {mean_iu!r}")
    return MEAN_IU_CONVENTIONS[mean_iu]


def metrics_from_confusion(confusion: Tensor, skip_absent: bool = True, *,
                           mean_iu: str | None = None) -> dict[str, Any]:
    """Metrics of a K x K confusion matrix (rows: ground truth, columns: prediction).

    ``mean_iu`` (``"present"`` or ``"nanmean"``), when given, overrides ``skip_absent``.
    """
    skip_absent = _skip_absent(skip_absent, mean_iu)
    hist = confusion.to(torch.float64)
    diag = hist.diag()
    gt = hist.sum(dim=1)
    pred = hist.sum(dim=0)
    union = gt + pred - diag
    total = gt.sum()
    nan = torch.full_like(diag, math.nan)
    per_class_acc = torch.where(gt > 0, diag / gt.clamp(min=1), nan)
    iou_present = torch.where(gt > 0, diag / union.clamp(min=1), nan)
    iou_nanmean = torch.where(union > 0, diag / union.clamp(min=1), nan)
    per_class_iou = iou_present if skip_absent else iou_nanmean
    if total > 0:
        pixel_acc = float(diag.sum() / total)
        present = gt > 0
        fw_iou = float((gt[present] * (diag[present] / union[present])).sum() / total)
    else:
        pixel_acc = fw_iou = math.nan
    return {
        "pixel_acc": pixel_acc,
        "mean_acc": _nanmean(per_class_acc),
        "mean_iou": _nanmean(per_class_iou),
        "fw_iou": fw_iou,
        "mean_iou_convention": "present" if skip_absent else "nanmean",
        "mean_iou_present": _nanmean(iou_present),
        "mean_iou_nanmean": _nanmean(iou_nanmean),
        "per_class_iou": per_class_iou.tolist(),
        "per_class_acc": per_class_acc.tolist(),
        "confusion": confusion.to(torch.int64).tolist(),
    }


class SegmentationMetrics:
    """Accumulates a confusion matrix over batches and reduces it to the FCN metrics.

    Args:
        num_classes: K; valid targets and predictions are ``0 .. K-1``.
        ignore_index: target value whose pixels are dropped (255 in every dataset here).
        skip_absent: which classes enter the means, see the module docstring.
        mean_iu: the same choice by name, ``"present"`` or ``"nanmean"``; overrides
            ``skip_absent`` when given.

    ``update`` takes class-index tensors of any (equal) shape; it does not take logits.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 skip_absent: bool = True, *, mean_iu: str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.skip_absent = _skip_absent(skip_absent, mean_iu)
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` hold class indices and have the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape "
                             f"{tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must be integer class indices, not floats "
                             "(take logits.argmax(1) first)")
        k = self.num_classes
        target = target.reshape(-1).to(torch.int64)
        pred = pred.reshape(-1).to(torch.int64)
        keep = target != self.ignore_index
        if not bool(keep.all()):
            target, pred = target[keep], pred[keep]
        if target.numel() == 0:
            return
        for name, values in (("target", target), ("pred", pred)):
            lo, hi = int(values.min()), int(values.max())
            if lo < 0 or hi >= k:
                raise ValueError(
                    f"{name} holds class {lo if lo < 0 else hi}, outside [0, {k}) "
                    f"(ignore_index={self.ignore_index})")
        counts = torch.bincount(target * k + pred, minlength=k * k)
        self.confusion += counts.reshape(k, k).to(self.confusion.device)

    def all_reduce(self) -> None:
        """Sum the confusion matrix over torch.distributed ranks (no-op when not initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        buffer = self.confusion.to(device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        self.confusion = buffer.cpu()

    def compute(self) -> dict[str, Any]:
        """``pixel_acc``, ``mean_acc``, ``mean_iou``, ``fw_iou`` (fractions in [0, 1]),
        ``per_class_iou``, ``per_class_acc`` (lists, NaN for classes left out) and
        ``confusion`` (list of lists)."""
        return metrics_from_confusion(self.confusion, self.skip_absent)
