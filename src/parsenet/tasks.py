"""What ``parsenet eval``, ``predict`` and ``export`` do, as functions a Python user calls the
same way: the CLI only parses arguments and prints.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from parsenet.errors import UsageError

__all__ = ["evaluate_checkpoint", "predict_images", "export_checkpoint", "collect_images",
           "format_metrics", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def _jsonable(value: Any) -> Any:
    """NaN (absent classes) to None, tuples to lists: strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _config_for(checkpoint_meta: dict[str, Any], config_path: str | os.PathLike | None,
                overrides: Sequence[str]) -> Any:
    from parsenet.config import apply_overrides, config_from_dict, load_config

    if config_path is not None:
        return load_config(config_path, list(overrides))
    values = json.loads(json.dumps(checkpoint_meta["config"]))  # deep copy
    return config_from_dict(apply_overrides(values, list(overrides)), "checkpoint config")


def _load_source(source: Any, device: str) -> tuple[Any, dict[str, Any], Path]:
    """(model, meta, path) of a checkpoint path or a released model
    (:class:`parsenet.models.released.Release`; its path is runs/released/<name>)."""
    from parsenet.engine.checkpoint import load_model
    from parsenet.models.released import Release, load_released

    if isinstance(source, Release):
        model, meta = load_released(source, device)
        return model, meta, Path("runs") / "released" / source.name
    model, meta = load_model(source, device=device)
    return model, meta, Path(source)


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, config: str | os.PathLike | None = None,
                        overrides: Sequence[str] = (), split: str = "val",
                        mode: str | None = None, device: str = "cpu", max_images: int = 0,
                        out: str | os.PathLike | None = None, progress: bool = True
                        ) -> dict[str, Any]:
    """Evaluate a checkpoint on a split of its dataset (or the one ``config``/``overrides``
    describe) and write the result as JSON (default: next to the checkpoint,
    ``<stem>.eval-<split>-<mode>.json``). Returns the written dict: ``metrics`` (see
    :class:`parsenet.metrics.SegmentationMetrics`), ``classes``, ``checkpoint``, ``split``,
    ``mode``, ``iteration``, ``json``."""
    from parsenet.data.build import build_dataset
    from parsenet.engine.inference import evaluate

    model, meta, checkpoint = _load_source(checkpoint, device)
    cfg = _config_for(meta, config, overrides)
    dataset = build_dataset(cfg.data, split, preprocessing=model.preprocessing)
    classes = list(meta["classes"])
    if len(dataset.classes) != len(classes):
        raise UsageError(f"{checkpoint}: the model predicts {len(classes)} classes but the "
                         f"{split} split of {cfg.data.root} has {len(dataset.classes)}")
    mode = mode or cfg.eval.mode
    metrics = evaluate(model, dataset, num_classes=len(classes), mode=mode, device=device,
                       max_images=max_images, progress=progress, eval_cfg=cfg.eval)
    out = Path(out) if out else checkpoint.with_name(f"{checkpoint.stem}.eval-{split}-{mode}.json")
    result = {"checkpoint": str(checkpoint), "iteration": meta["iteration"], "split": split,
              "mode": mode, "data_root": str(cfg.data.root), "classes": classes,
              "metrics": metrics}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_jsonable(result), indent=1) + "\n")
    result["json"] = str(out)
    return result


def _pct(value: float | None) -> str:
    return "   n/a" if value is None or not math.isfinite(value) else f"{100 * value:6.2f}"


def format_metrics(metrics: dict[str, Any], classes: Sequence[str]) -> str:
    """A text table: the four overall metrics, then IoU and accuracy per class (in %)."""
    lines = [f"pixel acc {_pct(metrics['pixel_acc'])}   mean acc {_pct(metrics['mean_acc'])}   "
             f"mean IoU {_pct(metrics['mean_iou'])}   f.w. IoU {_pct(metrics['fw_iou'])}"
             f"   ({metrics.get('images', '?')} images, {metrics.get('mode', 'whole')})", ""]
    width = max([len("class")] + [len(c) for c in classes])
    lines.append(f"{'class':<{width}}  {'IoU':>6}  {'acc':>6}  {'pixels':>10}")
    confusion = metrics.get("confusion")
    for i, name in enumerate(classes):
        pixels = sum(confusion[i]) if confusion else 0
        lines.append(f"{name:<{width}}  {_pct(metrics['per_class_iou'][i])}  "
                     f"{_pct(metrics['per_class_acc'][i])}  {pixels:>10d}")
    return "\n".join(lines)


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by ``inputs``: files as given, directories' images (sorted, not
    recursive). Raises FileNotFoundError for a missing path, ValueError if none found."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or directory")
    if not files:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in "
                         f"{', '.join(map(str, inputs))}")
    return files


