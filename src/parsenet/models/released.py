"""Released models: trained ParseNets shipped with the package, typed weights entries.

Each entry is a pair of package-data files in ``parsenet/released/``: ``<name>.safetensors``
(the model's state dict in fp16, loaded back as fp32) and ``<name>.json`` (its card: model
name and arguments, classes, palette, preprocessing, the training config, the recipe, the
exact command, commit, CPU, wall time and the val figures). A :class:`Release` is a
whole-model :class:`~parsenet.weights_api.ModelWeights` entry whose preprocessing and meta
come from its card; :class:`ReleasedWeights` is their enum.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from parsenet.errors import UsageError, WeightsError
from parsenet.models.builders import build_model
from parsenet.preprocessing import IMAGENET, Preprocessing
from parsenet.weights_api import ModelWeights, WeightsEnum, WeightsSource

__all__ = ["ReleasedWeights", "Release", "released"]

RELEASE_DIR = "released"


@dataclass(frozen=True)
class Fp16Safetensors(WeightsSource):
    """A released state dict: fp16 safetensors, read back as fp32."""

    path: Path

    def read(self) -> dict[str, Tensor]:
        from safetensors.torch import load_file

        if not self.path.is_file():
            raise WeightsError(f"{self.path}: released weights missing from the package")
        return {k: (v.float() if v.is_floating_point() else v)
                for k, v in load_file(str(self.path)).items()}


@dataclass(frozen=True)
class Release(ModelWeights):
    """One released model: ``<name>.safetensors`` + ``<name>.json`` (see the module
    docstring). Made with :meth:`from_card`."""

    name: str = ""

    @classmethod
    def from_card(cls, name: str, root: str | os.PathLike | None = None) -> Release:
        """The release ``name`` in ``root`` (default: the package's released/ folder)."""
        folder = (Path(root) if root is not None
                  else Path(str(resources.files("parsenet") / RELEASE_DIR)))
        card = folder / f"{name}.json"
        # A card absent from an install leaves an entry that available() passes over.
        meta = json.loads(card.read_text()) if card.is_file() else {}
        return cls(Fp16Safetensors(folder / f"{name}.safetensors"),
                   Preprocessing.from_dict(meta["preprocessing"]) if meta else IMAGENET,
                   meta=meta, name=name)

    @property
    def weights_path(self) -> Path:
        return self.source.path

    @property
    def is_available(self) -> bool:
        return bool(self.meta) and self.weights_path.is_file()

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model with these weights, in eval mode."""
        meta = self.meta
        args = dict(meta["model_args"], weights=self)
        model = build_model(meta["model"], num_classes=len(meta["classes"]), **args)
        return model.to(device).eval()


class ReleasedWeights(WeightsEnum):
    """Trained ParseNet weights shipped with parsenet (``parsenet models`` lists them)."""

    SIFTFLOW = Release.from_card("siftflow")
    SIFTFLOW_BASELINE = Release.from_card("siftflow_baseline")  # the same recipe, no pool6/L2Norm
    CAMVID = Release.from_card("camvid")
    CAMVID_BASELINE = Release.from_card("camvid_baseline")  # the same recipe, no pool6/L2Norm
    STANFORD = Release.from_card("stanford")
    STANFORD_BASELINE = Release.from_card("stanford_baseline")  # no pool6/L2Norm: best val

    @classmethod
    def available(cls) -> list[ReleasedWeights]:
        return [m for m in cls if m.value.is_available]


def released(name: str) -> Release:
    """The release named ``name`` (case-insensitive, e.g. ``siftflow``)."""
    for member in ReleasedWeights:
        if member.value.name == name.lower() or member.name == name.upper():
            if not member.value.is_available:
                break
            return member.value
    known = ", ".join(m.value.name for m in ReleasedWeights.available()) or "none"
    raise UsageError(f"--model {name!r}: no such released model (available: {known})")

