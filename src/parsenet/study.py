"""The paper's ablations at CPU scale: train a table's variants, print ours beside the paper's.

    run_study(3)             # SiftFlow analogue of Tables 3/4: layers x (no norm, L2Norm)
    run_study("6")           # SiftFlow analogue of Tables 6/7: fusion and scale
    run_study("camvid")      # context on CamVid: baseline vs ParseNet

Each variant is a config file plus dotted overrides (the same ones ``parsenet train --config
... --set ...`` takes) and a list of seeds. A run lives in ``<out_root>/<protocol>/<variant>/
seed<k>``; tables that share a protocol (SiftFlow's Tables 3 and 6) share runs. A finished run
(``metrics.json``, or ``diverged.json`` when the loss became NaN, which the paper calls a
collapse) is skipped; an interrupted one resumes from its last checkpoint. Every finished run
also gets ``feature_norms.json``: the mean L2 norm of each layer's features on validation
images (the paper's Fig. 2), which tells whether the scale gap that motivates L2Norm exists.

Results go to ``<out_root>/<table>/results.json``; :func:`write_results_md` regenerates the
marked sections of docs/RESULTS.md from those files, so no figure there is typed by hand.
The tables (variants, seeds, claims) are data: ``configs/cpu/study.yaml``; the paper's
figures are in ``configs/paper/paper_results.yaml`` (``n/a`` where not retrieved).
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from parsenet.config import ConfigError, load_config

__all__ = ["run_study", "report", "write_results_md", "collect_rows", "format_table", "load_tables",
           "Table", "Variant", "METRICS"]

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
        path = Path(__file__).resolve().parents[2] / spec_file
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
    from parsenet.engine.trainer import TrainingDivergedError, train

    config = load_config(variant.config, _overrides(variant, seed, path))
    resume = (path / "checkpoints" / "last.pt").is_file()
    path.mkdir(parents=True, exist_ok=True)
    attempts_file = path / "attempts.json"
    attempts = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
    start, outcome = time.perf_counter(), "interrupted"
    try:
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


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _mean_spread(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def collect_rows(table: Table, out_root: str | Path = "runs/study",
                 seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """One row per variant from the run directories (finished seeds only)."""
    rows = []
    for v in table.variants:
        runs = []
        for seed in (seeds if seeds is not None else v.seeds):
            path = run_dir(out_root, table, v, seed)
            metrics, diverged = _read_json(path / "metrics.json"), _read_json(
                path / "diverged.json")
            attempts = _read_json(path / "attempts.json") or []
            run: dict[str, Any] = {"seed": seed, "dir": str(path),
                                   "command": command_for(v, seed, path)}
            if metrics:
                run.update(status="finished", iterations=metrics.get("iteration"),
                           final_loss=metrics.get("final_loss"),
                           images_per_s=metrics.get("images_per_s"),
                           **{m: 100.0 * metrics["metrics"][m] for m in METRICS})
            elif diverged:
                run.update(status="diverged", error=diverged["error"])
            else:
                run.update(status="missing")
            run["wall_s"] = (sum(a["seconds"] for a in attempts) if attempts
                             else (metrics or {}).get("wall_time_s"))
            run["feature_norms"] = _read_json(path / "feature_norms.json")
            run["commits"] = sorted({a["commit"] for a in attempts if a.get("commit")})
            runs.append(run)
        done = [r for r in runs if r["status"] == "finished"]
        row: dict[str, Any] = {"variant": v.name, "label": v.label, "config": v.config,
                               "overrides": list(v.overrides), "runs": runs,
                               "finished": len(done),
                               "diverged": sum(r["status"] == "diverged" for r in runs),
                               "paper": table.paper.get(v.paper) if v.paper else None}
        for m in METRICS:
            if done:
                row[m], row[m + "_spread"] = _mean_spread([r[m] for r in done])
        walls = [r["wall_s"] for r in runs if r["wall_s"] and r["status"] != "missing"]
        row["wall_s"] = sum(walls) / len(walls) if walls else None
        rows.append(row)
    return rows


def _cell(row: dict[str, Any], metric: str) -> str:
    if metric not in row:
        return "diverged" if row["diverged"] else "-"
    spread = row.get(metric + "_spread")
    text = f"{row[metric]:.1f}" + (f" ± {spread:.1f}" if spread is not None else "")
    return text + (f" ({row['diverged']} div.)" if row["diverged"] else "")


def _paper_cell(row: dict[str, Any]) -> str:
    """The paper's figures of the matching row (only those retrieved), and where from."""
    paper = row["paper"] or {}
    names = {"pixel_acc": "pixel", "mean_acc": "mean acc", "mean_iou": "mean IU",
             "fw_iou": "f.w. IU"}
    known = [f"{names[m]} {paper[m]:.1f}" for m in METRICS if paper.get(m) is not None]
    if not known:
        return "n/a"
    return ", ".join(known) + f" ({paper.get('table', '?')}: {paper.get('row', '?')})"


