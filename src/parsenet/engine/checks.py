"""Settings the trainer refuses before it builds anything, each with the key it names."""

from __future__ import annotations

from parsenet.config import Config
from parsenet.engine.optim import LR_POLICIES
from parsenet.errors import ConfigError
from parsenet.metrics import MEAN_IU_CONVENTIONS
from parsenet.preprocessing import preprocessing_by_name

__all__ = ["check_train_config"]


def check_train_config(config: Config) -> None:
    """One ConfigError naming the key for a setting the trainer cannot run."""
    t = config.train
    for name in ("iterations", "batch_size", "accumulate", "log_every", "checkpoint_every"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(t, name)}")
    if t.loss_reduction not in ("mean", "sum"):
        raise ConfigError(f"train.loss_reduction must be 'mean' or 'sum', got {t.loss_reduction!r}")
    if config.model.preprocessing is not None:
        preprocessing_by_name(config.model.preprocessing)  # a ConfigError naming the key
    if config.eval.mean_iu not in MEAN_IU_CONVENTIONS:
        raise ConfigError(f"eval.mean_iu must be one of {sorted(MEAN_IU_CONVENTIONS)}, got "
                          f"{config.eval.mean_iu!r}")
    if t.lr_policy not in LR_POLICIES:
        raise ConfigError(f"train.lr_policy must be one of {LR_POLICIES}, got {t.lr_policy!r}")
    if config.data.crop_size is None and t.batch_size != 1:
        raise ConfigError(f"data.crop_size is null (whole-image training: every image keeps "
                          f"its own size) so train.batch_size must be 1, got {t.batch_size}; "
                          f"use train.accumulate for Caffe's iter_size")
    if t.val_every < 0 or t.max_val_images < 0 or t.warmup_iterations < 0:
        raise ConfigError("train.val_every, max_val_images and warmup_iterations must be >= 0")
