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

from tqdm import tqdm

from parsenet.apps.tables import format_text_table
from parsenet.choices import EXPORT_FORMATS
from parsenet.config import Config, config_from_dict, config_to_dict, load_config
from parsenet.engine.backends import openvino_available
from parsenet.engine.checkpoint import load_model
from parsenet.engine.evaluation import evaluate
from parsenet.engine.export import check_export, export_onnx, export_torchscript
from parsenet.engine.inference import MIN_SIZE
from parsenet.engine.inferencer import InferenceOptions, Inferencer, checked_scales
from parsenet.engine.loaded import LoadedModel, load_released
from parsenet.engine.memory import DEFAULT_BUDGET_GB
from parsenet.engine.precision import resolve_device
from parsenet.engine.runlog import to_jsonable
from parsenet.errors import ConfigError, UsageError
from parsenet.models.released import Release
from parsenet.output_paths import (
    make_folder,
    make_parent,
    refuse_overwrite,
    refuse_overwrite_in,
    refuse_replacing,
)
from parsenet.prediction import OVERLAY_MAX_SIDE, PredictionWriter, predict_files
from parsenet.recipe import dataset_from_config, eval_transforms_from_config

__all__ = ["evaluate_checkpoint", "predict_images", "export_checkpoint", "load_source",
           "collect_images",
           "collect_named_images", "format_metrics", "content_file", "IMAGE_SUFFIXES",
           "EXPORT_FORMATS", "OVERLAY_MAX_SIDE"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def _config_for(loaded: LoadedModel, config_path: str | os.PathLike | None,
                overrides: Sequence[str]) -> Config:
    """The config a task runs with: ``config_path``'s, else the checkpoint's (checked when it
    was loaded), with ``overrides`` applied and checked."""
    if config_path is not None:
        return load_config(config_path, list(overrides))
    if not overrides:
        return loaded.config
    return config_from_dict(config_to_dict(loaded.config), "checkpoint config",
                            overrides=overrides)


def check_device(device: str) -> None:
    """Refuse a ``--device`` that is not one, or not on this machine, before loading."""
    try:
        resolve_device(device, key="--device")
    except ConfigError as e:
        raise UsageError(str(e)) from None


def load_source(source: str | os.PathLike | Release, device: str = "cpu"
                ) -> tuple[LoadedModel, Path]:
    """(the loaded model, its path) of a checkpoint path or a released model
    (:class:`parsenet.models.released.Release`; its path is ``released/<name>``, a name
    for messages: nothing is read or written there)."""
    check_device(device)
    if isinstance(source, Release):
        return load_released(source, device), Path("released") / source.name
    return load_model(source, device=device), Path(source)


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, config: str | os.PathLike | None = None,
                        overrides: Sequence[str] = (), split: str = "val",
                        mode: str | None = None, device: str = "cpu", max_images: int = 0,
                        out: str | os.PathLike | None = None, progress: bool = True,
                        overwrite: bool = False, backend: str = "eager") -> dict[str, Any]:
    """Evaluate a checkpoint on a split of its dataset (or the one ``config``/``overrides``
    describe) and write the result as JSON to ``out``; without ``out``, next to a checkpoint
    file (``<stem>.eval-<split>-<mode>.json``), and nowhere for a released model (it has no
    folder of the user's). Returns the dict: ``metrics`` (see
    :class:`parsenet.metrics.SegmentationMetrics`), ``classes``, ``checkpoint``, ``split``
    (the dataset's name of the split read, e.g. ``test``), ``mode``, ``iteration``,
    ``json`` (the file written, or None). An explicit ``out`` that exists is replaced only
    with ``overwrite``; the checkpoint itself never is. ``backend``: the runtime
    (:mod:`parsenet.engine.backends`; eager, the default, is what the released figures
    were scored with)."""
    is_release = isinstance(checkpoint, Release)
    if out is not None:  # refused before the evaluation, not after it
        inputs = ([(checkpoint.weights_path, "the released model's weights"),
                   (checkpoint.weights_path.with_suffix(".json"), "the released model's card")]
                  if is_release else [(checkpoint, "the checkpoint this command reads")])
        refuse_overwrite(Path(out), inputs, overwrite=overwrite)
        make_parent(out)
    source = checkpoint
    loaded, checkpoint = load_source(checkpoint, device)
    cfg = _config_for(loaded, config, overrides)
    split_name = _split_name(cfg, split)
    # Evaluation transforms for either split: the train split's own are random crops and flips.
    dataset = dataset_from_config(
        cfg.data, split, transforms=eval_transforms_from_config(cfg.data, loaded.preprocessing))
    classes = list(loaded.classes)
    if len(dataset.classes) != len(classes):
        raise UsageError(f"{checkpoint}: the model predicts {len(classes)} classes but the "
                         f"{split} split of {cfg.data.root} has {len(dataset.classes)}")
    # Same count, other names (another dataset, or reordered classes): the scores would be
    # compared against the wrong classes, and every metric would be wrong without a sign.
    pairs = zip(classes, dataset.classes, strict=True)  # same length: checked above
    renamed = [(k, a, b) for k, (a, b) in enumerate(pairs) if a != b]
    if renamed:
        k, ours, theirs = renamed[0]
        raise UsageError(f"{checkpoint}: the model's classes differ from those of the {split} "
                         f"split of {cfg.data.root}: class {k} is {ours!r} in the checkpoint "
                         f"but {theirs!r} in the dataset ({len(renamed)} of {len(classes)} "
                         f"differ)")
    mode = mode or cfg.eval.mode
    metrics = evaluate(loaded.model, dataset, num_classes=len(classes), mode=mode, device=device,
                       max_images=max_images, progress=progress, eval_cfg=cfg.eval,
                       backend=backend, checkpoint=content_file(source))
    if out is None and not is_release:
        out = checkpoint.with_name(f"{checkpoint.stem}.eval-{split_name}-{mode}.json")
        refuse_replacing(out, [(checkpoint, "the checkpoint this command reads")])
    result = {"checkpoint": str(checkpoint), "iteration": loaded.iteration,
              "split": split_name, "mode": mode, "data_root": str(cfg.data.root),
              # the settings that scored it: a figure without its scales and flip is not
              # reproducible
              "eval": {**cfg.eval.model_dump(mode="json"), "mode": mode},
              "classes": classes, "metrics": metrics}
    if out is not None:
        out = Path(out)
        make_parent(out)
        out.write_text(json.dumps(to_jsonable(result), indent=1) + "\n")  # NaN (absent) -> null
    result["json"] = None if out is None else str(out)
    return result