def _norm_cell(row: dict[str, Any]) -> str:
    norms = [r["feature_norms"]["feature_norm"] for r in row["runs"] if r.get("feature_norms")]
    if not norms:
        return "-"
    taps = ("conv3", "conv4", "conv5", "fc7", "pool6")
    text = " / ".join(f"{sum(n[t] for n in norms) / len(norms):.3g}" for t in taps)
    scales = [v for r in row["runs"] if r.get("feature_norms")
              for v in r["feature_norms"]["l2norm_scale_mean"].values()]
    return text + (f" (scale {sum(scales) / len(scales):.4g})" if scales else "")


def format_table(table: Table, rows: list[dict[str, Any]]) -> str:
    """A Markdown table: ours (mean ± sample std over finished seeds) beside the paper's."""
    head = ("| variant | seeds | pixel acc | mean acc | mean IU | f.w. IU | wall (min/run) "
            "| feature norm conv3 / conv4 / conv5 / fc7 / pool6 (learned L2Norm scale) "
            "| paper (n/a: not retrieved) |")
    lines = [head, "|" + " --- |" * 9]
    for row in rows:
        wall = f"{row['wall_s'] / 60:.1f}" if row["wall_s"] else "-"
        seeds = f"{row['finished']}/{len(row['runs'])}"
        lines.append(f"| {row['label']} | {seeds} | "
                     + " | ".join(_cell(row, m) for m in METRICS)
                     + f" | {wall} | {_norm_cell(row)} | {_paper_cell(row)} |")
    return "\n".join(lines)


def comparisons(table: Table, rows: list[dict[str, Any]]) -> list[str]:
    """The table's claims, each as 'ours: delta mean IU' computed from the rows."""
    by_name = {r["variant"]: r for r in rows}
    out = []
    for better, worse, claim in table.claims:
        a, b = by_name[better], by_name[worse]
        if "mean_iou" not in a or "mean_iou" not in b:
            out.append(f"- {claim}: not measured yet ({a['label']}: {a['finished']} seeds, "
                       f"{b['label']}: {b['finished']} seeds finished)")
            continue
        worse_by_seed = {r["seed"]: r for r in b["runs"] if r["status"] == "finished"}
        deltas = [r["mean_iou"] - worse_by_seed[r["seed"]]["mean_iou"] for r in a["runs"]
                  if r["status"] == "finished" and r["seed"] in worse_by_seed]
        per_seed = ", ".join(f"{d:+.1f}" for d in deltas) or "no common seed"
        out.append(f"- {claim}: ours {a['mean_iou'] - b['mean_iou']:+.1f} mean IU "
                   f"({a['label']} vs {b['label']}; per seed: {per_seed})")
    return out


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _git_commit() -> str:
    return _run("git", "rev-parse", "--short", "HEAD")


