"""``python -m benchmarks [--quick] [--out FILE.json] [--only a,b]``: run every benchmark
section in one process, print a table, write the results as JSON."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.common import FULL, QUICK, Section, Settings, Skipped
from benchmarks.table import text_table
from parsenet.engine.precision import cpu_bf16_units, cpu_kind

# Order matters: the pipeline section compares with the train step timed by the roofline.
SECTIONS = {
    "roofline": "benchmarks.roofline",  # also writes section "context"
    "l2norm": "benchmarks.l2norm_bench",
    "precision": "benchmarks.precision_bench",
    "pipeline": "benchmarks.pipeline",
    "inference": "benchmarks.inference_paths",
    "peers": "benchmarks.peers",
    "scaling": "benchmarks.scaling",
    "finetune": "benchmarks.finetune_step",
    "released": "benchmarks.released",  # the released models on every runtime
}
REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.rstrip("\n")  # keep leading spaces: they are part of `status --porcelain`
    except (OSError, subprocess.CalledProcessError):
        return ""


def _loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _schedstat() -> tuple[float, float]:
    """(seconds on CPU, seconds runnable but waiting for a CPU), summed over our threads.

    The waiting time is what other processes on a shared machine cost us directly.
    """
    on_cpu = waiting = 0
    for stat in Path("/proc/self/task").glob("*/schedstat"):
        try:
            run_ns, wait_ns, _ = stat.read_text().split()
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        on_cpu += int(run_ns)
        waiting += int(wait_ns)
    return on_cpu / 1e9, waiting / 1e9


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _meta(settings: Settings, argv: list[str]) -> dict[str, Any]:
    dirty = [line for line in _git("status", "--porcelain").splitlines() if line]
    return {
        "command": "python -m benchmarks " + " ".join(argv),
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_files": len(dirty),
        "uncommitted": [line[3:] for line in dirty],
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "quick": settings.quick,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_kind": cpu_kind(),
        "cpu_bf16_units": cpu_bf16_units() if cpu_kind().startswith("AVX512-BF16") else None,
        "loadavg": {"start": _loadavg()},
    }


def _run_module(key: str, module: str, settings: Settings, shared: dict[str, Any]) -> list[Section]:
    start = time.perf_counter()
    try:
        sections = importlib.import_module(module).run(settings, shared)
    except Skipped as e:
        sections = [Section(key, key, status="skipped", reason=str(e))]
    except ModuleNotFoundError as e:
        sections = [Section(key, key, status="skipped", reason=f"module {e.name} not found")]
    except Exception as e:  # a broken section must not hide the others' results
        traceback.print_exc()
        sections = [Section(key, key, status="error", reason=f"{type(e).__name__}: {e}")]
    for s in sections:
        s.seconds = time.perf_counter() - start
    gc.collect()
    return sections


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, few repeats: checks that everything runs (<2 min)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file (default benchmarks/results/bench[-quick].json)",
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(SECTIONS)}"
    )
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    settings = QUICK if args.quick else FULL
    out = args.out or REPO / "benchmarks" / "results" / (
        "bench-quick.json" if args.quick else "bench.json"
    )

    results: dict[str, Any] = {"meta": _meta(settings, argv), "sections": {}}
    shared: dict[str, Any] = {}
    start = time.perf_counter()
    keys = [k for k in SECTIONS if not only or k in only]
    loads: dict[str, list[float]] = {}
    contention: dict[str, dict[str, float]] = {}
    for key in tqdm(keys, desc="benchmarks", unit="section", file=sys.stderr):
        cpu0, wait0 = _schedstat()
        wall0 = time.perf_counter()
        for section in _run_module(key, SECTIONS[key], settings, shared):
            results["sections"][section.key] = section.to_dict()
        cpu1, wait1 = _schedstat()
        contention[key] = {
            "wall_s": round(time.perf_counter() - wall0, 1),
            "cpu_s": round(cpu1 - cpu0, 1),
            "runqueue_wait_s": round(wait1 - wait0, 1),
        }
        loads[key] = _loadavg()
    meta = results["meta"]
    meta["loadavg"]["after_each_section"] = loads
    meta["contention"] = contention
    meta["seconds"] = round(time.perf_counter() - start, 1)
    meta["finished_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    print(text_table(results))
    print(
        f"\n{meta['seconds']:.0f} s; load average at start {meta['loadavg']['start']}, "
        f"at end {_loadavg()}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {out}")
    return 1 if any(s["status"] == "error" for s in results["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
