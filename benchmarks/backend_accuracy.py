"""``python -m benchmarks.backend_accuracy --model NAME --backends a,b [--images N]``: a
released model's val mean IU and pixel agreement with eager fp32 for each runtime, on the
whole val split (or its first N images, spread over it), with the release's own eval (its
mode, scales and flip).

The ``released`` section scores every runtime on 12 val images, which is enough to rank them
but not to let ``auto`` pick a runtime whose agreement is near the 99% bar: this scores the
candidates on every image. Accuracy only, no timing; it may run beside other jobs. Prints and
writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.__main__ import _cpu_model
from benchmarks.released import (
    GOAL_AGREEMENT,
    GOAL_MEAN_IU_POINTS,
    RELEASES,
    _accuracy,
    _dataset,
    _pairs,
)
from parsenet.engine.precision import cpu_kind

__all__ = ["score", "main"]


def score(name: str, backends: list[str], images: int = 0) -> dict[str, Any]:
    """Mean IU and agreement with eager fp32 of each of ``backends`` (predict's names) on the
    val split of release ``name``; ``images`` 0: every val image."""
    from parsenet.engine.backends import make_predictor
    from parsenet.engine.inferencer import InferenceOptions
    from parsenet.engine.loaded import load_released
    from parsenet.models.released import released

    release = released(name)
    loaded = load_released(release, "cpu")
    val = _dataset(name, loaded, "val")
    if val is None:
        raise SystemExit(f"{name}: no val split under ../shared/data/{RELEASES[name][0]}")
    count = len(val) if images <= 0 else min(images, len(val))
    pairs = _pairs(val, loaded.preprocessing, count, None)
    runs: dict[str, Any] = {"eager fp32": loaded.model}
    for backend in backends:
        runs[backend], _ = make_predictor(loaded.model, backend=backend,
                                          checkpoint=release.weights_path)
    options = InferenceOptions.from_eval(loaded.config.eval)
    accuracy = _accuracy(runs, pairs, options, len(loaded.classes),
                         getattr(val, "ignore_index", 255))
    reference = accuracy["eager fp32"]["mean_iu"]
    for row in accuracy.values():
        row["mean_iu_change"] = row["mean_iu"] - reference
        row["holds"] = (abs(row["mean_iu_change"]) <= GOAL_MEAN_IU_POINTS
                        and row["agreement"] >= GOAL_AGREEMENT)
    return {"model": name, "val_images": len(pairs), "eval_mode": options.mode,
            "eval": {"scales": list(options.scales), "flip": options.flip},
            "accuracy": accuracy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(RELEASES))
    parser.add_argument("--backends", default="openvino-bf16,openvino-bf16-split",
                        help="comma-separated predict backends, scored against eager fp32")
    parser.add_argument("--images", type=int, default=0, help="the first N only (0: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = score(args.model, [b for b in args.backends.split(",") if b], args.images)
    result["meta"] = {"command": "python -m benchmarks.backend_accuracy "
                      + " ".join(sys.argv[1:] if argv is None else argv),
                      "cpu": _cpu_model(), "cpu_kind": cpu_kind(),
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "seconds": round(time.perf_counter() - start, 1)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
