"""The study's runner: the tables of ``configs/cpu/study.yaml``, their jobs and run
directories, training (skipping finished runs, resuming interrupted ones) and the feature
norms of every finished run. The tables it prints come from
:mod:`parsenet.study.reporting`."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from parsenet.config import ConfigError, load_config

METRICS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")
NORM_IMAGES = 16  # validation images used to measure feature norms
SPEC_FILE = "configs/cpu/study.yaml"


@dataclass(frozen=True)
class Variant:
    name: str  # run directory name, unique within a protocol
    label: str  # the row as the paper names it
    config: str  # config file (paths relative to the repo root)
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    priority: int = 9  # lower runs first
    paper: str | None = None  # key of the paper's row in the paper figures file


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    protocol: str  # run directory shared by tables that train the same runs
    paper_tables: str
    note: str
    variants: tuple[Variant, ...]
    claims: tuple[tuple[str, str, str], ...] = ()  # (better, worse, the paper's claim)
    aliases: tuple[str, ...] = ()
    paper: dict[str, dict[str, Any]] = field(default_factory=dict)


def _spec_path(spec_file: str | Path) -> Path:
    path = Path(spec_file)
    if not path.is_file() and not path.is_absolute():
        # Called from elsewhere than the repo root: look next to the package's checkout.
        path = Path(__file__).resolve().parents[3] / spec_file
    if not path.is_file():
        raise ConfigError(f"{spec_file}: study spec not found (run from the repo root)")
    return path


def _variant(v: dict[str, Any]) -> Variant:
    return Variant(name=v["name"], label=v.get("label", v["name"]), config=v["config"],
                   overrides=tuple(v.get("overrides", ())), seeds=tuple(v.get("seeds", (0,))),
                   priority=int(v.get("priority", 9)), paper=v.get("paper"))


def load_tables(spec_file: str | Path = SPEC_FILE) -> dict[str, Table]:
    """The tables of a study spec (YAML: ``paper_figures: <file>``, ``tables: {key: ...}``)."""
    path = _spec_path(spec_file)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
        paper = {}
        if spec.get("paper_figures"):
            paper = yaml.safe_load(_spec_path(spec["paper_figures"]).read_text())["rows"]
        tables, runs = {}, {}
        for key, t in spec["tables"].items():
            variants = tuple(_variant(v) for v in t["variants"])
            names = [v.name for v in variants]
            claims = tuple(tuple(c) for c in t.get("claims", ()))
            problems = (["duplicate variant names"] if len(set(names)) != len(names) else [])
            problems += [f"claim names unknown variants {c[:2]}" for c in claims
                         if not set(c[:2]) <= set(names)]
            problems += [f"variant {v.name}: paper row {v.paper!r} unknown" for v in variants
                         if v.paper and v.paper not in paper]
            for v in variants:  # one run directory, one definition
                same = runs.setdefault((t["protocol"], v.name), v)
                if (same.config, same.overrides) != (v.config, v.overrides):
                    problems.append(f"variant {v.name} differs from its namesake in protocol "
                                    f"{t['protocol']} (they would share runs)")
            if problems:
                raise ConfigError(f"{path}: table {key}: {'; '.join(problems)}")
            tables[str(key)] = Table(
                key=str(key), title=t["title"], protocol=t["protocol"],
                paper_tables=t.get("paper_tables", "n/a"), note=t.get("note", "").strip(),
                variants=variants, claims=claims,  # type: ignore[arg-type]
                aliases=tuple(str(a) for a in t.get("aliases", ())), paper=paper)
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: not a valid study spec ({type(e).__name__}: {e})") from None
    return tables


def resolve_table(table: str | int, spec_file: str | Path = SPEC_FILE) -> Table:
    tables = load_tables(spec_file)
    key = str(table)
    for t in tables.values():
        if key == t.key or key in t.aliases:
            return t
    raise ConfigError(f"unknown study table {key!r}; known: "
                      + ", ".join(f"{t.key} (= {', '.join(t.aliases)})" if t.aliases else t.key
                                  for t in tables.values()))


def _jobs(table: Table, seeds: list[int] | None, only: list[str] | None
          ) -> list[tuple[Variant, int]]:
    names = {v.name for v in table.variants}
    unknown = sorted(set(only or []) - names)
    if unknown:
        raise ConfigError(f"table {table.key}: unknown variant(s) {unknown}; known: "
                          f"{[v.name for v in table.variants]}")
    jobs = [(v, s) for v in table.variants if not only or v.name in only
            for s in (seeds if seeds is not None else v.seeds)]
    # Priority first (the key comparisons), then seed, so both sides of a comparison finish
    # before a second seed of either starts.
    order = {v.name: i for i, v in enumerate(table.variants)}
    return sorted(jobs, key=lambda j: (j[0].priority, j[1], order[j[0].name]))


def run_dir(out_root: str | Path, table: Table, variant: Variant, seed: int) -> Path:
    return Path(out_root) / table.protocol / variant.name / f"seed{seed}"


def is_finished(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / "diverged.json").is_file()


def _overrides(variant: Variant, seed: int, path: Path) -> list[str]:
    return [*variant.overrides, f"train.seed={seed}", f"train.out_dir={path}",
            "train.progress=false"]


def command_for(variant: Variant, seed: int, path: Path) -> str:
    """The ``parsenet train`` command that trains this run on its own."""
    sets = " ".join(f"--set '{o}'" for o in _overrides(variant, seed, path)
                    if not o.startswith("train.progress"))
    return f"parsenet train --config {variant.config} {sets}"


def _train_one(variant: Variant, seed: int, path: Path) -> None:
    from parsenet.engine.rundir import clear_run
    from parsenet.engine.trainer import TrainingDivergedError, train

    config = load_config(variant.config, _overrides(variant, seed, path))
    resume = (path / "checkpoints" / "last.pt").is_file()
    path.mkdir(parents=True, exist_ok=True)
    attempts_file = path / "attempts.json"
    attempts = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
    start, outcome = time.perf_counter(), "interrupted"
    try:
        if not resume:  # a run killed before its first checkpoint starts again afresh
            clear_run(path)
        train(config, resume=resume)
        outcome = "finished"
    except TrainingDivergedError as e:
        outcome = "diverged"
        (path / "diverged.json").write_text(json.dumps({"error": str(e)}, indent=2) + "\n")
    finally:
        attempts.append({"resumed": resume, "outcome": outcome, "commit": _git_commit(),
                         "seconds": time.perf_counter() - start})
        attempts_file.write_text(json.dumps(attempts, indent=2) + "\n")
    if outcome == "finished":
        measure_feature_norms(path)


def measure_feature_norms(path: Path, images: int = NORM_IMAGES) -> dict[str, Any]:
    """Mean per-pixel L2 norm of conv3, conv4, conv5, fc7 and pool6 of the trained model,
    before and after its own L2Norm (:func:`parsenet.viz.feature_norms`), and the learned
    L2Norm scales; written to ``feature_norms.json``. Images: the first validation images,
    at the run's evaluation scale."""
    import torch.nn.functional as F

    from parsenet.config import config_from_dict
    from parsenet.data.build import build_dataset
    from parsenet.engine.checkpoint import load_model
    from parsenet.viz import feature_norms

    model, meta = load_model(path / "checkpoints" / "last.pt")
    config = config_from_dict(meta["config"])
    dataset = build_dataset(config.data, "val", preprocessing=model.preprocessing)
    scale = config.eval.scales[0] if config.eval.mode == "multiscale" else 1.0
    count = min(images, len(dataset))
    batch = [dataset[i][0].unsqueeze(0) for i in range(count)]
    if scale != 1.0:
        batch = [F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
                 for x in batch]
    norms = feature_norms(model, batch, taps=("conv3", "conv4", "conv5", "fc7"))
    scales = {name.removesuffix(".weight"): float(p.detach().abs().mean())
              for name, p in model.named_parameters() if ".norms." in name}
    result = {"images": count, "input_scale": scale,
              "feature_norm": {k: before for k, (before, _) in norms.items()},
              "after_l2norm": {k: after for k, (_, after) in norms.items()},
              "l2norm_scale_mean": scales}
    (path / "feature_norms.json").write_text(json.dumps(result, indent=2) + "\n")
    return result



