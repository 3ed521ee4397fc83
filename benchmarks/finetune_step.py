"""Section "finetune": the fine-tune train step of the release models, in images per second.

The models are the release recipes' multi-tap ParseNets (taps stride 8, stride 16 and head,
pool6 + L2Norm, late fusion, output stride 16): EfficientNet-Lite0 (configs/cpu/
lite_camvid_multitap.yaml, lite_stanford_multitap.yaml) and Lite2 (lite2_siftflow_head_
multitap.yaml). Random weights: the step's time does not depend on their values. One step
is the trainer's: autocast forward, the fp32 loss, backward, SGD with momentum.

Variants, measured interleaved in the same rounds:

    frozen up to S, live     the backbone's stages up to S frozen (train.frozen_prefix.upto),
                             the whole model run on the image crop
    frozen up to S, cached   the same, the prefix's output read from a cache
                             (train.frozen_prefix.cache): only the rest runs. Reading a
                             crop of the cache from disk is not in the step (the loader
                             does it in its worker); the cache's one-off cost is the row
                             "prefix forward per image-variant".
    bf16                     under bf16 autocast (the trainer's amp: bf16)
    channels_last            the model and its input in channels_last memory format
    compile                  torch.compile of the trained module (first call excluded)

Run alone: ``python -m benchmarks.finetune_step [--quick] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import FULL, QUICK, Section, Settings, interleave, median
from parsenet.engine.frozen_prefix import (
    PrefixRest,
    freeze_prefix,
    prefix_to_eval,
    run_prefix,
)
from parsenet.engine.precision import cpu_kind
from parsenet.models import build_model

__all__ = ["run", "RECIPES", "variants"]

NUM_CLASSES = 11  # CamVid's; the classifier is a small share of the step
HEAD = dict(features=["stride8", "stride16", "head"], context=True, context_source="head",
            fusion="late", normalize=True, output_stride=16, weights=None)
# name -> (builder, batch, crop side): the release recipes' batch and crop (configs/recipes).
RECIPES = {"lite0": ("parsenet_efficientnet_lite0", 8, 256),
          "lite2": ("parsenet_efficientnet_lite2", 8, 256)}
STAGES = ("none", "stage2", "stage3", "stage4", "stage5", "stage6", "all")


# The rows --brief keeps (a second model on a contended machine).
BRIEF = ("whole net, fp32", "whole net, bf16", "frozen to stage3, live, fp32",
         "frozen to stage3, cached, fp32", "frozen to stage3, cached, bf16",
         "frozen to stage5, live, fp32", "frozen to stage5, cached, fp32",
         "frozen to stage5, cached, bf16", "frozen to all, cached, fp32")


def precisions_at(upto: str) -> list[dict[str, Any]]:
    """The step frozen to ``upto`` (cached unless nothing is frozen) in fp32 and bf16, each
    plain, channels_last and torch.compile'd: the precision and format a recipe should run."""
    cached = upto != "none"
    return [dict(upto=upto, cached=cached, bf16=bf16, **extra) for bf16 in (False, True)
            for extra in ({}, {"channels_last": True}, {"compile": True})]


def variants(quick: bool, brief: bool = False, at: str | None = None) -> list[dict[str, Any]]:
    """(upto, cached, precision, channels_last, compile) of every measured step; ``at``: only
    :func:`precisions_at` that freeze point."""
    if at is not None and not quick:
        return precisions_at(at)
    out = [dict(upto=s, cached=c) for s in STAGES for c in (False, True)
           if not (s == "none" and c)]
    for upto, cached in (("none", False), ("stage3", True), ("stage5", True)):
        out += [dict(upto=upto, cached=cached, bf16=True),
                dict(upto=upto, cached=cached, bf16=True, channels_last=True)]
    out += [dict(upto="stage3", cached=True, bf16=True, compile=True)]
    if quick:  # every code path but compile's, in four rows
        out = [dict(upto="none", cached=False), dict(upto="stage3", cached=False),
               dict(upto="stage3", cached=True),
               dict(upto="stage3", cached=True, bf16=True, channels_last=True)]
    if brief:
        out = [v for v in out if label(v) in BRIEF]
    return out


def label(v: dict[str, Any]) -> str:
    text = "whole net" if v["upto"] == "none" else (
        f"frozen to {v['upto']}, {'cached' if v['cached'] else 'live'}")
    for key, name in (("bf16", "bf16"), ("channels_last", "channels_last"),
                      ("compile", "compile")):
        if v.get(key):
            text += f", {name}"
    return text if v.get("bf16") else text + ", fp32"


