"""OpenVINO with the graph split in two, each part compiled at its own precision: which part
of a released model must stay in float32 for bf16 to keep its labels?

    PYTHONPATH=src python -m lab.tools.openvino_split_precision camvid \\
        "bf16>f32@/head/|/context/" "f32>bf16@/backbone/stages.1/" [--val-images 12]

A variant ``FRONT>BACK@PREFIX|PREFIX``: every op from the first whose name starts with a
prefix on (and everything that depends on it) runs in BACK precision, the rest in FRONT
precision; ``bf16`` and ``f32`` alone compile the whole graph at one precision. The ONNX
graph is the model's ``export_onnx`` (op names follow the module tree: ``/backbone/stem/``,
``/backbone/stages.N/``, ``/backbone/head/``, ``/head/``, ``/context/``). Accuracy is the
``released`` benchmark section's: the first ``--val-images`` val images spread over the split,
the config's eval mode, the val mean IU and the share of pixels labelled as eager fp32 labels
them. Marking ops with OpenVINO's ``disable_fp16_compression_0`` runtime info from Python did
not change the bf16 labels at all on OpenVINO 2026.4 (CPU plugin), hence the split.

Measured on released ``camvid``, 12 val images (eager fp32 mean IU 59.80), Intel Xeon with
AMX, OpenVINO 2026.4.1: all bf16 98.857% of pixels alike, -0.24 points; float32 kept for the
head and context (``bf16>f32@/head/|/context/``) 98.852%, -0.18; from ``/backbone/head/``
98.853%, -0.20; from stage 6 98.868%, -0.25; from stage 4 98.859%, -0.21. Float32 for the
*front* instead: stem and stage 1 (``f32>bf16@/backbone/stages.1/``) 99.652%, -0.05; stem to
stage 3 (``@/backbone/stages.3/``) 99.765%, -0.03. The bf16 error that flips labels enters at
the input end, not at the classifier. The split itself is the library's
(:mod:`parsenet.engine.openvino_split`, the ``openvino-bf16-split`` backend), whose docstring
keeps the figures that chose each release's split point.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.released import RELEASES, SHARED, _accuracy, _dataset, _pairs

# releases the benchmark does not time, by their data folder
_FOLDERS = {"stanford": "stanford_background"}


def _predictor(path: Path, variant: str):
    """``bf16`` / ``f32``: the whole graph at one precision; ``FRONT>BACK@PREFIX|...``: split
    there (the library's :class:`~parsenet.engine.openvino_split.SplitOpenVinoPredictor`)."""
    from parsenet.engine.backends import OpenVinoPredictor
    from parsenet.engine.openvino_split import SplitOpenVinoPredictor

    if "@" not in variant:
        return OpenVinoPredictor(path, variant)
    precisions, prefixes = variant.split("@")
    front, back = precisions.split(">")
    return SplitOpenVinoPredictor(path, prefixes.split("|"), front, back)


def main() -> None:
    from parsenet.engine import load_released
    from parsenet.engine.export import export_onnx
    from parsenet.engine.inferencer import InferenceOptions
    from parsenet.models.released import released

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a released model, e.g. camvid")
    parser.add_argument("variants", nargs="+", help="bf16, f32 or FRONT>BACK@PREFIX|...")
    parser.add_argument("--val-images", type=int, default=12)
    args = parser.parse_args()
    loaded = load_released(released(args.model), "cpu")
    model = loaded.model.eval()
    folder = _FOLDERS.get(args.model) or RELEASES[args.model][0]
    val = _dataset(args.model, loaded, "val", SHARED / folder)
    if val is None:
        raise SystemExit(f"no val split of {args.model} in {SHARED / folder}")
    pairs = _pairs(val, loaded.preprocessing, args.val_images, None)
    with tempfile.TemporaryDirectory(prefix="parsenet-split-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path)

        def eager(x: Tensor) -> Tensor:
            with torch.inference_mode():
                return model(x)

        runs = {"eager fp32": eager, **{v: _predictor(path, v) for v in args.variants}}
        accuracy = _accuracy(runs, pairs, InferenceOptions.from_eval(loaded.config.eval),
                             len(loaded.classes), getattr(val, "ignore_index", 255))
    reference = accuracy["eager fp32"]["mean_iu"]
    print(f"{args.model}: eager fp32 mean IU {reference:.2f} on {len(pairs)} val images")
    for variant in args.variants:
        a = accuracy[variant]
        print(f"{variant:40s} agreement {100 * a['agreement']:.3f}%  mean IU "
              f"{a['mean_iu']:.2f} ({a['mean_iu'] - reference:+.2f})")


if __name__ == "__main__":
    main()