def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _git_commit() -> str:
    return _run("git", "rev-parse", "--short", "HEAD")


def run_study(table: str | int, *, seeds: list[int] | None = None,
              out_root: str | Path = "runs/study", only: list[str] | None = None,
              dry_run: bool = False, spec_file: str | Path = SPEC_FILE) -> list[dict[str, Any]]:
    """Train the variants of ``table`` that have not finished, print the table, write
    ``<out_root>/<table>/results.json``; returns the rows. ``only`` restricts to some
    variant names, ``seeds`` replaces every variant's seeds, ``dry_run`` lists the runs."""
    from parsenet.study.reporting import report  # reporting imports this module

    spec = resolve_table(table, spec_file)
    jobs = _jobs(spec, seeds, only)
    if dry_run:
        for v, s in jobs:
            path = run_dir(out_root, spec, v, s)
            state = "done" if is_finished(path) else "to run"
            print(f"[{state}] {v.name} seed {s}: {command_for(v, s, path)}")
        return [{"variant": v.name, "seed": s, "dir": str(run_dir(out_root, spec, v, s)),
                 "finished": is_finished(run_dir(out_root, spec, v, s))} for v, s in jobs]
    for v, s in tqdm(jobs, desc=f"study {spec.key}", unit="run"):
        path = run_dir(out_root, spec, v, s)
        if is_finished(path):
            if (path / "metrics.json").is_file() and not (path / "feature_norms.json").is_file():
                measure_feature_norms(path)  # stopped between training and measuring
            continue
        tqdm.write(f"training {v.name} seed {s} -> {path}")
        _train_one(v, s, path)
    return report(spec.key, seeds=seeds, out_root=out_root, spec_file=spec_file)