def _step(builder: str, batch: int, side: int, v: dict[str, Any]
          ) -> Callable[[], object]:
    torch.manual_seed(0)
    model = build_model(builder, num_classes=NUM_CLASSES, **HEAD)
    stages = freeze_prefix(model, v["upto"]) if v["upto"] != "none" else []
    memory = torch.channels_last if v.get("channels_last") else torch.contiguous_format
    model = model.to(memory_format=memory)
    x = torch.randn(batch, 3, side, side).to(memory_format=memory)
    target = torch.randint(0, NUM_CLASSES, (batch, side, side))
    valid = torch.ones(batch, side, side, dtype=torch.bool)
    net: torch.nn.Module = model
    inputs: Any = x
    if v["cached"]:
        inputs = {k: m.to(memory_format=memory)
                  for k, m in run_prefix(model.eval(), x, stages).items()}
        net = PrefixRest(model, stages)
    forward = torch.compile(net) if v.get("compile") else net
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                                momentum=0.9)
    dtype = torch.bfloat16 if v.get("bf16") else None

    def step() -> object:
        model.train()
        prefix_to_eval(model, stages)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            logits = forward(inputs, valid=valid)
        loss = F.cross_entropy(logits.float(), target, ignore_index=255)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _prefix_forward(builder: str, side: int) -> Callable[[], object]:
    """One image through the frozen prefix up to stage 5 (a cache's cost per image-variant)."""
    torch.manual_seed(0)
    model = build_model(builder, num_classes=NUM_CLASSES, **HEAD).eval()
    stages = freeze_prefix(model, "stage5")
    x = torch.randn(1, 3, side, side)
    return lambda: run_prefix(model, x, stages)


def _runnable(fns: dict[str, Callable[[], object]]
              ) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """(the functions that ran once, why each other failed): a torch.compile'd step can fail in
    its first backward (Inductor in torch 2.14.1 checks replication_pad2d_backward's
    strides wrongly on the fp32 step), and one such row must not lose the others."""
    ok, failed = {}, {}
    for key, fn in fns.items():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any failure of a row is that row's result
            failed[key] = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
        else:
            ok[key] = fn
    return ok, failed


def run(settings: Settings, shared: dict[str, Any], models: tuple[str, ...] = tuple(RECIPES),
        brief: bool = False, at: str | None = None) -> list[Section]:
    sections = []
    for name in models:
        builder, batch, side = RECIPES[name]
        if settings.quick:
            if name != "lite0":
                continue
            batch, side = 2, 32
        section = Section(f"finetune_{name}", f"fine-tune train step, {name} multi-tap "
                          f"ParseNet, batch {batch} x {side}², img/s ({cpu_kind()})")
        vs = variants(settings.quick, brief, at)
        steps = {label(v): _step(builder, batch, side, v) for v in vs}
        steps["prefix forward per image-variant (to stage5)"] = _prefix_forward(builder, side)
        # _runnable's call is each function's warm-up (torch.compile's compile included)
        fns, failed = _runnable(steps)
        for key, why in failed.items():
            section.add(key, f"failed: {why}")
        vs = [v for v in vs if label(v) in fns]
        times = interleave(fns, min_rounds=settings.min_rounds, warmup=0,
                           max_rounds=settings.max_rounds, budget_s=settings.budget_s * 3,
                           desc=f"finetune {name}")
        base = median(times[label(vs[0])])
        for key, seconds in times.items():
            if key.startswith("prefix forward"):
                section.add(f"{key}, s", median(seconds), "{:.3f}")
                continue
            rate = batch / median(seconds)
            section.add(key, rate, "{:.2f}", note=f"x{base / median(seconds):.2f} of "
                                                  f"{label(vs[0])}")
        section.details = {"batch": batch, "side": side, "builder": builder,
                           "seconds": times, "variants": vs}
        sections.append(section)
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune_step",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy size, one round")
    parser.add_argument("--out", type=Path, default=None, help="JSON file")
    parser.add_argument("--models", default=",".join(RECIPES), help="comma-separated subset")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default: "
                        "the settings')")
    parser.add_argument("--brief", action="store_true", help=f"only the rows {BRIEF}")
    parser.add_argument("--at", choices=STAGES, default=None,
                        help="only the step frozen to this stage (cached), in fp32 and bf16, "
                             "each plain, channels_last and compiled")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = replace(settings, min_rounds=args.rounds, max_rounds=args.rounds)
    sections = run(settings, {}, tuple(args.models.split(",")), args.brief, args.at)
    results = {"command": "python -m benchmarks.finetune_step " + " ".join(argv or sys.argv[1:]),
               "cpu_kind": cpu_kind(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "loadavg_end": Path("/proc/loadavg").read_text()[:15],
               "sections": {s.key: s.to_dict() for s in sections}}
    for s in sections:
        print(s.title)
        for row in s.rows:
            print(f"  {row['metric']:55s} {row['text']:>8s}  {row['note']}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
