"""Export to OpenVINO IR (``.xml`` + ``.bin``), float32 or INT8.

The IR is converted from the checked ONNX export (the same graph ONNX Runtime runs). INT8
is NNCF's post-training quantisation: activation ranges are calibrated on images the model
was trained on (``--calibration DIR``), prepared exactly as the model's input, at their own
size (the graph keeps dynamic height and width). The preprocessing is recorded in the IR's
runtime info (``parsenet.preprocessing``), as the ONNX file records it in its metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from parsenet.errors import UsageError
from parsenet.preprocessing import Preprocessing, preprocessing_for

__all__ = ["export_openvino", "export_openvino_checked", "calibration_batches",
           "CALIBRATION_IMAGES"]

CALIBRATION_IMAGES = 100  # NNCF's examples use 300; 100 covers these small class sets


def calibration_batches(images: Sequence[Path], preprocessing: Preprocessing,
                        limit: int = CALIBRATION_IMAGES) -> Iterator[np.ndarray]:
    """1 x 3 x H x W float32 arrays of up to ``limit`` images, spread over ``images``."""
    from parsenet.data.decode import read_image

    step = max(1, len(images) // limit)
    for path in list(images)[::step][:limit]:
        yield preprocessing(read_image(path)).unsqueeze(0).numpy()


def export_openvino(model: nn.Module, onnx_path: str | os.PathLike, out: str | os.PathLike,
                    *, calibration: Sequence[Path] = (), int8: bool = False) -> dict:
    """Convert the checked ONNX export ``onnx_path`` of ``model`` to IR at ``out`` (.xml);
    ``int8``: quantise it, calibrated on ``calibration`` images. Returns ``path``,
    ``precision`` and ``calibration_images``."""
    import openvino as ov

    out = Path(out)
    if out.suffix != ".xml":
        raise UsageError(f"{out}: an OpenVINO model is written as NAME.xml (+ NAME.bin)")
    if int8 and not calibration:
        raise UsageError("--int8 needs --calibration DIR: training images to calibrate on")
    ov_model = ov.Core().read_model(str(onnx_path))
    used = 0
    if int8:
        import nncf

        prepare = preprocessing_for(model, None)
        if prepare is None:
            raise UsageError("the model records no preprocessing to calibrate INT8 with")
        batches = list(calibration_batches(calibration, prepare))
        used = len(batches)
        ov_model = nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=used)
    recorded = preprocessing_for(model, None)
    if recorded is not None:
        import json

        ov_model.set_rt_info(json.dumps(recorded.to_dict()), ["parsenet", "preprocessing"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.xml")
    with torch.inference_mode(False):
        ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(tmp, out)
    return {"path": str(out), "precision": "int8" if int8 else "f32",
            "calibration_images": used}


def export_openvino_checked(model: nn.Module, checkpoint: str | os.PathLike | None,
                            cache_dir: str | os.PathLike | None, out: str | os.PathLike, *,
                            calibration: Sequence[Path] = (), int8: bool = False) -> dict:
    """:func:`export_openvino` of an ONNX export of ``model`` checked against it
    (:func:`~parsenet.engine.onnx_cache.with_verified_export`; ``checkpoint`` keys its
    cache): what ``parsenet export --format openvino [--int8]`` writes, and what the
    ``released`` benchmark's INT8 row runs."""
    from parsenet.engine.onnx_cache import with_verified_export

    # NNCF quantises the traced export badly (its size arithmetic: 60.7% of camvid's
    # pixels labelled as eager fp32) and the dynamo export well (98.9%).
    return with_verified_export(
        model, checkpoint, cache_dir,
        lambda onnx: export_openvino(model, onnx, out, calibration=calibration, int8=int8),
        exporter="dynamo" if int8 else "auto")
