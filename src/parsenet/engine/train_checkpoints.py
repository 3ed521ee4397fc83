"""The trainer's checkpoints: what a training checkpoint holds, when one may be written, and
resuming from one. A mixin of the trainer's run (:mod:`parsenet.engine.trainer`), whose
attributes it reads; the file format itself is :mod:`parsenet.engine.checkpoint`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from parsenet.config import Config, config_from_dict, config_to_dict
from parsenet.engine import checkpoint as ckpt
from parsenet.engine import distributed as dist_utils
from parsenet.engine.optim import lr_factor
from parsenet.engine.rundir import resume_changes
from parsenet.engine.runlog import RunLog
from parsenet.engine.sampler import ResumableSampler
from parsenet.errors import TrainingDivergedError
from parsenet.preprocessing import Preprocessing

# The run's messages stay under the trainer's logger, the one users filter on.
log = logging.getLogger("parsenet.engine.trainer")


class TrainingCheckpoints:
    """Saving and resuming for the trainer's run; the attributes below are the run's."""

    config: Config
    ctx: dist_utils.DistContext
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    sampler: ResumableSampler
    runlog: RunLog
    classes: list[str]
    palette: list[list[int]]
    preprocessing: Preprocessing
    last_path: Path
    best_mean_iou: float | None
    last_good: str
    resume_changes: list[str]

    def _resume(self) -> int:
        state = ckpt.load_checkpoint(self.last_path)
        path = self.last_path
        ckpt.check_resumable(state, path, config_to_dict(self.config)["model"], self.classes)
        # Through config_from_dict: fields added since the checkpoint compare as defaults.
        stored = config_to_dict(config_from_dict(state["config"], where=f"{path}: config"))
        self.resume_changes = resume_changes(stored, config_to_dict(self.config), str(path))
        if self.resume_changes and self.ctx.is_main:
            log.warning("%s: resuming with changed settings (applied): %s", path,
                        "; ".join(self.resume_changes))
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, RuntimeError, KeyError) as e:
            raise ckpt.CheckpointError(f"{path}: cannot resume from it: {e}") from None
        # The schedule follows this config (a resume may extend train.iterations).
        t = self.config.train
        self.scheduler.lr_lambdas[0] = lr_factor(t.lr_policy, max_iterations=t.iterations,
                                                 power=t.poly_power,
                                                 warmup_iterations=t.warmup_iterations)
        if not self.sampler.load_state_dict(state["sampler"]):
            log.warning("%s: dataset size, seed or process count changed; the resumed run "
                        "continues at the same sample count but not the same sample order",
                        path)
        if state["rng"]["world_size"] == self.ctx.world_size:
            ckpt.set_rng_state(state["rng"]["ranks"][self.ctx.rank])
        self.best_mean_iou = state.get("best_mean_iou")
        self.last_good = f"{path} (iteration {int(state['iteration'])})"
        return int(state["iteration"])

    def _state(self, iteration: int) -> dict[str, Any]:
        # RNG states of every rank, so that each continues its own stream.
        local = ckpt.rng_state()
        ranks = [local]
        if self.ctx.enabled:
            ranks = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(ranks, local)
        return {
            "format": ckpt.CHECKPOINT_FORMAT, "iteration": iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": {"world_size": self.ctx.world_size, "ranks": ranks},
            "sampler": self.sampler.state_dict(iteration * self.config.train.batch_size
                                               * self.config.train.accumulate),
            "config": config_to_dict(self.config),
            "classes": self.classes, "palette": self.palette,
            "preprocessing": self.preprocessing.to_dict(),
            "best_mean_iou": self.best_mean_iou,
        }

    def _save(self, iteration: int, path: Path) -> None:
        # A finite loss can still leave overflowed weights, or BatchNorm running statistics
        # that evaluate to nothing; never replace a good checkpoint with them (the ranks
        # hold the same weights, so they all stop here together).
        bad = [name for name, value in self.model.state_dict().items()
               if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if bad:
            self.runlog.log("event", iteration, event="diverged", nonfinite=bad)
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise TrainingDivergedError(
                f"weights are NaN or infinite after iteration {iteration} ({shown}); stopped "
                f"without saving {path}. The last good checkpoint is {self.last_good}; lower "
                f"train.lr or check the data")
        state = self._state(iteration)  # collective under DDP: every rank calls it
        if self.ctx.is_main:
            ckpt.save_checkpoint(path, state)
        dist_utils.barrier(self.ctx)
        if path == self.last_path:
            self.last_good = f"{path} (iteration {iteration})"