def _split_name(cfg: Config, split: str) -> str:
    """The dataset's own name of the split that ``split`` ("train" or "val") reads: the
    configured split folder, unless validation is held out of the training split, where
    the role itself is the only name it has."""
    if split not in ("train", "val") or cfg.data.holdout_every:
        return split
    return cfg.data.train_split if split == "train" else cfg.data.val_split


def _pct(value: float | None) -> str:
    return "   n/a" if value is None or not math.isfinite(value) else f"{100 * value:6.2f}"


def format_metrics(metrics: dict[str, Any], classes: Sequence[str]) -> str:
    """A text table: the four overall metrics, then IoU and accuracy per class (in %)."""
    lines = [f"pixel acc {_pct(metrics['pixel_acc'])}   mean acc {_pct(metrics['mean_acc'])}   "
             f"mean IoU {_pct(metrics['mean_iou'])}   f.w. IoU {_pct(metrics['fw_iou'])}"
             f"   ({metrics.get('images', '?')} images, {metrics.get('mode', 'whole')})", ""]
    confusion = metrics.get("confusion")
    cells = [[name, _pct(metrics["per_class_iou"][i]), _pct(metrics["per_class_acc"][i]),
              str(sum(confusion[i]) if confusion else 0)] for i, name in enumerate(classes)]
    lines += format_text_table(["class", "IoU", "acc", "pixels"], cells, [None, 6, 6, 10])
    return "\n".join(lines)


