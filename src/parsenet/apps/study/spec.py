"""The study's tables as data: the variants of a study spec (a YAML file of tables, such as
the lab's ``configs/cpu/study.yaml``) or of the paper's Tables 1-8, where each run lives and
the command that trains it. Trains and reads nothing else; :mod:`parsenet.apps.study.runner`
trains, :mod:`parsenet.apps.study.reporting` tabulates."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from parsenet.apps.study.paper import PaperFigures, PaperRow, config_file, load_paper_figures
from parsenet.config import ConfigError

__all__ = ["METRICS", "Variant", "Table", "load_tables", "paper_tables",
           "resolve_table", "run_dir", "read_run", "is_finished", "run_overrides", "command_for",
           "with_overrides", "config_file"]

METRICS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")
NORM_IMAGES = 16  # validation images used to measure feature norms (feature_norms.json)
# Table keys of the second training loop that the trainer's config options replaced.
REPLACED_KEYS = ("engine", "resolution", "loss_on", "loss_stride", "cache_features")


@dataclass(frozen=True)
class Variant:
    name: str  # run directory name, unique within a protocol
    label: str  # the row as the paper names it
    config: str  # config file: a path, or configs/paper/<row>.yaml (shipped, config_file)
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
    # How `parsenet study` names the table's source: "--paper" or "--spec <file>".
    source: str = "--paper"


def _spec_path(spec_file: str | Path) -> Path:
    path = Path(spec_file)
    if not path.is_file():
        raise ConfigError(f"{spec_file}: study spec not found")
    return path


def _variant(v: dict[str, Any], table_overrides: list[str]) -> Variant:
    paper = v.get("paper") or ()
    return Variant(name=v["name"], label=v.get("label", v["name"]), config=v["config"],
                   overrides=(*table_overrides, *v.get("overrides", ())),
                   seeds=tuple(v.get("seeds", (0,))),
                   priority=int(v.get("priority", 9)),
                   paper=(paper,) if isinstance(paper, str) else tuple(paper))


def load_tables(spec_file: str | Path) -> dict[str, Table]:
    """The tables of a study spec (YAML: ``tables: {key: ...}``; ``paper_figures: <file>``
    replaces the paper's figures shipped with the package). A table's ``overrides`` come
    before each variant's own."""
    path = _spec_path(spec_file)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
        paper = load_paper_figures(_spec_path(spec["paper_figures"]) if spec.get(
            "paper_figures") else None).rows
        tables, runs = {}, {}
        for key, t in spec["tables"].items():
            variants = tuple(_variant(v, list(t.get("overrides", ()))) for v in t["variants"])
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
            replaced = [k for k in REPLACED_KEYS if k in t]
            if replaced:
                problems.append(f"{', '.join(replaced)}: no longer table keys; give the "
                                "table overrides of data.resize, train.frozen_prefix and "
                                "train.loss_stride instead")
            if problems:
                raise ConfigError(f"{path}: table {key}: {'; '.join(problems)}")
            tables[str(key)] = Table(
                key=str(key), title=t["title"], protocol=t["protocol"],
                paper_tables=t.get("paper_tables", "n/a"), note=t.get("note", "").strip(),
                variants=variants, claims=claims,  # type: ignore[arg-type]
                aliases=tuple(str(a) for a in t.get("aliases", ())), paper=paper,
                paper_keys=tuple(str(k) for k in t.get("paper_keys", ())),
                source=f"--spec {spec_file}")
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


def resolve_table(table: str | int, spec_file: str | Path | None = None, paper: bool = False
                  ) -> Table:
    """A table of the study spec by key or alias; with ``paper``, one of the paper's
    Tables 1-8 (:func:`paper_tables`)."""
    if not paper and spec_file is None:
        raise ConfigError(f"study table {table!r}: give paper=True (the paper's Tables 1-8) "
                          "or a study spec file")
    tables = paper_tables() if paper or spec_file is None else load_tables(spec_file)
    key = str(table)
    for t in tables.values():
        if key == t.key or key in t.aliases:
            return t
    raise ConfigError(f"unknown study table {key!r}; known: "
                      + ", ".join(f"{t.key} (= {', '.join(t.aliases)})" if t.aliases else t.key
                                  for t in tables.values()))


def run_dir(out_root: str | Path, table: Table, variant: Variant, seed: int) -> Path:
    return Path(out_root) / table.protocol / variant.name / f"seed{seed}"


# What a run writes beside metrics.json, and the key each gets in its one-file record.
RUN_EXTRAS = {"diverged.json": "diverged", "attempts.json": "attempts",
              "feature_norms.json": "feature_norms"}


def read_run(path: Path) -> dict[str, Any]:
    """A run's record: metrics.json's content (``metrics``, ``iteration``, ``config``, ...)
    with ``diverged``, ``attempts`` and ``feature_norms`` from the files beside it, or the
    same from a ``results.json`` that holds them all (a run kept as one file, as the lab's
    committed evidence is). Empty for a run that has not ended."""
    path = Path(path)
    whole = _read_json(path / "results.json")
    if isinstance(whole, dict) and ("metrics" in whole or "diverged" in whole):
        return whole
    record = dict(_read_json(path / "metrics.json") or {})
    for name, key in RUN_EXTRAS.items():
        value = _read_json(path / name)
        if value is not None:
            record[key] = value
    return record


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def is_finished(path: Path) -> bool:
    record = read_run(path)
    return "metrics" in record or "diverged" in record


def run_overrides(variant: Variant, seed: int, path: Path) -> list[str]:
    return [*variant.overrides, f"train.seed={seed}", f"train.out_dir={path}",
            "train.progress=false"]


def command_for(variant: Variant, seed: int, path: Path) -> str:
    """The command that trains this run on its own: ``parsenet train``."""
    sets = " ".join(f"--set '{o}'" for o in run_overrides(variant, seed, path)
                    if not o.startswith("train.progress"))
    return f"parsenet train --config {variant.config} {sets}"


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
