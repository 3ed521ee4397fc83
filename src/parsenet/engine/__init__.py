"""Training and inference engine: where models, data, devices and processes meet.

    from parsenet.engine import train, load_model, load_released
    result = train(load_config("configs/demo.yaml"))
    loaded = load_model(result["last_checkpoint"])  # .model, .config, .classes, ...
    loaded = load_released("siftflow")               # the same fields, for a released model

trainer      the training loop (``train``), TrainingDivergedError
train_checkpoints  what a training checkpoint holds, when one is written, resuming
checkpoint   atomic save, safe load, ``load_model``, CheckpointError
loaded       ``LoadedModel`` (a model with its config, classes, palette, preprocessing),
             ``load_released``
optim        parameter groups (10x new layers, no decay on norms/biases), poly LR
sampler      endless, seeded, resumable sampler; per-sample augmentation seeds
distributed  torchrun environment, process group, DDP wrapping, SIGTERM flag
precision    device and autocast decisions
runlog       log.jsonl + TensorBoard
inference    whole / sliding-window / multi-scale prediction
inferencer   the one inference object (mode by a memory estimate, backends) of predict,
             eval and serve
evaluation   ``evaluate``: a dataset's confusion matrix through the inferencer
export       ONNX / TorchScript export

Names are imported lazily so that ``import parsenet.engine.inference`` does not pull in
the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["train", "TrainingDivergedError", "load_model", "load_checkpoint",
           "save_checkpoint", "CheckpointError", "LoadedModel", "load_released"]

_WHERE = {
    "train": "trainer", "TrainingDivergedError": "trainer",
    "load_model": "checkpoint", "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint", "CheckpointError": "checkpoint",
    "LoadedModel": "loaded", "load_released": "loaded",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"parsenet.engine.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'parsenet.engine' has no attribute {name!r}")
