"""The files ``parsenet convert caffe`` writes: safetensors with a card in their metadata.

Two kinds, told apart by the metadata key ``parsenet.kind``:

* ``model``: a whole ``parsenet_vgg16`` state dict; the card (``parsenet.card``, JSON)
  holds the builder arguments, classes, palette, preprocessing and a config, so that
  ``parsenet eval --checkpoint``, ``predict`` and ``export`` load it as they load one of our
  training checkpoints (:func:`read_model_file`, called by
  :func:`parsenet.engine.checkpoint.load_checkpoint` for a ``.safetensors`` path).
* ``vgg16``: an ImageNet trunk (conv1_1 ... fc7) in the flat layout
  :class:`parsenet.backbones.weights.VGG16Weights` loads (``conv{k}.*``, ``fc6.*``,
  ``fc7.*``), for ``model.args.weights``; ``parsenet.preprocessing`` (JSON) says how its
  images are prepared.

safetensors holds tensors and a str -> str map and nothing else, so reading one never runs
code (no pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from parsenet.errors import CheckpointError, WeightsError
from parsenet.preprocessing import Preprocessing

__all__ = ["KIND_KEY", "write_model_file", "read_metadata", "read_model_file",
           "file_preprocessing"]

KIND_KEY = "parsenet.kind"
CARD_KEY = "parsenet.card"
PREPROCESSING_KEY = "parsenet.preprocessing"


def write_model_file(path: str | os.PathLike, tensors: dict[str, Tensor], kind: str,
                     card: dict[str, Any]) -> Path:
    """Write ``tensors`` with the card; the file appears whole or not at all."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {KIND_KEY: kind, CARD_KEY: json.dumps(card),
            PREPROCESSING_KEY: json.dumps(card["preprocessing"])}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except Exception as e:  # safetensors' own error type for a failed write (disk full)
        if isinstance(e, OSError):
            raise
        raise WeightsError(f"{path}: cannot write ({str(e).splitlines()[0]})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file ({} when it has none); WeightsError if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise WeightsError(f"{path}: cannot read safetensors header "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                           ) from None


def file_preprocessing(meta: dict[str, str]) -> Preprocessing | None:
    """The preprocessing a converted file records, or None for any other file."""
    if PREPROCESSING_KEY not in meta:
        return None
    return Preprocessing.from_dict(json.loads(meta[PREPROCESSING_KEY]))


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """A converted whole-model file as the dict a training checkpoint holds (``model``,
    ``config``, ``classes``, ``palette``, ``preprocessing``, ``iteration`` 0), without
    ``format``. CheckpointError naming ``path`` when it is not one."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if meta.get(KIND_KEY) != "model":
        what = ("an ImageNet VGG-16 trunk: give it as model.args.weights for training"
                if meta.get(KIND_KEY) == "vgg16" else "no parsenet card in its metadata")
        raise CheckpointError(f"{path}: not a whole parsenet model ({what})")
    try:
        card = json.loads(meta[CARD_KEY])
        tensors = load_file(str(path))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged parsenet card ({e})") from None
    except Exception as e:  # a truncated tensor section
        raise CheckpointError(f"{path}: cannot read tensors ({type(e).__name__})") from None
    return {"iteration": 0, "model": tensors, "config": card["config"],
            "classes": card["classes"], "palette": card.get("palette"),
            "preprocessing": card["preprocessing"]}
