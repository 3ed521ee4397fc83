"""Train a head on a frozen trunk's cached features: the cached study's engine.

``train_cached(config, resolution=...)`` builds the config's model with the public builder,
splits it into a frozen trunk and a trainable head (:data:`SPLITS`, by model name), caches
the trunk's taps for the train and val splits (:mod:`parsenet.apps.study.cached.cache`), then
trains the head with our optimiser, schedule and iteration code
(:mod:`parsenet.engine.optim`, :func:`parsenet.engine.iteration.run_iteration`), and
evaluates it on the val split at full label resolution with :mod:`parsenet.metrics`.

Out dir: ``log.jsonl`` (train loss, lr), ``checkpoints/last.pt`` (every
``train.checkpoint_every`` iterations, and at the end; weights_only), ``metrics.json`` (the
study's format), ``results.json`` (metrics + the run's facts) and ``curve.png``. A run
resumes exactly from its checkpoint: the sample order is a function of (seed, epoch), and
the global RNG (dropout) is restored. A non-finite loss raises TrainingDivergedError.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from parsenet.apps.study.cached.cache import TapCache, build_cache
from parsenet.apps.study.cached.sources import dataset_id, raw_split, trunk_id
from parsenet.apps.study.cached.vgg import VGGHead, VGGTrunk
from parsenet.apps.study.lite_split import split_lite
from parsenet.apps.study.pixel_subsample import SubsampledScores
from parsenet.apps.study.spec import NORM_IMAGES
from parsenet.config import Config, ConfigError, config_to_dict, save_config
from parsenet.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from parsenet.engine.class_weights import class_weights
from parsenet.engine.distributed import DistContext
from parsenet.engine.iteration import run_iteration
from parsenet.engine.optim import build_optimizer, build_scheduler
from parsenet.engine.precision import resolve_amp
from parsenet.engine.runlog import RunLog
from parsenet.errors import TrainingDivergedError
from parsenet.layers.resample import resize_to_input
from parsenet.metrics import SegmentationMetrics

__all__ = ["train_cached", "PackedHead", "SPLITS", "evaluate_head", "batch_indices",
           "feature_norms"]



def _split_vgg(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    return VGGTrunk(model.backbone), VGGHead(model)


# model name -> model -> (frozen trunk: image -> taps, head: taps -> logits on the grid).
# The trunk needs out_channels, output_stride and grid_offset (the backbone's).
SPLITS: dict[str, Callable[[nn.Module], tuple[nn.Module, nn.Module]]] = {
    "parsenet_vgg16": _split_vgg,
    "parsenet_efficientnet_lite0": split_lite,  # claim 2 (study/lite_split.py)
    "parsenet_efficientnet_lite1": split_lite,
    "parsenet_efficientnet_lite2": split_lite,
}


class PackedHead(nn.Module):
    """The head on one channel-packed tensor (what run_iteration hands a model), upsampled
    to the trunk's input size with the trunk's grid (stride, offset).

    ``loss_on_grid``: in training mode the logits stay on the output grid, for a loss
    against labels sampled at the grid's cell centres (:func:`grid_labels`); evaluation
    always upsamples."""

    def __init__(self, head: nn.Module, channels: dict[str, int], size: tuple[int, int],
                 stride: int, offset: float, loss_on_grid: bool = False) -> None:
        super().__init__()
        self.head = head
        self.taps, self.sizes = tuple(channels), tuple(channels.values())
        self.size, self.stride, self.offset = tuple(size), stride, offset
        self.loss_on_grid = loss_on_grid

    def forward(self, packed: Tensor) -> Tensor:
        taps = dict(zip(self.taps, torch.split(packed, self.sizes, dim=1), strict=True))
        logits = self.head(taps)
        if self.training and self.loss_on_grid:
            return logits
        return resize_to_input(logits, self.size, self.stride, self.offset)


def grid_labels(labels: Tensor, stride: int, offset: float, grid: tuple[int, int]) -> Tensor:
    """The labels at the output grid's cell centres (pixel ``stride * i + offset``, the
    nearest pixel when the offset is fractional): DeepLab's training on labels shrunk by
    the output stride, instead of scores upsampled to every pixel."""
    start = int(round(offset))
    return labels[..., start::stride, start::stride][..., :grid[0], :grid[1]]


def batch_indices(iteration: int, batch_size: int, count: int, seed: int) -> list[int]:
    """The training indices of ``iteration``: epochs of a permutation seeded by (seed,
    epoch), read in order; a function of its arguments only, so a resumed run draws the
    same batches."""
    out = []
    for pos in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, k = divmod(pos, count)
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        out.append(int(torch.randperm(count, generator=g)[k]))
    return out


def _packed(cache: TapCache, idx: list[int]) -> Tensor:
    feats = cache.features(idx)
    return torch.cat([feats[t] for t in cache.tap_names], dim=1)


def _labels(cache: TapCache, idx: list[int], net: PackedHead) -> Tensor:
    labels = torch.stack([cache.train_label(i) for i in idx])
    if not net.loss_on_grid:
        return labels
    grid = tuple(cache.meta["tap_shapes"][cache.tap_names[0]][-2:])
    return grid_labels(labels, net.stride, net.offset, grid)


@torch.no_grad()
def evaluate_head(net: PackedHead, cache: TapCache, num_classes: int, mean_iu: str
                  ) -> dict[str, Any]:
    """Metrics over the cached split, logits bilinearly resized to each full label."""
    net.eval()
    metrics = SegmentationMetrics(num_classes, skip_absent=mean_iu == "present")
    for i in range(len(cache)):
        logits = net(_packed(cache, [i]))
        target = cache.full_label(i)
        if tuple(logits.shape[-2:]) != tuple(target.shape):
            logits = F.interpolate(logits, size=tuple(target.shape), mode="bilinear",
                                   align_corners=False)
        metrics.update(logits.argmax(1)[0], target)
    net.train()
    return metrics.compute()


@torch.no_grad()
def feature_norms(net: PackedHead, cache: TapCache, images: int = NORM_IMAGES
                  ) -> dict[str, Any]:
    """Mean per-pixel L2 norm (across channels) of every cached tap and of the head's own
    ``feature_maps`` (VGG: fc7, pool6) over the first validation images, in eval mode: the
    paper's Fig. 2 quantity, in the study's feature_norms.json format."""
    net.eval()
    sums: dict[str, float] = {}
    count = min(images, len(cache))
    for i in range(count):
        taps = {t: v[None] for t, v in cache.features(i).items()}
        maps = {**taps, **(net.head.feature_maps(taps) if hasattr(net.head, "feature_maps")
                           else {})}
        for t, x in maps.items():
            sums[t] = sums.get(t, 0.0) + float(x.float().norm(dim=1).mean())
    net.train()
    return {"images": count, "input_scale": None, "after_l2norm": {},
            "feature_norm": {t: v / count for t, v in sums.items()}}


def _caches(config: Config, val: Any, trunk: nn.Module, preprocessing: Any,
            resolution: tuple[int, int], cache_root: str | Path, progress: bool
            ) -> dict[str, TapCache]:
    tid = trunk_id(trunk)
    out = {}
    for split in ("val", "train"):
        data = val if split == "val" else raw_split(config.data, split)
        out[split] = build_cache(trunk, data, root=cache_root, trunk_id=tid,
                                 resolution=resolution, preprocessing=preprocessing,
                                 dataset_id=dataset_id(config.data, split, data),
                                 progress=progress)
    return out


def _trunk_with_taps(config: Config, model: nn.Module, num_classes: int,
                     taps: Sequence[str]) -> nn.Module:
    """The frozen trunk of ``config``'s model, computing ``taps`` (a superset of what its
    head reads), so that rows reading fewer taps share one cache with the widest row."""
    from parsenet.recipe import build_model_from_config

    needed = {*model.features, *([model.context_source] if model.context_source else [])}
    if not needed <= set(taps):
        raise ConfigError(f"cache_features {list(taps)} lack the head's taps "
                          f"{sorted(needed - set(taps))}")
    # No weights entry: the row's own trunk weights are copied in below (an untrained trunk
    # too), so the file is not read twice. Only the taps read differ.
    wide = config.model.model_copy(update={"args": {**config.model.args,
                                                    "features": list(taps), "weights": None}})
    with torch.random.fork_rng():  # the head's RNG stream is the narrow row's own
        wide_model = build_model_from_config(wide, num_classes=num_classes)
    wide_model.backbone.load_state_dict(model.backbone.state_dict())
    return SPLITS[config.model.name](wide_model)[0]


def _build(config: Config, val: Any, resolution: tuple[int, int], cache_root: str | Path,
           progress: bool, loss_on_grid: bool = False, cache_features: Sequence[str] = ()
           ) -> tuple[PackedHead, dict[str, TapCache], int, nn.Module]:
    from parsenet.recipe import build_model_from_config

    if config.model.name not in SPLITS:
        raise ValueError(f"model {config.model.name!r} has no trunk/head split; known: "
                         f"{sorted(SPLITS)}")
    torch.manual_seed(config.train.seed)  # the head's initialisation
    num_classes = len(val.classes)
    model = build_model_from_config(config.model, num_classes=num_classes)
    trunk, head = SPLITS[config.model.name](model)
    if cache_features:
        trunk = _trunk_with_taps(config, model, num_classes, cache_features)
    caches = _caches(config, val, trunk, model.preprocessing, resolution, cache_root, progress)
    channels = {t: int(caches["train"].meta["tap_shapes"][t][0])
                for t in caches["train"].tap_names}
    net = PackedHead(head, channels, resolution, trunk.output_stride, trunk.grid_offset,
                     loss_on_grid)
    return net, caches, num_classes, model


def _optimizer_and_schedule(net: nn.Module, t: Any) -> tuple[Any, Any]:
    optimizer = build_optimizer(net, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                                new_layer_lr_mult=t.new_layer_lr_mult,
                                bias_lr_mult=t.bias_lr_mult, bias_decay=t.bias_decay)
    scheduler = build_scheduler(optimizer, max_iterations=t.iterations, power=t.poly_power,
                                warmup_iterations=t.warmup_iterations, policy=t.lr_policy)
    return optimizer, scheduler


def train_cached(config: Config, *, resolution: tuple[int, int],
                 cache_root: str | Path = "runs/cache", progress: bool = True,
                 loss_on: str = "input", loss_stride: int = 1,
                 cache_features: Sequence[str] = ()) -> dict[str, Any]:
    """Train (or resume, or finish) the head of ``config``'s model on cached trunk features
    at ``resolution`` (H, W); returns the results written to ``train.out_dir``.

    ``loss_on``: ``"input"`` (our trainer's convention: scores upsampled to the input,
    loss on every pixel) or ``"grid"`` (labels sampled at the output grid's cell centres,
    DeepLab's; several times cheaper, the upsampling and its backward dominate a head
    step). ``loss_stride`` > 1 (with ``"input"``): the training loss on every
    loss_stride-th pixel of each row and column (:mod:`parsenet.apps.study.pixel_subsample`).
    Evaluation is at full label resolution either way. ``cache_features``: the taps the
    trunk caches, when wider than the head's (empty: the model's own)."""
    if loss_on not in ("input", "grid"):
        raise ValueError(f"loss_on must be 'input' or 'grid', got {loss_on!r}")
    if loss_on == "grid" and loss_stride > 1:
        raise ValueError("loss_stride applies to loss_on='input' only")
    t = config.train
    out = Path(t.out_dir)
    val = raw_split(config.data, "val")  # scanned once: its classes and palette go in files
    net, caches, num_classes, model = _build(config, val, resolution, cache_root, progress,
                                             loss_on == "grid", cache_features)
    train_net = SubsampledScores(net, loss_stride) if loss_stride > 1 else net
    optimizer, scheduler = _optimizer_and_schedule(net, t)
    ckpt, start, wall = out / "checkpoints" / "last.pt", 0, 0.0
    if ckpt.is_file():
        state = load_checkpoint(ckpt)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start, wall = int(state["iteration"]), float(state.get("wall_s", 0.0))
    log = RunLog(out, resume_from=start if start else None, tensorboard=False)
    save_config(config, out / "config.yaml")

    def checkpoint(iteration: int) -> None:
        save_checkpoint(ckpt, {
            "format": CHECKPOINT_FORMAT, "iteration": iteration, "model": net.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": rng_state(), "config": config_to_dict(config),
            "classes": list(val.classes), "preprocessing": {},
            "wall_s": wall + time.perf_counter() - began})

    amp, device, ctx = resolve_amp(t.amp, torch.device("cpu")), torch.device("cpu"), DistContext()
    train_cache, began, loss = caches["train"], time.perf_counter(), math.nan
    weights = class_weights(t.class_weights, lambda i: train_cache.full_label(i).numpy(),
                            len(train_cache), num_classes)
    net.train()
    for it in tqdm(range(start, t.iterations), initial=start, total=t.iterations,
                   desc=f"head {out.name}", disable=not progress):
        idx = batch_indices(it, t.batch_size, len(train_cache), t.seed)
        labels = _labels(train_cache, idx, net)
        if loss_stride > 1:
            labels = train_net.subsample(labels)
        batch = [(_packed(train_cache, idx), labels, None)]
        loss, _ = run_iteration(train_net, batch, False, t.loss_reduction, ctx=ctx,
                                device=device,
                                amp=amp, scaler=None, optimizer=optimizer, scheduler=scheduler,
                                class_weights=weights)
        if not math.isfinite(loss):
            log.log("diverged", it + 1, loss=loss)
            raise TrainingDivergedError(f"{out}: loss became {loss} at iteration {it + 1} "
                                        f"(lr {t.lr}, {t.loss_reduction} loss)")
        if (it + 1) % t.log_every == 0 or it == start:
            log.log("train", it + 1, loss=loss, lr=scheduler.get_last_lr()[0])
        if (it + 1) % t.checkpoint_every == 0 and it + 1 < t.iterations:
            checkpoint(it + 1)
    checkpoint(t.iterations)
    wall += time.perf_counter() - began
    _save_model(out / "checkpoints" / "model.pt", config, val, model, t.iterations)
    result = _finish(config, net, caches, num_classes, log, out, resolution, wall, loss,
                     amp.name)
    if loss_stride > 1:
        _record_loss_stride(out, loss_stride)
    return result


def _save_model(path: Path, config: Config, val: Any, model: nn.Module, iteration: int
                ) -> None:
    """The whole model (frozen trunk + trained head) as a trainer checkpoint without the
    optimiser: ``load_model``, ``parsenet eval/predict --checkpoint`` and
    ``model.init_from`` read it like one of the trainer's."""
    save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "iteration": iteration, "model": model.state_dict(),
        "config": config_to_dict(config), "classes": list(val.classes),
        "palette": [list(map(int, c)) for c in val.palette],
        "preprocessing": model.preprocessing.to_dict(), "best_mean_iou": None})


