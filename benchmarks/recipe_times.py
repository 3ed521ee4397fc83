"""Training time of each CPU recipe (configs/recipes), on this CPU and on an AVX2 CPU emulated here:

    python -m benchmarks.recipe_times [--rounds 2] [--steps 3] [--only camvid,stanford]
                                      [--out docs/benchmarks/recipe_times.json]

A recipe's training time is its images divided by its train step rate. The rate is measured
on the recipe's own model (frozen stages and BatchNorm mode included), batch, input size,
optimiser and the precision ``train.amp`` resolves to, on random pixels (a step's cost does
not depend on them). Two modes, each (recipe, mode) in its own child process, alternating per
round; the median step of each mode is kept:

- ``native``: this CPU as it is.
- ``avx2``: oneDNN and ATen capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``,
  ``ATEN_CPU_CAPABILITY=avx2``) and ``PARSENET_CPU_BF16=0``, so ``amp: auto`` resolves to
  fp32, as on an AVX2 machine. It emulates the AVX2 kind's kernels on this CPU's cores, clock
  and memory: an estimate of that kind, not a measurement on one.

A head recipe (``parsenet train-head``: ``train.frozen_prefix.upto=all`` with its cache) has
two parts: the frozen trunk's forward at the recipe's resolution, once per train image (the
prefix cache, fp32), then the head's train steps on maps of the trunk's shapes, the loss on
every 8th pixel (``train.loss_stride``). Not timed: the
data loader (one worker decodes ahead of the step) and validation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
# name: (config, train images, val images, head-recipe resolution or None)
RECIPES = {
    "siftflow": ("configs/cpu/lite_siftflow_head.yaml", 2237, 249, (512, 512)),
    "siftflow_multitap": ("configs/cpu/lite_siftflow_head_multitap.yaml", 2237, 249,
                          (512, 512)),
    "siftflow_lite2_multitap": ("configs/cpu/lite2_siftflow_head_multitap.yaml", 2237, 249,
                                (512, 512)),
    "camvid": ("configs/cpu/lite_camvid.yaml", 367, 101, None),
    "camvid_multitap": ("configs/cpu/lite_camvid_multitap.yaml", 367, 101, None),
    "stanford": ("configs/cpu/lite_stanford.yaml", 572, 143, None),
    "stanford_multitap": ("configs/cpu/lite_stanford_multitap.yaml", 572, 143, None),
    "hed_largefov_60min": ("configs/cpu/siftflow_hed_largefov_60min.yaml", 2237, 249, None),
}
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "PARSENET_CPU_BF16": "0"}
NUM_CLASSES = 33  # the step's cost hardly depends on it; SiftFlow's


def _model(config):
    from parsenet.engine.optim import freeze, norm_stats_to_eval
    from parsenet.recipe import build_model_from_config

    model = build_model_from_config(config.model, num_classes=NUM_CLASSES)
    freeze(model, config.model.freeze)
    model.train()
    if config.model.norm_eval:
        norm_stats_to_eval(model)
    return model


def _stepper(net, config, batch, loss_pixels=None):
    """One recipe train step (the trainer's run_iteration) as a closure."""
    from parsenet.engine.distributed import DistContext
    from parsenet.engine.iteration import run_iteration
    from parsenet.engine.optim import build_optimizer, build_scheduler
    from parsenet.engine.precision import resolve_amp

    t = config.train
    # The learning rates differ from the trainer's (which parameters are pretrained), not
    # the cost of a step.
    optimizer = build_optimizer(net, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                                new_layer_lr_mult=t.new_layer_lr_mult,
                                bias_lr_mult=t.bias_lr_mult, bias_decay=t.bias_decay)
    scheduler = build_scheduler(optimizer, max_iterations=t.iterations, power=t.poly_power,
                                warmup_iterations=t.warmup_iterations, policy=t.lr_policy)
    amp = resolve_amp(t.amp, torch.device("cpu"))

    def step() -> None:
        run_iteration(net, [batch], False, t.loss_reduction, ctx=DistContext(),
                      device=torch.device("cpu"), amp=amp, scaler=None, optimizer=optimizer,
                      scheduler=scheduler, loss_pixels=loss_pixels)

    return step, amp.name


def _timed(fn, steps: int) -> float:
    fn()  # warm-up: oneDNN primitive creation
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def measure(name: str, steps: int) -> dict:
    """Child process: the recipe's step times (seconds) and the precision used."""
    from parsenet.config import load_config

    path, _, _, resolution = RECIPES[name]
    config = load_config(REPO / path)
    torch.manual_seed(0)
    model, batch = _model(config), config.train.batch_size
    if resolution is None:
        side = config.data.crop_size
        x = torch.randn(batch, 3, side, side)
        y = torch.randint(0, NUM_CLASSES, (batch, side, side))
        step, precision = _stepper(model, config, (x, y, None))
        return {"step_s": _timed(step, steps), "precision": precision}
    return _measure_head(config, model, resolution, steps)


def _measure_head(config, model, resolution, steps: int) -> dict:
    from parsenet.engine.frozen_prefix import (
        PrefixRest,
        freeze_prefix,
        prefix_to_eval,
        run_prefix,
    )
    from parsenet.engine.iteration import loss_pixels

    stages = freeze_prefix(model, "all")
    images = torch.randn(4, 3, *resolution)
    model.eval()
    trunk_s = _timed(lambda: run_prefix(model, images, stages), steps)
    maps = run_prefix(model, images[:1], stages)
    model.train()
    prefix_to_eval(model, stages)
    batch = config.train.batch_size
    features = {s: m.expand(batch, -1, -1, -1).contiguous() for s, m in maps.items()}
    valid = torch.ones(batch, *resolution, dtype=torch.bool)
    labels = torch.randint(0, NUM_CLASSES, (batch, *resolution))
    pixels = loss_pixels(model.backbone.output_stride, model.backbone.grid_offset, 8)
    step, precision = _stepper(PrefixRest(model, stages), config, (features, labels, valid),
                               pixels)
    return {"trunk_s_per_4": trunk_s, "step_s": _timed(step, steps), "precision": precision}


def mode_env(mode: str) -> dict[str, str]:
    """The environment of a child process timing ``mode`` (native | avx2), two threads."""
    return {**os.environ, "OMP_NUM_THREADS": "2", **(AVX2 if mode == "avx2" else {})}


def _child(name: str, mode: str, steps: int) -> dict:
    env = mode_env(mode)
    code = ("import json, sys; from benchmarks.recipe_times import measure; "
            f"print(json.dumps(measure({name!r}, {steps})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def minutes(name: str, result: dict) -> float:
    """The recipe's projected training minutes from one mode's median step."""
    from parsenet.config import load_config

    path, n_train, n_val, resolution = RECIPES[name]
    t = load_config(REPO / path).train
    seconds = t.iterations * t.accumulate * result["step_s"]
    if resolution is not None:
        seconds += (n_train + n_val) / 4 * result["trunk_s_per_4"]
    return seconds / 60


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated recipe names")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    names = [n for n in RECIPES if not args.only or n in args.only.split(",")]
    runs = {(n, m): [] for n in names for m in ("native", "avx2")}
    jobs = [(n, m) for r in range(args.rounds) for n in names
            for m in (("native", "avx2") if r % 2 == 0 else ("avx2", "native"))]
    for name, mode in tqdm(jobs, desc="recipe steps"):
        runs[name, mode].append(_child(name, mode, args.steps))
    rows = []
    print(f"{'recipe':<24} {'mode':<7} {'precision':<9} {'step s':>7} {'train min':>9}"
          f" {'avx2 / native':>13}")
    for name in names:
        best = {}
        for mode in ("native", "avx2"):
            keys = runs[name, mode][0].keys() - {"precision"}
            best[mode] = {k: statistics.median(r[k] for r in runs[name, mode]) for k in keys}
            best[mode]["precision"] = runs[name, mode][0]["precision"]
            best[mode]["minutes"] = minutes(name, best[mode])
        ratio = best["avx2"]["minutes"] / best["native"]["minutes"]
        for mode in ("native", "avx2"):
            b = best[mode]
            print(f"{name:<24} {mode:<7} {b['precision']:<9} {b['step_s']:>7.3f} "
                  f"{b['minutes']:>9.1f} {ratio if mode == 'avx2' else 1.0:>13.2f}")
        rows.append({"recipe": name, "config": RECIPES[name][0], **best, "ratio": ratio,
                     "rounds": len(runs[name, "native"])})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "loadavg": os.getloadavg(), "rounds": args.rounds, "steps": args.steps}
        args.out.write_text(json.dumps({"meta": meta, "recipes": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
