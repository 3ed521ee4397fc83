"""Checkpoints: atomic save, safe load (``weights_only=True``), exact resume, model rebuild.

A training checkpoint is a dict of plain containers and tensors only, so that it loads with
``torch.load(weights_only=True)`` (no unpickling of arbitrary objects):

    format        CHECKPOINT_FORMAT
    iteration     completed iterations
    model         model state dict (unwrapped from DDP)
    optimizer     optimizer state dict
    scheduler     LambdaLR state dict
    scaler        GradScaler state dict, or None
    rng           {"world_size": N, "ranks": [rng_state() of each rank]}: torch CPU, CUDA,
                  numpy and python random states (see :func:`rng_state`)
    sampler       the training sampler's position, see :mod:`parsenet.engine.sampler`
    config        the resolved config as a dict
    classes       list of class names; palette: K x 3 list of ints
    preprocessing Preprocessing.to_dict() of the weights
    best_mean_iou best validation mean IoU so far (or None)
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parsenet.config import ConfigError, config_from_dict
from parsenet.disk_full import is_disk_full
from parsenet.engine.loaded import LoadedModel, palette_tuple
from parsenet.errors import CheckpointError, WeightsError  # noqa: F401  (re-exported)
from parsenet.models import build_model
from parsenet.preprocessing import Preprocessing
from parsenet.safe_load import load_weights_only
from parsenet.weights_api import InMemory, ModelWeights

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint",
           "load_model", "LoadedModel", "palette_tuple", "check_resumable", "rng_state",
           "set_rng_state", "remove_partial_checkpoints"]

CHECKPOINT_FORMAT = 1
_REQUIRED = ("format", "iteration", "model", "config", "classes", "preprocessing")


# The names save_checkpoint's tempfile.mkstemp gives: ".<name>.<8 of [a-z0-9_]>.tmp".
_PARTIAL = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def remove_partial_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed :func:`save_checkpoint` left in ``directory``
    (only names of that pattern whose final file name ends in .pt); returns them. Call it
    only while no other process can be saving there (the trainer holds the run lock)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        match = _PARTIAL.fullmatch(path.name)
        if match and match["name"].endswith(".pt") and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a reader (or a crash at any moment) sees
    either the previous file or the complete new one, never a partial file.

    The data goes to a temporary file in the same directory, is flushed and fsync'ed, then
    renamed over ``path`` with ``os.replace`` (atomic on POSIX and Windows within one
    file system); the directory is fsync'ed so the rename itself survives a power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as e:
        Path(tmp_name).unlink(missing_ok=True)
        if is_disk_full(e):
            kept = ("the previous checkpoint is kept); free space and resume" if path.is_file()
                    else "nothing written); free space and try again")
            raise CheckpointError(f"{path}: cannot write checkpoint: no space left on the "
                                  f"device ({kept}") from None
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint on the CPU with ``weights_only=True``, or a converted
    model's ``.safetensors`` (:mod:`parsenet.model_file`) as the same dict.

    Raises :class:`CheckpointError` naming the file when it is missing, unreadable
    (truncated or corrupt) or not a parsenet checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":  # a converted model (parsenet convert caffe)
        from parsenet.model_file import read_model_file

        return {"format": CHECKPOINT_FORMAT, **read_model_file(path)}
    state = load_weights_only(path, CheckpointError, "parsenet checkpoint")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a parsenet checkpoint (holds a "
                              f"{type(state).__name__}, expected a dict)")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a parsenet checkpoint (missing {missing})")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']!r} is not supported "
                              f"(this version reads {CHECKPOINT_FORMAT})")
    return state


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model stored in a checkpoint and load its weights.

    The model is built by name from the stored config, its weights a whole-model entry of
    the stored state and preprocessing (so ``model.preprocessing`` is the stored one). It is
    returned in eval mode on ``device``, with the checkpoint's config, classes, palette,
    preprocessing, iteration and best validation mean IoU (:class:`LoadedModel`).
    """
    state = load_checkpoint(path)
    try:
        config = config_from_dict(state["config"], where="")  # the message names path
    except ConfigError as e:
        raise CheckpointError(f"{path}: stored config does not fit this version: {e}") from None
    args = dict(config.model.args)
    stored = Preprocessing.from_dict(state["preprocessing"])
    args["weights"] = ModelWeights(InMemory(state["model"], str(path)), stored)
    try:
        model = build_model(config.model.name, num_classes=len(state["classes"]), **args)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not fit model {config.model.name!r}: "
                              f"{str(e).splitlines()[0]}") from None
    model.to(device).eval()
    return LoadedModel(model=model, config=config, classes=tuple(state["classes"]),
                       palette=palette_tuple(state.get("palette")),
                       preprocessing=stored, iteration=int(state["iteration"]),
                       best_mean_iou=state.get("best_mean_iou"))


def init_from_file(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load every weight of ``model`` from ``path`` (``model.init_from``): one of our
    checkpoints or a state-dict file (safetensors or weights_only), strictly."""
    from parsenet.weights_api import read_state_dict

    try:
        state = read_state_dict(path)
    except WeightsError as e:
        raise CheckpointError(f"model.init_from: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise CheckpointError(f"model.init_from: {path}: weights do not fit the model: "
                              f"{detail}") from None


def _differences(stored: Any, here: Any, where: str) -> list[str]:
    """Dotted keys where two config dicts differ, as 'key: checkpoint X, config Y'."""
    if isinstance(stored, dict) and isinstance(here, dict):
        return [d for k in sorted(set(stored) | set(here), key=str)
                for d in _differences(stored.get(k), here.get(k), f"{where}.{k}")]
    return [] if stored == here else [f"{where}: checkpoint {stored!r}, config {here!r}"]


def check_resumable(state: dict[str, Any], path: str | os.PathLike,
                    model_config: dict[str, Any], classes: list[str]) -> None:
    """Raise :class:`CheckpointError` unless a run with this model config (a dict) and these
    classes can continue from ``state``. The source of pretrained weights may differ: the
    checkpoint supplies every weight."""
    def architecture(model: dict[str, Any]) -> dict[str, Any]:
        args = {k: v for k, v in model.get("args", {}).items() if k != "weights"}
        return {**model, "args": args}

    diff = _differences(architecture(state["config"]["model"]), architecture(model_config),
                        "model")
    if diff:
        raise CheckpointError(f"{path}: was trained with another model config "
                              f"({'; '.join(diff)})")
    if list(state["classes"]) != list(classes):
        raise CheckpointError(f"{path}: classes {state['classes']} differ from the "
                              f"dataset's {classes}")


def rng_state() -> dict[str, Any]:
    """Every global random state, as tensors / lists / numbers (safe for weights_only)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
