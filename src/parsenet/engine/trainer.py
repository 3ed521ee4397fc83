"""The training loop: ``train(config)`` reads top to bottom like torchvision's segmentation
reference recipe.

    device, precision, process group -> seeds -> datasets -> model -> optimizer + poly LR
    -> endless seeded loader -> (resume) -> loop: accumulate micro-batches, check the loss,
    step, log, validate, checkpoint -> final validation -> metrics.json

Batch size is per process and per micro-batch: one iteration sees
``batch_size * accumulate * world_size`` images. The loss of an iteration is the same
whichever way those images are split over micro-batches and processes:

    mean  cross-entropy summed over every non-ignored pixel of the iteration, divided by the
          number of those pixels (counted over all micro-batches and all ranks).
    sum   summed over each image's pixels and averaged over the iteration's images: Caffe's
          ``normalize: false`` (normalisation by batch size, and by ``iter_size``).

Each micro-batch's backward uses that global denominator (times the world size, since DDP
averages gradients over ranks), so ``accumulate=2`` with batch 2 gives the gradient of batch
4, and 2 ranks x batch 2 give that of 1 process x batch 4.

Files in ``train.out_dir``: config.yaml, log.jsonl, checkpoints/last.pt (and best.pt, by
validation mean IoU), metrics.json. SIGTERM (a scheduler's preemption) saves last.pt at the
end of the current iteration and exits with status 143; ``train(config, resume=True)``
continues exactly where it stopped.

``train.frozen_prefix`` freezes the backbone up to a stage; with its ``cache`` the training
samples are stride-aligned crops of that prefix's output, computed once per image, scale and
flip, and the loss goes through the rest of the model (:mod:`parsenet.engine.frozen_prefix`).
Checkpoints, validation and everything else are the same: the model saved is the whole one.

An out_dir holds one run (:mod:`parsenet.engine.rundir`): ``run.lock`` refuses a second
concurrent run, and a fresh run into a directory holding an earlier one needs
``overwrite=True``. A checkpoint is written only if every parameter and floating buffer
(BatchNorm's running statistics too) is finite (:mod:`parsenet.engine.train_checkpoints`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from parsenet import recipe  # looked up at call time: tests wrap the builder
from parsenet.config import Config, DataConfig, check_config, save_config
from parsenet.disk_full import naming_full_disk
from parsenet.engine import distributed as dist_utils
from parsenet.engine.checkpoint import init_from_file
from parsenet.engine.class_weights import class_weights
from parsenet.engine.crop_memory import check_crop_fits
from parsenet.engine.frozen_prefix import (
    PrefixRest,
    cached_training_set,
    freeze_prefix,
    prefix_to_eval,
)
from parsenet.engine.iteration import (
    IGNORE_INDEX,
    Batch,
    loss_pixels,
    micro_batches,
    run_iteration,
)
from parsenet.engine.optim import (
    build_optimizer,
    build_scheduler,
    freeze,
    norm_stats_to_eval,
    pretrained_parameter_names,
)
from parsenet.engine.precision import resolve_amp, resolve_device
from parsenet.engine.rundir import claim_out_dir
from parsenet.engine.runlog import RunLog, to_jsonable
from parsenet.engine.sampler import (
    ResumableSampler,
    SeededSamples,
    seed_everything,
    stop_loader_workers,
    worker_init_fn,
)
from parsenet.engine.train_checkpoints import TrainingCheckpoints
from parsenet.errors import TrainingDivergedError  # noqa: F401  (re-exported)
from parsenet.models.weights import weights_enum_of
from parsenet.preprocessing import Preprocessing, preprocessing_by_name

__all__ = ["train", "TrainingDivergedError", "IGNORE_INDEX"]

log = logging.getLogger(__name__)

DatasetFactory = Callable[[DataConfig, str, Preprocessing], Dataset]
EvaluateFn = Callable[..., dict]


def evaluate_default(model: torch.nn.Module, dataset: Dataset, **kwargs: Any) -> dict:
    from parsenet.engine.evaluation import evaluate

    return evaluate(model, dataset, **kwargs)


def _check_config(config: Config) -> Config:
    # Fields assigned in Python are not checked on assignment: check them all again here.
    return check_config(config)


def train(config: Config, *, resume: bool = False, overwrite: bool = False,
          dataset_factory: DatasetFactory | None = None,
          evaluate_fn: EvaluateFn | None = None) -> dict[str, Any]:
    """Train ``config``; returns final metrics and paths (see the module docstring).

    ``resume`` continues from ``<out_dir>/checkpoints/last.pt``. The config may differ from
    the checkpoint's only in :data:`parsenet.engine.rundir.APPLIED_ON_RESUME` (iterations,
    reporting intervals, progress, device, data root and workers): those changes are applied
    and logged as ``key: old -> new``; any other change (lr, batch size, seed, ...) is
    refused with the list of changes, since the restored optimizer, scheduler and sampler
    belong to the old values. ``overwrite`` starts afresh in an out_dir holding an earlier
    run, deleting its checkpoints and log; without it (or ``resume``) such a directory is
    refused.

    ``dataset_factory(data_config, split, preprocessing)`` and ``evaluate_fn(model, dataset,
    **kwargs)`` default to :func:`parsenet.recipe.datasets_from_config` (each split listed
    once) and :func:`parsenet.engine.evaluation.evaluate`; tests inject small ones.
    """
    config = _check_config(config)
    device = resolve_device(config.train.device)
    ctx = dist_utils.init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device(f"cuda:{ctx.local_rank}")
    lock = None
    try:
        lock = claim_out_dir(config.train.out_dir, ctx, resume=resume, overwrite=overwrite)
        return _Training(config, ctx, device, dataset_factory,
                         evaluate_fn or evaluate_default).run(resume)
    finally:
        if lock is not None:
            lock.release()
        dist_utils.cleanup(ctx)


class _Training(TrainingCheckpoints):
    def __init__(self, config: Config, ctx: dist_utils.DistContext, device: torch.device,
                 dataset_factory: DatasetFactory | None, evaluate_fn: EvaluateFn) -> None:
        self.config, self.ctx, self.device = config, ctx, device
        self.dataset_factory, self.evaluate_fn = dataset_factory, evaluate_fn
        t = config.train
        self.out_dir = Path(t.out_dir)
        self.last_path = self.out_dir / "checkpoints" / "last.pt"
        self.best_path = self.out_dir / "checkpoints" / "best.pt"
        self.amp = resolve_amp(t.amp, device)
        self.images_per_iteration = t.batch_size * t.accumulate * ctx.world_size
        self.best_mean_iou: float | None = None
        self.val_metrics: dict[str, Any] | None = None
        self.last_good = "none (no checkpoint was written)"  # for the divergence message
        self.resume_changes: list[str] = []

    # ----------------------------------------------------------------- setup
    def _setup(self, resume: bool) -> int:
        cfg, t = self.config, self.config.train
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        # Rank-dependent seed: dropout differs across ranks; DDP makes the weights equal.
        seed_everything(t.seed + self.ctx.rank)

        self._build_data_and_model()
        self.scheduler = build_scheduler(self.optimizer, max_iterations=t.iterations,
                                         power=t.poly_power,
                                         warmup_iterations=t.warmup_iterations,
                                         policy=t.lr_policy)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp.use_scaler else None
        self.sampler = ResumableSampler(len(self.train_set), seed=t.seed, rank=self.ctx.rank,
                                        world_size=self.ctx.world_size)
        start = self._resume() if resume else 0
        self.ddp_model = dist_utils.wrap_model(self.train_net, self.ctx, self.device)

        self.runlog = RunLog(self.out_dir, enabled=self.ctx.is_main,
                             resume_from=start if resume else None)
        if self.ctx.is_main:
            save_config(cfg, self.out_dir / "config.yaml")
            if not resume:  # a best.pt left by an earlier run in this directory
                self.best_path.unlink(missing_ok=True)
        setup = dict(device=str(self.device), amp=self.amp.name, amp_reason=self.amp.reason,
                     world_size=self.ctx.world_size, classes=len(self.classes),
                     train_images=len(self.train_set),
                     val_images=len(self.val_set) if self.val_set is not None else 0,
                     parameters=sum(p.numel() for p in self.model.parameters()),
                     images_per_iteration=self.images_per_iteration, resumed_from=start,
                     prefix_cache_s=round(self.prefix_cache_s, 1),
                     changed_on_resume=self.resume_changes)
        if self.ctx.is_main:  # the decisions, once: in the log, and on screen with progress
            summary = (f"training on {self.device}, {self.amp.name} ({self.amp.reason}), "
                       f"{self.ctx.world_size} process(es), {len(self.train_set)} training "
                       f"images{f', resuming at iteration {start}' if resume else ''}")
            log.info(summary)
            if t.progress:
                tqdm.write(summary)
        self.runlog.log("event", start, event="resume" if resume else "start", **setup)
        return start

    def _build_data_and_model(self) -> None:
        """The weights entry gives the preprocessing before anything is built, so each
        dataset is built once; the training set gives the classes, then the model is built
        and its optimizer groups follow from what the entry filled."""
        cfg, t = self.config, self.config.train
        recipe.check_model_args(cfg.model)  # a bad model key fails before the datasets load
        weights = recipe.weights_of(cfg.model)
        self.preprocessing: Preprocessing = (
            preprocessing_by_name(cfg.model.preprocessing) if cfg.model.preprocessing
            else weights_enum_of(cfg.model.name).preprocessing_of(weights))
        self.train_set, self.val_set = self._datasets()
        self.classes = list(self.train_set.classes)
        self.palette = np.asarray(self.train_set.palette).astype(int).tolist()
        weights_of_classes = class_weights(t.class_weights,
                                           lambda i: self.train_set.read_label(i),
                                           len(self.train_set), len(self.classes),
                                           progress=t.progress and self.ctx.is_main)
        self.class_weights = (None if weights_of_classes is None
                              else weights_of_classes.to(self.device))
        model = recipe.build_model_from_config(cfg.model, num_classes=len(self.classes))
        if cfg.model.init_from:
            init_from_file(model, cfg.model.init_from)
        freeze(model, cfg.model.freeze)
        prefix = t.frozen_prefix
        self.prefix_stages = freeze_prefix(model, prefix.upto) if prefix.upto else []
        self.model = model.to(self.device)
        self.loss_pixels = (loss_pixels(model.backbone.output_stride,
                                        model.backbone.grid_offset, t.loss_stride)
                            if t.loss_stride > 1 else None)
        check_crop_fits(self.model, len(self.classes), cfg.data.crop_size, t.batch_size,
                        self.device)
        # The module the loss is computed through: the model, or its rest after a cached
        # prefix (whose training samples are crops of the prefix's cached maps).
        self.train_net: torch.nn.Module = self.model
        self.prefix_cache_s = 0.0
        if prefix.cache:
            tic = time.perf_counter()
            self.train_set = cached_training_set(
                self.model, self.prefix_stages, self.train_set, cfg.data, prefix,
                self.preprocessing, progress=t.progress and self.ctx.is_main)
            self.prefix_cache_s = time.perf_counter() - tic
            self.train_net = PrefixRest(self.model, self.prefix_stages)
        self.optimizer = build_optimizer(
            self.model, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
            new_layer_lr_mult=t.new_layer_lr_mult,
            pretrained=([n for n, _ in model.named_parameters()] if cfg.model.init_from
                        else pretrained_parameter_names(model, weights)),
            bias_lr_mult=t.bias_lr_mult,
            bias_decay=t.bias_decay)

    def _datasets(self) -> tuple[Dataset, Dataset | None]:
        data = self.config.data
        if self.dataset_factory is None:  # each split's folders listed once
            # Training items carry the validity mask of their crop padding (pool6 leaves
            # it out).
            return recipe.datasets_from_config(data, self.preprocessing, with_valid=True)
        return (self.dataset_factory(data, "train", self.preprocessing),
                self.dataset_factory(data, "val", self.preprocessing) if data.val_split
                else None)

    def _loader(self) -> Iterator:
        t = self.config.train
        generator = torch.Generator().manual_seed(t.seed + self.ctx.rank)
        loader = DataLoader(
            SeededSamples(self.train_set), batch_size=t.batch_size, sampler=self.sampler,
            num_workers=self.config.data.workers, pin_memory=self.device.type == "cuda",
            worker_init_fn=worker_init_fn, generator=generator, drop_last=True,
        )
        return iter(loader)

    # ----------------------------------------------------------------- one iteration
    def _step(self, batches: list[Batch], stop: bool
              ) -> tuple[float, bool]:
        return run_iteration(self.ddp_model, batches, stop, self.config.train.loss_reduction,
                             ctx=self.ctx, device=self.device, amp=self.amp,
                             scaler=self.scaler, optimizer=self.optimizer,
                             scheduler=self.scheduler, class_weights=self.class_weights,
                             loss_pixels=self.loss_pixels)

    def _train_mode(self) -> None:
        self.model.train()
        if self.config.model.norm_eval:
            norm_stats_to_eval(self.model)
        prefix_to_eval(self.model, self.prefix_stages)

    # ----------------------------------------------------------------- validation
    def _validate(self, iteration: int) -> None:
        if self.val_set is None:
            return
        t = self.config.train
        self.model.eval()
        # Validation must not move the training random streams: a run that validates
        # (or resumes past a validation) draws the same dropout masks as one that does not.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            metrics = self.evaluate_fn(
                self.model, self.val_set, num_classes=len(self.classes),
                mode=self.config.eval.mode, device=self.device,
                max_images=t.max_val_images, progress=t.progress and self.ctx.is_main,
                eval_cfg=self.config.eval)
        self._train_mode()
        self.val_metrics = to_jsonable(metrics)
        self.runlog.log("val", iteration, **self.val_metrics)
        miou = self.val_metrics.get("mean_iou")
        if miou is not None and (self.best_mean_iou is None or miou > self.best_mean_iou):
            self.best_mean_iou = miou
            self._save(iteration, self.best_path)

    # ----------------------------------------------------------------- the loop
    def run(self, resume: bool) -> dict[str, Any]:
        wall_start = time.perf_counter()
        t = self.config.train
        start = self._setup(resume)
        loader_iter = self._loader()
        self._train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(total=t.iterations, initial=start, desc="train", dynamic_ncols=True,
                   disable=not (t.progress and self.ctx.is_main))
        train_time, loss = 0.0, float("nan")
        window_start, window_iters = time.perf_counter(), 0
        iteration = start
        try:
            with dist_utils.StopOnSigterm() as sigterm:
                while iteration < t.iterations:
                    tic = time.perf_counter()
                    batches = micro_batches(loader_iter, t.accumulate, self.device)
                    loss, stop = self._step(batches, sigterm.requested)
                    if not math.isfinite(loss):
                        self.runlog.log("event", iteration + 1, event="diverged", loss=loss)
                        raise TrainingDivergedError(
                            f"loss is {loss} at iteration {iteration + 1}; stopped without "
                            f"saving. The last good checkpoint is {self.last_good}; lower "
                            f"train.lr or check the data")
                    iteration += 1
                    train_time += time.perf_counter() - tic
                    window_iters += 1
                    # The base (pretrained-layer) rate this iteration used.
                    lr = t.lr * self.scheduler.lr_lambdas[0](iteration - 1)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                                    img_s=f"{self._rate(train_time, iteration - start):.1f}")
                    if iteration % t.log_every == 0 or iteration == t.iterations:
                        elapsed = time.perf_counter() - window_start
                        self.runlog.log("train", iteration, loss=loss, lr=lr,
                                        images_per_s=window_iters * self.images_per_iteration
                                        / max(elapsed, 1e-9))
                        window_start, window_iters = time.perf_counter(), 0
                    if t.val_every and iteration % t.val_every == 0 \
                            and iteration < t.iterations:
                        self._validate(iteration)
                    if stop or iteration % t.checkpoint_every == 0 or iteration == t.iterations:
                        self._save(iteration, self.last_path)
                    if stop:
                        self.runlog.log("event", iteration, event="sigterm")
                        raise dist_utils.StoppedBySigterm(self.last_path, self.ctx.rank)
            bar.close()
            self._validate(iteration)
            result = self._finish(iteration, loss, time.perf_counter() - wall_start,
                                  train_time, iteration - start)
        finally:
            bar.close()
            stop_loader_workers(loader_iter)
            self.runlog.close()
        return result

    def _rate(self, seconds: float, iterations: int) -> float:
        return iterations * self.images_per_iteration / max(seconds, 1e-9)

    def _finish(self, iteration: int, loss: float, wall: float, train_time: float,
                iterations_run: int) -> dict[str, Any]:
        result = {
            "metrics": self.val_metrics or {},
            "iteration": iteration,
            "final_loss": loss if math.isfinite(loss) else None,
            "best_mean_iou": self.best_mean_iou,
            "out_dir": str(self.out_dir),
            "last_checkpoint": str(self.last_path),
            "best_checkpoint": str(self.best_path) if self.best_path.exists() else None,
            "wall_time_s": wall,
            "images_per_s": self._rate(train_time, iterations_run) if iterations_run else None,
            "device": str(self.device), "amp": self.amp.name,
            "world_size": self.ctx.world_size, "rank": self.ctx.rank,
        }
        if self.ctx.is_main:
            metrics = self.out_dir / "metrics.json"
            with naming_full_disk(metrics, "the run's results", f"free space; the run's "
                                  f"weights are in {self.last_path}"):
                metrics.write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
        self.runlog.log("event", iteration, event="end", wall_time_s=wall,
                        images_per_s=result["images_per_s"])
        return result