def collect_named_images(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, str]]:
    """(image file, output name) for each image named by ``inputs``: files as given,
    directories' images (sorted, not recursive). The output name is the file's stem.
    Raises FileNotFoundError for a missing path, UsageError if no image is found or two
    images would get the same output name (``a/x.jpg b/x.jpg``: one would overwrite the
    other)."""
    named: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            named.extend((p, p.stem) for p in sorted(path.iterdir())
                         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            named.append((path, path.stem))
        else:
            raise FileNotFoundError(f"{path}: no such image file or directory")
    if not named:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in "
                         f"{', '.join(map(str, inputs))}")
    first: dict[str, Path] = {}
    for path, name in named:
        other = first.setdefault(name, path)
        if other != path:
            raise UsageError(f"{other} and {path} would both be written as {name}.png; "
                             f"predict them into separate --out folders or rename one")
    return named


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files of :func:`collect_named_images`."""
    return [path for path, _ in collect_named_images(inputs)]


def _check_out_folder(out_dir: Path, named: list[tuple[Path, str]], overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: is a file, not a folder; --out names the folder that "
                         f"predict writes label PNGs and overlays into")
    outputs = [(out_dir / f"{name}{suffix}", path) for path, name in named
               for suffix in (".png", "_overlay.jpg")]
    refuse_overwrite_in(out_dir, outputs, [path for path, _ in named], overwrite=overwrite)


def _check_predict_options(window: int | None, memory_budget_gb: float,
                           max_megapixels: float | None, mode: str | None,
                           scales: Sequence[float] | None) -> None:
    if max_megapixels is not None and not 0 < max_megapixels < math.inf:
        raise UsageError(f"--max-megapixels must be a number > 0, got {max_megapixels}")
    if scales is not None:  # auto's mode, the model's own, is checked once it is loaded
        checked_scales(scales, mode or "auto")
    if window is not None and window < MIN_SIZE:
        raise UsageError(f"--window {window}: give at least {MIN_SIZE} (the smallest input the "
                         f"model takes; a smaller window is padded to {MIN_SIZE} at every one "
                         f"of its positions)")
    if not (math.isfinite(memory_budget_gb) and memory_budget_gb > 0):
        raise UsageError(f"--memory-budget {memory_budget_gb}: give a number of GB > 0")


def content_file(source: str | os.PathLike | Release) -> Path:
    """The file whose content keys a model's export cache: a checkpoint, or a released
    model's weights."""
    return source.weights_path if isinstance(source, Release) else Path(source)


def _predict_inferencer(checkpoint: str | os.PathLike | Release, *, backend: str,
                        mode: str | None, device: str,
                        export_cache: str | os.PathLike | None, memory_budget_gb: float,
                        window: int | None, flip: bool | None,
                        scales: Sequence[float] | None) -> tuple[LoadedModel, Inferencer]:
    """The loaded model and the inferencer that predict runs: the options left None are
    the model's own (its config's eval and data.resize)."""
    loaded, _ = load_source(checkpoint, device)
    options = InferenceOptions.from_eval(loaded.config.eval, mode=mode or "auto",
                                         window=window, budget_gb=memory_budget_gb,
                                         resize=loaded.config.data.resize, flip=flip,
                                         scales=scales)
    inferencer = Inferencer.create(loaded.model, num_classes=len(loaded.classes),
                                   options=options, backend=backend, device=device,
                                   checkpoint=content_file(checkpoint), cache_dir=export_cache,
                                   preprocessing=loaded.preprocessing)
    return loaded, inferencer


