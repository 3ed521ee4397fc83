"""``python -m benchmarks.predict_folder FOLDER --model NAME [--baseline-src DIR]``: end-to-end
``parsenet predict`` over a folder, timed as a user runs it (a fresh process each time,
model loading and file I/O included), interleaved in rounds.

Variants: this checkout's default (``--backend auto``: the fastest runtime, images decoded
ahead and written behind), this checkout with ``--backend eager`` (the overlap alone), and,
given ``--baseline-src`` (another checkout's ``src``, e.g. an earlier commit's), that
checkout's default. Also the share of label pixels each variant's PNGs share with the first
variant's. Prints and writes JSON (``--out``).

``--mode whole`` (or another of predict's modes) is passed to every variant, the baseline's
included, so that both sides run one protocol: a release whose eval is multi-scale (camvid's:
scales 1 / 1.25 / 1.5 with flip, six passes an image) otherwise predicts with it, against one
pass in a baseline whose release evaluates whole images. Under ``--mode whole`` each side
whose predict has ``--no-flip`` gets it too (the release's ``eval.flip`` would otherwise make
two passes an image); an older checkout without the option runs its release's own flip. The
JSON's ``meta`` records each variant's predict options, its release's eval protocol, whether
its predict has ``--no-flip``, and the passes an image that gives.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _run(src: Path, folder: Path, model: str, out: Path, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    argv = [sys.executable, "-m", "parsenet.cli", "predict", str(folder), "--model", model,
            "--out", str(out), "--no-progress", *extra]
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    print(f"  {seconds:6.1f} s  {proc.stdout.strip()}", flush=True)
    return seconds


# Each side's own released model and eval protocol, read with that side's code.
_PROTOCOL = """
import json, sys
from parsenet.config import config_from_dict
from parsenet.models.released import released
e = config_from_dict(released(sys.argv[1]).meta["config"], "release").eval
print(json.dumps({"mode": e.mode, "scales": list(e.scales), "flip": bool(e.flip)}))
"""
MODES = ("whole", "slide", "multiscale", "auto")  # predict --mode
# Whether a side's predict takes --no-flip: its own parser, asked without running predict
# (argparse exits 2 on an option it does not know; the parser imports no torch).
_NO_FLIP = """
from parsenet.cli import build_parser
build_parser().parse_args(["predict", "x.jpg", "--model", "m", "--no-flip"])
"""


def _protocol(src: Path, model: str) -> dict:
    """The eval protocol (mode, scales, flip) of release ``model`` as ``src`` has it."""
    proc = subprocess.run([sys.executable, "-c", _PROTOCOL, model], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(src)})
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout)


def _has_no_flip(src: Path) -> bool:
    """Whether ``src``'s ``parsenet predict`` takes ``--no-flip`` (this checkout's does)."""
    proc = subprocess.run([sys.executable, "-c", _NO_FLIP], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(src)})
    return proc.returncode == 0


def _passes(protocol: dict, mode: str | None, flip: bool | None = None) -> int | None:
    """Forward passes an image under ``mode`` (None or auto: the release's eval mode, as
    predict runs an image that fits in memory) and ``flip`` (None: the release's); None
    where unknown or per-size (slide)."""
    if "error" in protocol:
        return None
    mode = protocol["mode"] if mode in (None, "auto") else mode
    if mode == "slide":
        return None
    flip = protocol["flip"] if flip is None else flip
    return (len(protocol["scales"]) if mode == "multiscale" else 1) * (1 + flip)


def _meta(variants: dict[str, tuple[Path, list[str]]], model: str, mode: str | None,
          no_flip: dict[Path, bool]) -> dict:
    protocols = {src: _protocol(src, model) for src in {src for src, _ in variants.values()}}
    return {"mode": mode or "each side's default (predict --mode auto)",
            "predict_args": {k: extra for k, (_, extra) in variants.items()},
            "release_eval": {k: protocols[src] for k, (src, _) in variants.items()},
            "predict_has_no_flip": {k: no_flip[src] for k, (src, _) in variants.items()},
            "passes_per_image": {
                k: _passes(protocols[src], mode, False if "--no-flip" in extra else None)
                for k, (src, extra) in variants.items()}}


def _variants(mode: str | None, baseline: Path | None, no_flip: dict[Path, bool]
              ) -> dict[str, tuple[Path, list[str]]]:
    """Each variant's checkout and predict options: ``--mode`` for all; under whole, also
    ``--no-flip`` for each side whose predict has it (one pass an image, like for like)."""
    def protocol(src: Path) -> list[str]:
        flip_off = ["--no-flip"] if mode == "whole" and no_flip[src] else []
        return (["--mode", mode] if mode else []) + flip_off

    ours = REPO / "src"
    variants = {"this checkout, default (auto)": (ours, protocol(ours)),
                "this checkout, --backend eager": (ours, ["--backend", "eager",
                                                          *protocol(ours)])}
    if baseline is not None:
        variants["baseline checkout, default"] = (baseline, protocol(baseline))
    return variants


def _agreement(a: Path, b: Path) -> float:
    same = total = 0
    for png in sorted(a.glob("*.png")):
        x, y = np.asarray(Image.open(png)), np.asarray(Image.open(b / png.name))
        same += int((x == y).sum())
        total += x.size
    return same / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="camvid")
    parser.add_argument("--images", type=int, default=0, help="the first N only (0: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="predict --mode for every variant, the baseline's included; "
                             "whole also turns the release's flip off (--no-flip) on each "
                             "side whose predict has the option (default: each side's own "
                             "default)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="parsenet-predict-folder-"))
    images = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    images = images[:args.images] if args.images else images
    folder = work / "in"
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)
    sources = {REPO / "src", *([] if args.baseline_src is None else [args.baseline_src])}
    no_flip = {src: _has_no_flip(src) for src in sources}
    variants = _variants(args.mode, args.baseline_src, no_flip)
    times: dict[str, list[float]] = {name: [] for name in variants}
    first_name, (first_src, first_args) = next(iter(variants.items()))
    _run(first_src, folder, args.model, work / "warm", first_args)  # export, file caches
    for r in range(args.rounds):
        names = list(variants)[::-1] if r % 2 else list(variants)
        for name in names:
            print(f"round {r + 1}: {name}", flush=True)
            src, extra = variants[name]
            times[name].append(_run(src, folder, args.model, work / name, extra))
    first = work / first_name
    result = {"meta": _meta(variants, args.model, args.mode, no_flip),
              "model": args.model, "images": len(images), "rounds": args.rounds,
              "folder": str(args.folder), "seconds": times,
              "median_s": {k: statistics.median(v) for k, v in times.items()},
              "agreement_with_first": {k: _agreement(first, work / k) for k in variants}}
    if args.baseline_src is not None:
        base = result["median_s"]["baseline checkout, default"]
        result["speedup_over_baseline"] = {k: base / v for k, v in result["median_s"].items()}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
