"""The study's runner: the tables of ``configs/cpu/study.yaml``, their jobs and run
directories, training (skipping finished runs, resuming interrupted ones) and the feature
norms of every finished run. The tables it prints come from
:mod:`parsenet.study.reporting`."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from parsenet.config import ConfigError, load_config
from parsenet.study.paper import PaperFigures, PaperRow, load_paper_figures

METRICS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")
NORM_IMAGES = 16  # validation images used to measure feature norms
SPEC_FILE = "configs/cpu/study.yaml"
ENGINES = ("trainer", "cached")


@dataclass(frozen=True)
class Variant:
    name: str  # run directory name, unique within a protocol
    label: str  # the row as the paper names it
    config: str  # config file (paths relative to the repo root)
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    priority: int = 9  # lower runs first
    paper: tuple[str, ...] = ()  # ids of the paper's rows it stands for (paper_figures.yaml)


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    protocol: str  # run directory shared by tables that train the same runs
    paper_tables: str
    note: str
    variants: tuple[Variant, ...]
    # (better, worse, the paper's claim[, "equal"]): "equal" claims the two rows tie
    claims: tuple[tuple[str, ...], ...] = ()
    aliases: tuple[str, ...] = ()
    paper: dict[str, PaperRow] = field(default_factory=dict)
    # The paper's tables whose rows the paper column shows (empty: all the variant names).
    paper_keys: tuple[str, ...] = ()
    # "trainer" (parsenet train) or "cached": the head trained on a frozen trunk's cached
    # features at ``resolution`` (H, W) (parsenet.study.cached).
    engine: str = "trainer"
    resolution: tuple[int, int] | None = None
    loss_stride: int = 1  # cached engine: the training loss on every n-th pixel (claim 2)


def _spec_path(spec_file: str | Path) -> Path:
    path = Path(spec_file)
    if not path.is_file() and not path.is_absolute():
        # Called from elsewhere than the repo root: look next to the package's checkout.
        path = Path(__file__).resolve().parents[3] / spec_file
    if not path.is_file():
        raise ConfigError(f"{spec_file}: study spec not found (run from the repo root)")
    return path


def _variant(v: dict[str, Any]) -> Variant:
    paper = v.get("paper") or ()
    return Variant(name=v["name"], label=v.get("label", v["name"]), config=v["config"],
                   overrides=tuple(v.get("overrides", ())), seeds=tuple(v.get("seeds", (0,))),
                   priority=int(v.get("priority", 9)),
                   paper=(paper,) if isinstance(paper, str) else tuple(paper))


def load_tables(spec_file: str | Path = SPEC_FILE) -> dict[str, Table]:
    """The tables of a study spec (YAML: ``tables: {key: ...}``; ``paper_figures: <file>``
    replaces the paper's figures shipped with the package)."""
    path = _spec_path(spec_file)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
        paper = load_paper_figures(_spec_path(spec["paper_figures"]) if spec.get(
            "paper_figures") else None).rows
        tables, runs = {}, {}
        for key, t in spec["tables"].items():
            variants = tuple(_variant(v) for v in t["variants"])
            names = [v.name for v in variants]
            claims = tuple(tuple(c) for c in t.get("claims", ()))
            problems = (["duplicate variant names"] if len(set(names)) != len(names) else [])
            problems += [f"claim names unknown variants {c[:2]}" for c in claims
                         if not set(c[:2]) <= set(names)]
            problems += [f"claim {c[:2]}: kind {c[3]!r} unknown (expected 'equal' or none)"
                         for c in claims if len(c) > 3 and c[3] != "equal"]
            problems += [f"variant {v.name}: paper row {p!r} unknown" for v in variants
                         for p in v.paper if p not in paper]
            for v in variants:  # one run directory, one definition
                same = runs.setdefault((t["protocol"], v.name), v)
                if (same.config, same.overrides) != (v.config, v.overrides):
                    problems.append(f"variant {v.name} differs from its namesake in protocol "
                                    f"{t['protocol']} (they would share runs)")
            engine, resolution = t.get("engine", "trainer"), t.get("resolution")
            if engine not in ENGINES:
                problems.append(f"engine {engine!r} unknown (expected one of {ENGINES})")
            if engine == "cached" and not (isinstance(resolution, list) and len(resolution) == 2):
                problems.append("engine cached needs resolution: [height, width]")
            if problems:
                raise ConfigError(f"{path}: table {key}: {'; '.join(problems)}")
            tables[str(key)] = Table(
                key=str(key), title=t["title"], protocol=t["protocol"],
                paper_tables=t.get("paper_tables", "n/a"), note=t.get("note", "").strip(),
                variants=variants, claims=claims,  # type: ignore[arg-type]
                aliases=tuple(str(a) for a in t.get("aliases", ())), paper=paper,
                paper_keys=tuple(str(k) for k in t.get("paper_keys", ())), engine=engine,
                resolution=tuple(resolution) if resolution else None,
                loss_stride=int(t.get("loss_stride", 1)))
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: not a valid study spec ({type(e).__name__}: {e})") from None
    return tables


def paper_tables(figures: PaperFigures | None = None) -> dict[str, Table]:
    """Tables 1-8 as study tables: one variant per row of the paper that has a config
    (configs/paper/<row>.yaml), run as the paper ran it (``--paper``)."""
    figures = figures or load_paper_figures()
    tables = {}
    for key, t in figures.tables.items():
        variants = tuple(Variant(name=r.id, label=r.label, config=r.config, paper=(r.id,))
                         for r in t.rows if r.config)
        tables[f"paper{key}"] = Table(
            key=f"paper{key}", aliases=(key,), title=f"{t.title}, as the paper ran it",
            protocol=f"paper{key}",
            paper_tables=f"{t.title} ({t.dataset})", variants=variants, paper=figures.rows,
            paper_keys=(key,),
            note=f"Configs: configs/paper/ (one per row, README there). Paper: {t.dataset}; "
                 "ours: the data, weights and iterations of this run (see the command).")
    return tables


def resolve_table(table: str | int, spec_file: str | Path = SPEC_FILE, paper: bool = False
                  ) -> Table:
    """A table of the study spec by key or alias; with ``paper``, one of the paper's
    Tables 1-8 (:func:`paper_tables`)."""
    tables = paper_tables() if paper else load_tables(spec_file)
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


def command_for(variant: Variant, seed: int, path: Path, table: Table | None = None) -> str:
    """The command that trains this run on its own: ``parsenet train``, or for a table on
    the cached engine, ``parsenet study`` restricted to the run."""
    if table is not None and table.engine == "cached":
        return f"parsenet study --table {table.key} --only {variant.name} --seeds {seed}"
    sets = " ".join(f"--set '{o}'" for o in _overrides(variant, seed, path)
                    if not o.startswith("train.progress"))
    return f"parsenet train --config {variant.config} {sets}"


def _train_one(variant: Variant, seed: int, path: Path, table: Table | None = None) -> None:
    from parsenet.engine.rundir import clear_run
    from parsenet.engine.trainer import TrainingDivergedError, train

    config = load_config(variant.config, _overrides(variant, seed, path))
    fit: Any = train
    if table is not None and table.engine == "cached":
        from parsenet.study.cached.engine import train_cached

        resolution = table.resolution

        def fit(config: Any, resume: bool) -> None:  # resumes by itself from its checkpoint
            train_cached(config, resolution=resolution, progress=False,
                         loss_stride=table.loss_stride)
    resume = (path / "checkpoints" / "last.pt").is_file()
    path.mkdir(parents=True, exist_ok=True)
    attempts_file = path / "attempts.json"
    attempts = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
    start, outcome = time.perf_counter(), "interrupted"
    try:
        if not resume:  # a run killed before its first checkpoint starts again afresh
            clear_run(path)
        fit(config, resume=resume)
        outcome = "finished"
    except TrainingDivergedError as e:
        outcome = "diverged"
        (path / "diverged.json").write_text(json.dumps({"error": str(e)}, indent=2) + "\n")
    finally:
        attempts.append({"resumed": resume, "outcome": outcome, "commit": _git_commit(),
                         "seconds": time.perf_counter() - start})
        attempts_file.write_text(json.dumps(attempts, indent=2) + "\n")
    if outcome == "finished" and (table is None or table.engine == "trainer"):
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


def with_overrides(spec: Table, overrides: list[str], budget_minutes: float | None
                    ) -> Table:
    """The table with ``overrides`` added to every variant; a budgeted study gets its own
    run directories (``<protocol>_budget<M>min``), so it never passes for a full run."""
    if overrides:
        spec = replace(spec, variants=tuple(replace(v, overrides=(*v.overrides, *overrides))
                                            for v in spec.variants))
    if budget_minutes is not None:
        spec = replace(spec, protocol=f"{spec.protocol}_budget{budget_minutes:g}min")
    return spec


def run_study(table: str | int, *, seeds: list[int] | None = None,
              out_root: str | Path = "runs/study", only: list[str] | None = None,
              dry_run: bool = False, spec_file: str | Path = SPEC_FILE, paper: bool = False,
              overrides: list[str] | None = None, budget_minutes: float | None = None
              ) -> list[dict[str, Any]]:
    """Train the variants of ``table`` that have not finished, print the table, write
    ``<out_root>/<table>/results.json``; returns the rows. ``only`` restricts to some
    variant names, ``seeds`` replaces every variant's seeds, ``dry_run`` lists the runs.
    ``paper``: the paper's Table ``table`` (configs/paper). ``overrides`` (``key=value``)
    apply to every run. ``budget_minutes``: the runs still to train share this much
    time; each one's iterations are set from timed warm-up iterations
    (:mod:`parsenet.study.budget`)."""
    from parsenet.study.budget import plan_iterations
    from parsenet.study.reporting import report  # reporting imports this module

    spec = with_overrides(resolve_table(table, spec_file, paper), list(overrides or []),
                           budget_minutes)
    jobs = _jobs(spec, seeds, only)
    if dry_run:
        for v, s in jobs:
            path = run_dir(out_root, spec, v, s)
            state = "done" if is_finished(path) else "to run"
            budgeted = " (train.iterations: set from the warm-up)" if budget_minutes else ""
            print(f"[{state}] {v.name} seed {s}: {command_for(v, s, path, spec)}{budgeted}")
        return [{"variant": v.name, "seed": s, "dir": str(run_dir(out_root, spec, v, s)),
                 "finished": is_finished(run_dir(out_root, spec, v, s))} for v, s in jobs]
    pending = [j for j in jobs if not is_finished(run_dir(out_root, spec, *j))]
    share = budget_minutes * 60.0 / max(len(pending), 1) if budget_minutes is not None else 0
    for v, s in tqdm(jobs, desc=f"study {spec.key}", unit="run"):
        path = run_dir(out_root, spec, v, s)
        if is_finished(path):
            if (spec.engine == "trainer" and (path / "metrics.json").is_file()
                    and not (path / "feature_norms.json").is_file()):
                measure_feature_norms(path)  # stopped between training and measuring
            continue
        if budget_minutes is not None:
            plan = plan_iterations(v.config, _overrides(v, s, path), path, share)
            tqdm.write(f"budget {share / 60:.2f} min: {plan['s_per_iteration']:.3g} s per "
                       f"iteration over {plan['warmup_iterations']} warm-up iterations -> "
                       f"{plan['iterations']} iterations")
            v = replace(v, overrides=(*v.overrides, f"train.iterations={plan['iterations']}"))
        tqdm.write(f"training {v.name} seed {s} -> {path}")
        _train_one(v, s, path, spec)
    return report(spec, seeds=seeds, out_root=out_root, spec_file=spec_file)