def predict_images(checkpoint: str | os.PathLike | Release,
                   inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                   backend: str = "auto", mode: str | None = None, device: str = "cpu",
                   alpha: float = 0.5, progress: bool = True, skip_errors: bool = False,
                   export_cache: str | os.PathLike | None = None,
                   memory_budget_gb: float = DEFAULT_BUDGET_GB, window: int | None = None,
                   max_megapixels: float | None = None, overwrite: bool = False,
                   flip: bool | None = None, scales: Sequence[float] | None = None
                   ) -> dict[str, Any]:
    """Segment images of any size with a checkpoint or released model.

    Writes ``<out_dir>/<stem>.png`` (palette PNG: pixel values are class ids) and
    ``<out_dir>/<stem>_overlay.jpg`` (image | overlay | prediction, drawn at most
    ``OVERLAY_MAX_SIDE`` pixels high or wide). Two inputs with one stem are refused.
    Images are decoded ahead and written behind in threads (:mod:`parsenet.prediction`).

    ``mode``: whole | slide | multiscale | auto; default auto: each image in the checkpoint
    config's eval mode (whole, the paper's protocol, unless the config says otherwise) when
    the memory estimate (:mod:`parsenet.engine.memory`) fits in ``memory_budget_gb``, else in
    sliding windows of ``window`` (default the config's eval.window). Test-time
    augmentation, None: the model's own (eval.flip, eval.scales): ``flip`` also predicts
    the mirrored image; ``scales`` (:func:`~parsenet.engine.inferencer.checked_scales`)
    only in multi-scale runs: with an explicit whole or slide ``mode``, or auto where the
    model's eval mode is not multiscale, they are a :class:`UsageError`. ``backend``: see
    :mod:`parsenet.engine.backends`; ONNX exports are cached in ``export_cache`` (default
    :func:`parsenet.engine.onnx_cache.default_cache_dir`), keyed on the checkpoint's content
    and verified against it. ``skip_errors``: an image that cannot be read or predicted is
    reported in ``skipped`` and the others are processed.
    ``max_megapixels``: larger images are refused from their header, before decoding
    (default the checkpoint config's data.max_megapixels). Files already in ``out_dir``
    that would be written are replaced only with ``overwrite``; an input never is.

    Returns ``backend``, ``mode``, ``flip``, ``scales``, ``outputs`` (list of (label png,
    overlay) paths), ``modes`` (the mode each output used) and ``skipped`` (list of (path,
    message)).
    """
    _check_predict_options(window, memory_budget_gb, max_megapixels, mode, scales)
    named = collect_named_images(inputs)  # fail on a bad path before loading anything
    out_dir = Path(out_dir)
    _check_out_folder(out_dir, named, overwrite)
    if export_cache is not None:
        make_folder(export_cache, "--export-cache")
    loaded, inferencer = _predict_inferencer(
        checkpoint, backend=backend, mode=mode, device=device, export_cache=export_cache,
        memory_budget_gb=memory_budget_gb, window=window, flip=flip, scales=scales)
    writer = PredictionWriter(list(loaded.classes), loaded.palette, alpha)
    max_pixels = round((max_megapixels or loaded.config.data.max_megapixels) * 1e6)
    make_folder(out_dir)
    with tqdm(total=len(named), desc=f"predict ({inferencer.backend})",
              disable=not progress) as bar:
        outputs, modes, skipped = predict_files(inferencer, writer, named, out_dir,
                                                skip_errors=skip_errors, on_done=bar.update,
                                                max_pixels=max_pixels)
    options = inferencer.options
    return {"backend": inferencer.backend, "mode": options.mode, "flip": options.flip,
            "scales": options.scales, "outputs": outputs, "modes": modes, "skipped": skipped}


def export_checkpoint(checkpoint: str | os.PathLike | Release, fmt: str,
                      out: str | os.PathLike, *, check: bool = True,
                      sizes: Sequence[tuple[int, int]] = ((321, 321), (257, 385)),
                      int8: bool = False, calibration: str | os.PathLike | None = None,
                      export_cache: str | os.PathLike | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Export a checkpoint's (or released model's) model to ONNX, OpenVINO IR or
    TorchScript, then (``check``) compare the file with the eager model at ``sizes``.
    ``int8`` (OpenVINO only): NNCF post-training quantisation calibrated on the images of
    the folder ``calibration`` (training images). Returns ``path``, ``format``,
    ``exporter``, ``diffs`` (and for OpenVINO ``precision``, ``calibration_images``).
    An existing ``out`` is replaced only with ``overwrite``; the checkpoint never is."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    if int8 and fmt != "openvino":
        raise UsageError("--int8 is an OpenVINO export: use --format openvino")
    if fmt == "openvino" and not openvino_available():
        raise UsageError("--format openvino needs OpenVINO (pip install 'parsenet[openvino]')")
    out = Path(out)
    inputs = [] if isinstance(checkpoint, Release) else [
        (checkpoint, "the checkpoint this command reads")]
    refuse_overwrite(out, inputs, overwrite=overwrite)
    calibration_images = collect_images([calibration]) if calibration is not None else []
    model = load_source(checkpoint, "cpu")[0].model
    if not out.is_dir():  # a directory is refused by the exporter, naming a file to give
        make_parent(out)
    if fmt == "openvino":
        from parsenet.engine.openvino_export import export_openvino_checked

        result = export_openvino_checked(model, content_file(checkpoint), export_cache, out,
                                         calibration=calibration_images, int8=int8)
        return {**result, "format": fmt, "exporter": "onnx -> openvino",
                "diffs": {}}
    if fmt == "onnx":
        exporter = export_onnx(model, out)
    else:
        export_torchscript(model, out)
        exporter = "trace"
    diffs = check_export(out, model, sizes=sizes) if check else {}
    return {"path": str(out), "format": fmt, "exporter": exporter, "diffs": diffs}
