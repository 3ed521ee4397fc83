"""Post-hoc logit adjustment of a model trained with median-frequency class weights: how much
of its pixel accuracy did the weighting cost, and does undoing part of it pay on val?

    python -m lab.tools.logit_adjustment siftflow --taus 0 0.25 0.5 0.75 1 [--out FILE]

A loss weighted by ``w_c`` trains the scores towards ``log p(c | x) + log w_c`` (up to a
constant); subtracting ``tau * log w_c`` from the scores before the argmax undoes the
weighting in part (``tau`` 1: wholly, Menon et al. 2021, "Long-tail learning via logit
adjustment"). The weights are recounted from the training split's labels as the trainer
counts them (:func:`parsenet.engine.class_weights.median_frequency_weights`); a class with no
training pixel keeps its scores. Each val image's scores come once from the source's default
evaluation (its scales and flip, eager), and every ``tau`` is scored on them. SOURCE is a
released model's name or a checkpoint path.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from parsenet.metrics import SegmentationMetrics

FIGURES = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")


def log_weights(weights: Tensor) -> Tensor:
    """``log w_c``, and 0 for a class of weight 0 (no training pixel): its scores stay."""
    weights = weights.double()
    return torch.where(weights > 0, weights.clamp_min(1e-30).log(), torch.zeros_like(weights)
                       ).float()


def score_adjusted(pairs: Iterable[tuple[Tensor, Tensor]], log_w: Tensor, taus: Sequence[float],
                   mean_iu: str = "present") -> dict[float, dict[str, float]]:
    """Per ``tau``, the four figures (percent) of ``argmax(scores - tau * log_w)`` over the
    (scores 1 x K x H x W, labels H x W) pairs."""
    k = int(log_w.numel())
    metrics = {t: SegmentationMetrics(k, mean_iu=mean_iu) for t in taus}
    shift = log_w.view(1, k, 1, 1)
    for scores, target in pairs:
        for t in taus:
            metrics[t].update((scores.float() - t * shift).argmax(1)[0], target)
    return {t: {f: 100 * float(m.compute()[f]) for f in FIGURES} for t, m in metrics.items()}


def _val_scores(source: str, progress: bool) -> tuple[Iterable[tuple[Tensor, Tensor]], Tensor,
                                                      str]:
    from parsenet.apps.tasks import load_source
    from parsenet.engine.class_weights import label_counts, median_frequency_weights
    from parsenet.engine.inferencer import InferenceOptions, Inferencer
    from parsenet.engine.memory import InferenceMemory
    from parsenet.models.released import ReleasedWeights, released
    from parsenet.recipe import dataset_from_config, eval_transforms_from_config

    names = {w.value.name for w in ReleasedWeights.available()}
    loaded, _ = load_source(released(source) if source in names else Path(source))
    cfg = loaded.config
    k = len(loaded.classes)
    train = dataset_from_config(cfg.data, "train")
    weights = median_frequency_weights(*label_counts(train.read_label, len(train), k, progress))
    val = dataset_from_config(cfg.data, "val", transforms=eval_transforms_from_config(
        cfg.data, loaded.preprocessing))
    ev = cfg.eval
    options = InferenceOptions(mode="multiscale", preferred="multiscale", scales=list(ev.scales),
                               flip=ev.flip)
    inferencer = Inferencer(loaded.model.eval(), k, InferenceMemory(0.0, k), options,
                            loaded.preprocessing, "eager", torch.device("cpu"))

    def pairs() -> Iterable[tuple[Tensor, Tensor]]:
        for i in tqdm(range(len(val)), desc="val scores", disable=not progress):
            image, mask = val[i]
            image = torch.as_tensor(image)
            batch = (loaded.preprocessing(image) if image.dtype == torch.uint8
                     else image.float()).unsqueeze(0)
            target = torch.as_tensor(np.asarray(mask)).long()
            scores = inferencer.logits(batch, "multiscale").float()
            if tuple(scores.shape[-2:]) != tuple(target.shape[-2:]):
                scores = F.interpolate(scores, size=tuple(target.shape[-2:]), mode="bilinear",
                                       align_corners=False)
            yield scores, target

    return pairs(), log_weights(weights), ev.mean_iu


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.tools.logit_adjustment",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="a released model's name or a checkpoint path")
    ap.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    pairs, log_w, mean_iu = _val_scores(args.source, not args.no_progress)
    figures = score_adjusted(pairs, log_w, args.taus, mean_iu)
    for tau, row in figures.items():
        print(f"tau {tau:g}: " + " / ".join(f"{row[f]:.2f}" for f in FIGURES))
    if args.out is not None:
        args.out.write_text(json.dumps({"source": args.source, "log_w": log_w.tolist(),
                                        "figures": {str(t): r for t, r in figures.items()}},
                                       indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
