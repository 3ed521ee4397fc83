"""Fitting a study run into a time budget: time a few warm-up iterations, then set
``train.iterations`` so that training fills the run's share of the budget.

The warm-up is a real (throwaway) training run of the same config in ``<run>/warmup`` with
one validation image, so it includes what the real run pays per iteration: the data loader,
autocast, the optimiser step and, on a GPU, cuDNN's first-call tuning (which makes the
estimate err on the short side). The plan is written to ``<run>/budget.json`` and reused if
the run is interrupted and resumed, so a resumed run keeps its LR schedule.

The budget covers the warm-up and the training iterations. Model building, the final
validation over the whole validation split and the feature-norm measurement come on top
(measured: 1-minute budget, SiftFlow CPU protocol, 249 validation images: 97 s in all), and
the estimate is only as steady as the machine (a loaded CPU trained 16% slower than its
warm-up said).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from parsenet.config import load_config
from parsenet.engine import trainer  # trainer.train looked up per call: tests replace it

__all__ = ["WARMUP_ITERATIONS", "plan_iterations"]

WARMUP_ITERATIONS = 5


def _time_warmup(config: str | Path, overrides: list[str], workdir: Path, warmup: int
                 ) -> tuple[float, float]:
    """(seconds per training iteration, wall seconds of the whole warm-up run)."""
    cfg = load_config(config, [*overrides, f"train.iterations={warmup}",
                               f"train.out_dir={workdir}", "train.max_val_images=1",
                               f"train.checkpoint_every={warmup}", "train.log_every=1",
                               "train.val_every=0", "train.progress=false"])
    start = time.perf_counter()
    result = trainer.train(cfg)
    wall = time.perf_counter() - start
    t = cfg.train
    images_per_iteration = t.batch_size * t.accumulate * int(result.get("world_size") or 1)
    return images_per_iteration / float(result["images_per_s"]), wall


def plan_iterations(config: str | Path, overrides: list[str], run_dir: Path, seconds: float,
                    warmup: int = WARMUP_ITERATIONS) -> dict[str, Any]:
    """How many iterations of ``config`` (with ``overrides``) fit in ``seconds``, the warm-up
    included; at least one. Returns (and stores in ``run_dir/budget.json``) the plan."""
    plan_file = run_dir / "budget.json"
    if plan_file.is_file():
        return json.loads(plan_file.read_text())
    workdir = run_dir / "warmup"
    per_iteration, wall = _time_warmup(config, overrides, workdir, warmup)
    shutil.rmtree(workdir, ignore_errors=True)
    iterations = max(1, math.floor((seconds - wall) / per_iteration))
    plan = {"budget_s": seconds, "warmup_iterations": warmup, "warmup_wall_s": wall,
            "s_per_iteration": per_iteration, "iterations": iterations}
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan, indent=2) + "\n")
    return plan