def _record_loss_stride(out: Path, loss_stride: int) -> None:
    """Beside the run's figures: the config does not hold the loss stride."""
    for name in ("metrics.json", "results.json"):
        record = json.loads((out / name).read_text())
        (out / name).write_text(json.dumps({**record, "loss_stride": loss_stride},
                                           indent=1) + "\n")


def _finish(config: Config, net: PackedHead, caches: dict[str, TapCache], num_classes: int,
            log: RunLog, out: Path, resolution: tuple[int, int], wall: float, loss: float,
            amp: str) -> dict[str, Any]:
    from parsenet.apps.study.cached.curve import plot_curve

    t = config.train
    metrics = evaluate_head(net, caches["val"], num_classes, config.eval.mean_iu)
    summary = {k: metrics[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")}
    log.log("val", t.iterations, **summary)
    log.close()
    scales = {n.removesuffix(".weight"): float(p.detach().abs().mean())
              for n, p in net.named_parameters() if ".norms." in n}
    result = {"iteration": t.iterations, "final_loss": loss, "wall_time_s": wall,
              "images_per_s": t.iterations * t.batch_size / max(wall, 1e-9),
              "metrics": metrics, "engine": "cached", "amp": amp,
              "resolution": list(resolution),
              "loss_on": "grid" if net.loss_on_grid else "input",
              "val_images": len(caches["val"]), "train_images": len(caches["train"]),
              "cache": {s: str(c.path) for s, c in caches.items()},
              "l2norm_scale_mean": scales, "config": config_to_dict(config)}
    (out / "feature_norms.json").write_text(json.dumps(
        feature_norms(net, caches["val"]) | {"l2norm_scale_mean": scales}, indent=1) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.json").write_text(json.dumps(
        {k: v for k, v in result.items() if k != "metrics"} | {"summary": summary},
        indent=1) + "\n")
    plot_curve(out / "log.jsonl", out / "curve.png", title=out.parent.name + "/" + out.name)
    return result