def predict_images(checkpoint: str | os.PathLike, inputs: Sequence[str | os.PathLike],
                   out_dir: str | os.PathLike, *, backend: str = "auto",
                   mode: str | None = None, device: str = "cpu", alpha: float = 0.5,
                   progress: bool = True) -> dict[str, Any]:
    """Segment images of any size with a checkpoint.

    Writes ``<out_dir>/<stem>.png`` (palette PNG: pixel values are class ids) and
    ``<out_dir>/<stem>_overlay.jpg`` (image | overlay | prediction). ``backend``: see
    :func:`parsenet.engine.export.make_predictor`; ``mode``: whole | slide | multiscale
    (default: the checkpoint config's eval mode). Returns ``backend``, ``mode`` and
    ``outputs`` (list of (label png, overlay) paths)."""
    from parsenet.data.decode import read_image
    from parsenet.engine.export import make_predictor
    from parsenet.engine.inference import predict_logits
    from parsenet.viz import colorize, overlay, save_label_png, side_by_side, voc_palette

    files = collect_images(inputs)  # fail on a bad path before loading anything
    model, meta, checkpoint = _load_source(checkpoint, device)
    if checkpoint.suffix != ".pt" and backend == "auto":
        backend = "eager"  # a released model: no writable place to cache an ONNX export
    cfg = _config_for(meta, None, ())
    mode = mode or cfg.eval.mode
    opts = {"window": cfg.eval.window, "stride": cfg.eval.stride,
            "scales": tuple(cfg.eval.scales), "flip": cfg.eval.flip}
    classes = list(meta["classes"])
    palette = np.asarray(meta["palette"] if meta.get("palette") is not None
                         else voc_palette(len(classes)), dtype=np.uint8)
    preprocessing = model.preprocessing
    run, backend = make_predictor(model, backend=backend, checkpoint=checkpoint, device=device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for path in tqdm(files, desc=f"predict ({backend})", disable=not progress):
        image = read_image(path)
        x = preprocessing(image).unsqueeze(0).to(device)
        with torch.inference_mode():
            pred = predict_logits(run, x, mode, **opts).argmax(1)[0].to(torch.uint8).cpu()
        label_png = out_dir / f"{path.stem}.png"
        save_label_png(pred.numpy(), palette, label_png)
        rgb = image.permute(1, 2, 0).contiguous().numpy()
        panels = [("image", rgb), ("overlay", overlay(rgb, pred, palette, alpha)),
                  ("prediction", colorize(pred, palette))]
        overlay_path = out_dir / f"{path.stem}_overlay.jpg"
        side_by_side(panels).save(overlay_path, quality=92)
        outputs.append((label_png, overlay_path))
    return {"backend": backend, "mode": mode, "outputs": outputs}


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
                      check: bool = True,
                      sizes: Sequence[tuple[int, int]] = ((321, 321), (257, 385))
                      ) -> dict[str, Any]:
    """Export a checkpoint's model to ONNX or TorchScript, then (``check``) compare the file
    with the eager model at ``sizes``. Returns ``path``, ``format``, ``exporter``, ``diffs``."""
    from parsenet.engine.checkpoint import load_model
    from parsenet.engine.export import check_export, export_onnx, export_torchscript

    if fmt not in ("onnx", "torchscript"):
        raise UsageError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    model, _ = load_model(checkpoint, device="cpu")
    out = Path(out)
    if fmt == "onnx":
        exporter = export_onnx(model, out)
    else:
        export_torchscript(model, out)
        exporter = "trace"
    diffs = check_export(out, model, sizes=sizes) if check else {}
    return {"path": str(out), "format": fmt, "exporter": exporter, "diffs": diffs}
