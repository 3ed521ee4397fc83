"""Released models: trained ParseNets shipped with the package, typed weights entries.

Each entry is a pair of package-data files in ``parsenet/released/``: ``<name>.safetensors``
(the model's state dict in fp16, loaded back as fp32) and ``<name>.json`` (its card: model
name and arguments, classes, palette, preprocessing, the training config, the recipe, the
exact command, commit, CPU, wall time and the val figures). :class:`ReleasedWeights` is the
torchvision WeightsEnum pattern: a member carries the file, the preprocessing and the meta.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from parsenet.config import config_from_dict
from parsenet.engine.checkpoint import LoadedModel, load_checkpoint, palette_tuple
from parsenet.errors import UsageError, WeightsError
from parsenet.models.builders import build_model
from parsenet.preprocessing import Preprocessing

__all__ = ["ReleasedWeights", "Release", "released", "load_released", "write_release"]

RELEASE_DIR = "released"


@dataclass(frozen=True)
class Release:
    """One released model: ``<name>.safetensors`` + ``<name>.json`` in the package."""

    name: str
    root: str | None = None  # default: the package's released/ folder

    def _path(self, suffix: str) -> Path:
        root = (Path(self.root) if self.root is not None
                else Path(str(resources.files("parsenet") / RELEASE_DIR)))
        return root / f"{self.name}{suffix}"

    @property
    def weights_path(self) -> Path:
        return self._path(".safetensors")

    @cached_property
    def meta(self) -> dict[str, Any]:
        """The model card (see the module docstring)."""
        path = self._path(".json")
        if not path.is_file():
            raise WeightsError(f"{path}: released model card missing from the package")
        return json.loads(path.read_text())

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.meta["preprocessing"])

    def get_state_dict(self) -> dict[str, Tensor]:
        from safetensors.torch import load_file

        if not self.weights_path.is_file():
            raise WeightsError(f"{self.weights_path}: released weights missing from the package")
        return {k: (v.float() if v.is_floating_point() else v)
                for k, v in load_file(str(self.weights_path)).items()}

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model with these weights, in eval mode."""
        meta = self.meta
        args = dict(meta["model_args"], weights=None)
        model = build_model(meta["model"], num_classes=len(meta["classes"]), **args)
        model.load_state_dict(self.get_state_dict(), strict=True)
        model.preprocessing = self.preprocessing
        return model.to(device).eval()


class ReleasedWeights(Enum):
    """Trained ParseNet weights shipped with parsenet (``parsenet models`` lists them)."""

    SIFTFLOW = Release("siftflow")
    CAMVID = Release("camvid")
    STANFORD = Release("stanford")
    STANFORD_BASELINE = Release("stanford_baseline")  # no pool6/L2Norm: best Stanford val

    @classmethod
    def available(cls) -> list[ReleasedWeights]:
        return [m for m in cls if m.value.weights_path.is_file()]


def released(name: str) -> Release:
    """The release named ``name`` (case-insensitive, e.g. ``siftflow``)."""
    for member in ReleasedWeights:
        if member.value.name == name.lower() or member.name == name.upper():
            if not member.value.weights_path.is_file():
                break
            return member.value
    known = ", ".join(m.value.name for m in ReleasedWeights.available()) or "none"
    raise UsageError(f"--model {name!r}: no such released model (available: {known})")


def load_released(name: str | Release, device: str | torch.device = "cpu") -> LoadedModel:
    """The release as :func:`parsenet.engine.checkpoint.load_model` returns a checkpoint."""
    release = released(name) if isinstance(name, str) else name
    meta = release.meta
    config = config_from_dict(meta["config"], f"released model {release.name}: config")
    return LoadedModel(model=release.build(device), config=config,
                       classes=tuple(meta["classes"]), palette=palette_tuple(meta["palette"]),
                       preprocessing=release.preprocessing, iteration=int(meta["iteration"]))


def write_release(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, name: str,
                  card: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (fp16) and ``<name>.json`` from a training checkpoint;
    ``card`` adds the recipe, command, commit, CPU, time and figures."""
    from safetensors.torch import save_file

    state = load_checkpoint(checkpoint)
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous()
               for k, v in state["model"].items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, meta_path = out_dir / f"{name}.safetensors", out_dir / f"{name}.json"
    save_file(tensors, str(weights))
    config = state["config"]
    meta = {"name": name, "model": config["model"]["name"],
            "model_args": {k: v for k, v in config["model"]["args"].items() if k != "weights"},
            "classes": list(state["classes"]), "palette": state.get("palette"),
            "preprocessing": state["preprocessing"], "iteration": int(state["iteration"]),
            "config": config, **card}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return weights, meta_path