def machine_facts() -> dict[str, Any]:
    import torch

    return {"commit": _git_commit(), "cpus": _run("nproc"),
            "platform": platform.platform(), "processor": platform.processor() or "unknown",
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def run_study(table: str | int, *, seeds: list[int] | None = None,
              out_root: str | Path = "runs/study", only: list[str] | None = None,
              dry_run: bool = False, spec_file: str | Path = SPEC_FILE) -> list[dict[str, Any]]:
    """Train the variants of ``table`` that have not finished, print the table, write
    ``<out_root>/<table>/results.json``; returns the rows. ``only`` restricts to some
    variant names, ``seeds`` replaces every variant's seeds, ``dry_run`` lists the runs."""
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


def report(table: str | int, *, seeds: list[int] | None = None,
           out_root: str | Path = "runs/study", spec_file: str | Path = SPEC_FILE
           ) -> list[dict[str, Any]]:
    """Tabulate the finished runs of ``table`` (training nothing): print the table and
    write ``<out_root>/<table>/results.json``; returns the rows."""
    spec = resolve_table(table, spec_file)
    rows = collect_rows(spec, out_root, seeds)
    result = {"table": spec.key, "title": spec.title, "paper_tables": spec.paper_tables,
              "protocol": spec.protocol, "note": spec.note,
              "command": f"parsenet study --table {spec.key}", "rows": rows,
              "claims": comparisons(spec, rows), "machine": machine_facts(),
              "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = Path(out_root) / spec.key / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{spec.title}\n\n{format_table(spec, rows)}\n")
    print("\n".join(result["claims"]))
    return rows


def render_section(result: dict[str, Any], spec_file: str | Path = SPEC_FILE) -> str:
    """The Markdown of one table's results.json."""
    spec = resolve_table(result["table"], spec_file)
    m = result["machine"]
    runs = [r for row in result["rows"] for r in row["runs"]]
    missing = [f"{row['variant']} seed {r['seed']}" for row in result["rows"]
               for r in row["runs"] if r["status"] == "missing"]
    commits = sorted({c for r in runs for c in r.get("commits", [])})
    lines = [
        f"Command: `{result['command']}` (from the repo root). Written {result['written']} "
        f"at commit `{m['commit']}`; runs trained at commit(s) "
        f"{', '.join(f'`{c}`' for c in commits) or 'not recorded'} on {m['cpus']} CPUs "
        f"({m['platform']}, Python "
        f"{m['python']}, torch {m['torch']}, {m['torch_threads']} threads). "
        f"Paper: {result['paper_tables']}.",
        "", result["note"], "", format_table(spec, result["rows"]), "",
        "Claims (mean IU difference, ours; the paper's reading is in the text):", "",
        *result["claims"], "",
        f"Runs finished: {sum(r['status'] == 'finished' for r in runs)}, diverged: "
        f"{sum(r['status'] == 'diverged' for r in runs)}, not run yet: {len(missing)}"
        + (f" ({', '.join(missing)})." if missing else "."),
    ]
    return "\n".join(lines)


def write_results_md(path: str | Path = "docs/RESULTS.md", out_root: str | Path = "runs/study",
                     spec_file: str | Path = SPEC_FILE) -> list[str]:
    """Replace each ``<!-- study:<key>:begin -->`` ... ``<!-- study:<key>:end -->`` section of
    ``path`` by the rendering of ``<out_root>/<key>/results.json``; returns the keys
    rewritten. Text outside the markers is left as it is."""
    path = Path(path)
    text = path.read_text()
    written = []
    for key in load_tables(spec_file):
        begin, end = f"<!-- study:{key}:begin -->", f"<!-- study:{key}:end -->"
        result = _read_json(Path(out_root) / key / "results.json")
        if begin not in text or end not in text or result is None:
            continue
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{render_section(result, spec_file)}\n{end}{tail}"
        written.append(key)
    path.write_text(text)
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m parsenet.study --table 3 [--only a b] [--seeds 0 1] [--dry-run]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m parsenet.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="a key of configs/cpu/study.yaml")
    parser.add_argument("--only", nargs="+", help="variant names to run")
    parser.add_argument("--seeds", nargs="+", type=int, help="replace the variants' seeds")
    parser.add_argument("--out-root", default="runs/study")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--report", action="store_true", help="tabulate finished runs only")
    parser.add_argument("--write-md", metavar="PATH", help="then regenerate this RESULTS.md")
    args = parser.parse_args(argv)
    if args.report:
        report(args.table, seeds=args.seeds, out_root=args.out_root)
    else:
        run_study(args.table, seeds=args.seeds, out_root=args.out_root, only=args.only,
                  dry_run=args.dry_run)
    if args.write_md:
        print("rewrote sections:", write_results_md(args.write_md, args.out_root))


if __name__ == "__main__":
    main()
