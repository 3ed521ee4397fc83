"""A training checkpoint written as a released model: the pair of files that
:class:`parsenet.models.released.Release` reads (``<name>.safetensors`` and ``<name>.json``).
It lives in the engine, above the models, because it reads a training checkpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parsenet.engine.checkpoint import load_checkpoint

__all__ = ["write_release", "with_eval_overrides"]


def write_release(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, name: str,
                  card: dict[str, Any], eval_overrides: Mapping[str, Any] | None = None
                  ) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (fp16) and ``<name>.json`` from a training checkpoint;
    ``card`` adds the recipe, command, commit, CPU, time and figures. ``eval_overrides``
    (e.g. ``{"mode": "multiscale", "flip": True}``) become the release's default evaluation,
    which ``parsenet eval --model`` and ``predict`` use; they are checked like a config."""
    from safetensors.torch import save_file

    state = load_checkpoint(checkpoint)
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous()
               for k, v in state["model"].items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, meta_path = out_dir / f"{name}.safetensors", out_dir / f"{name}.json"
    save_file(tensors, str(weights))
    config = state["config"]
    if eval_overrides:
        config = with_eval_overrides(config, eval_overrides, name)
    meta = {"name": name, "model": config["model"]["name"],
            "model_args": {k: v for k, v in config["model"]["args"].items() if k != "weights"},
            "classes": list(state["classes"]), "palette": state.get("palette"),
            "preprocessing": state["preprocessing"], "iteration": int(state["iteration"]),
            "config": config, **card}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return weights, meta_path


def with_eval_overrides(config: dict[str, Any], overrides: Mapping[str, Any],
                        name: str) -> dict[str, Any]:
    """``config`` (a release's config dict) with ``overrides`` in its ``eval``, checked like
    a config (unknown keys and bad values are refused, naming ``name``); ``config`` itself
    is not changed."""
    from parsenet.config import config_from_dict

    config = {**config, "eval": {**config["eval"], **overrides}}
    config_from_dict(config, f"{name}: eval overrides")
    return config
