"""Slim finished runs to the lab's evidence: per run, one ``results.json`` and a short card.

    python -m lab.tools.slim_runs lab/runs/study
    python -m lab.tools.slim_runs lab/runs/recipes/stanford_seed0 --command "parsenet train ..."

A run directory is one holding ``metrics.json`` or ``diverged.json`` (what the trainer and
the study write when a run ends). Its ``results.json`` gets, in one file: the final
validation (per-class IU and the confusion matrix included), the config as a dict, the
command, CPU, precision and wall time where known, the attempts, the feature norms and the
training log; a ``card.json`` written by :mod:`lab.tools.publish_run` is folded in too. Then
the folded files are deleted, and so is a ``curve.png`` that no card shows (the log it was
drawn from is in ``results.json``). A run without a ``README.md`` gets a card written from
the record. Running it again on a slimmed run rewrites the same files.

A run of the lab's study gets its command from the table reports beside it
(``<root>/<table>/results.json``, which name each run's directory and command).

A second evaluation of the run, in its recipe's release protocol (e.g. multi-scale + flip),
is kept under one key, ``release_eval``: ``{"overrides": the eval settings that differ from
the config's eval, "weights": what was scored ("released fp16" or "fp32 checkpoint"),
"metrics": the four figures and the per-class IU}``. ``--release-eval FILE`` folds in the
JSON that ``parsenet eval --out FILE`` wrote (with ``--release-eval-set`` giving its settings);
a record that kept it under the older ``eval_multiscale_flip`` key is moved to
``release_eval`` when slimmed again.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from parsenet.apps.study import read_run

__all__ = ["FOLDED", "find_runs", "slim_record", "slim_run", "card_markdown", "table_commands",
           "release_eval_entry", "RELEASE_EVAL_FIGURES", "parse_settings", "read_log",
           "log_segments", "log_wall_seconds"]

# Every file whose content results.json takes over; deleted once it has.
FOLDED = ("metrics.json", "diverged.json", "attempts.json", "feature_norms.json",
          "config.yaml", "log.jsonl", "card.json")
# The files beside metrics.json, and the key each gets in results.json (read_run's keys; a
# publish_run card's facts go in at the top level).
EXTRAS = {"diverged.json": "diverged", "attempts.json": "attempts",
          "feature_norms.json": "feature_norms"}
CURVE = "curve.png"
# Keys of an earlier results.json that repeat what the record holds in full.
REPEATS = ("summary", "val_metrics")
# What a card says results.json holds, where the record has it.
HELD = (("diverged", "the error"), ("metrics", "these figures with the per-class IU"),
        ("confusion", "the confusion matrix"), ("config", "the config"),
        ("feature_norms", "the feature norms"), ("attempts", "the attempts"),
        ("log", "the training log"))
# What a release_eval entry keeps of an evaluation's metrics.
RELEASE_EVAL_FIGURES = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou", "per_class_iou")
# The older key of the same entry: the multi-scale + flip scores of an unreleased run, with its
# settings said only by the name (the scales: the config's eval.scales) and its fp32 weights
# said only on its card.
_LEGACY_EVAL = "eval_multiscale_flip"
# The facts first, then the figures, then the long lists.
ORDER = ("run", "status", "command", "cpu", "precision", "wall_time_s", "tables", "iteration",
         "final_loss", "images_per_s", "diverged", "metrics", "feature_norms", "attempts",
         "config", "log")


def find_runs(root: Path) -> list[Path]:
    """The run directories under ``root`` (itself included), sorted."""
    root = Path(root)
    found = {p.parent for name in ("metrics.json", "diverged.json") for p in root.rglob(name)}
    found |= {p.parent for p in root.rglob("results.json")
              if {"metrics", "diverged"} & read_run(p.parent).keys()}
    return sorted(found)


def table_commands(root: Path) -> dict[Path, list[tuple[str, str]]]:
    """Run directory -> [(table, command)] from the table reports ``<root>/*/results.json``
    (``parsenet study --report``), whose rows name each run's directory."""
    out: dict[Path, list[tuple[str, str]]] = {}
    for report in sorted(Path(root).glob("*/results.json")):
        result = json.loads(report.read_text())
        for row in result.get("rows") or []:
            for run in row["runs"]:
                out.setdefault(Path(run["dir"]).resolve(), []).append(
                    (result["table"], run["command"]))
    return out


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def read_log(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_segments(log: list[dict[str, Any]]) -> list[float]:
    """Last timestamp of each process's stretch of a training log (a resume restarts the
    clock)."""
    ends: list[float] = []
    last = -1.0
    for record in log:
        time = float(record["time"])
        # The trainer marks each process's start; the cached engine's log does not, but its
        # clock restarts too.
        if record.get("event") in ("start", "resume") or not ends or time < last:
            ends.append(0.0)
        ends[-1] = max(ends[-1], time)
        last = time
    return ends


def log_wall_seconds(log: list[dict[str, Any]]) -> float:
    """A run's wall time over all its processes: each one's own where the trainer wrote it at
    its end (it includes work before the log's clock starts, such as building a prefix
    cache), else the log's clock, per process."""
    ends = [r["wall_time_s"] for r in log if r.get("event") == "end" and "wall_time_s" in r]
    segments = log_segments(log)
    return sum(ends) if len(ends) == len(segments) else sum(segments)


def slim_record(run: Path, *, name: str | None = None, command: str | None = None,
                cpu: str | None = None, tables: list[tuple[str, str]] | None = None,
                release_eval: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one-file record of ``run`` (see the module docstring); reads, writes nothing."""
    run = Path(run)
    # The files a run (or a republish) wrote last win over an earlier results.json.
    record = dict(_read_json(run / "results.json") or {})
    metrics = _read_json(run / "metrics.json")
    if metrics is not None:
        record.pop("diverged", None)
        record.update(metrics)
    for file, key in EXTRAS.items():
        value = _read_json(run / file)
        if value is not None:
            record[key] = value
    if "metrics" not in record and "diverged" not in record:
        raise ValueError(f"{run}: not a finished run (no metrics.json or diverged.json)")
    record.update(_read_json(run / "card.json") or {})
    if (run / "config.yaml").is_file() and "config" not in (metrics or {}):
        record["config"] = yaml.safe_load((run / "config.yaml").read_text())
    log = read_log(run / "log.jsonl")
    if log is not None:
        record["log"] = log
    log = record.get("log") or []
    if all("time" in r for r in log) and len(log_segments(log)) > 1:
        # a resumed run: the trainer's own figure is its last process's alone
        record["wall_time_s"] = log_wall_seconds(log)
    if tables:
        record.setdefault("tables", [t for t, _ in tables])
        record["command"] = record.get("command") or tables[0][1]
    record.setdefault("run", name or run.name)
    record["status"] = "diverged" if "diverged" in record else "finished"
    for key, given in (("command", command), ("cpu", cpu), ("precision", record.get("amp"))):
        record[key] = record.get(key) or given
    for key in REPEATS:
        record.pop(key, None)
    if release_eval is not None:
        record["release_eval"] = release_eval
    _normalise_release_eval(record)
    return {**{k: record[k] for k in ORDER if k in record},
            **{k: v for k, v in record.items() if k not in ORDER}}


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` command-line settings as a dict, each value read as YAML (``true``,
    ``[1.0,1.5]``); an item without ``=`` raises ValueError."""
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}


def release_eval_entry(metrics: dict[str, Any], overrides: dict[str, Any],
                       weights: str) -> dict[str, Any]:
    """The ``release_eval`` entry of a record (see the module docstring)."""
    return {"overrides": dict(overrides), "weights": weights,
            "metrics": {k: metrics[k] for k in RELEASE_EVAL_FIGURES if k in metrics}}


def _normalise_release_eval(record: dict[str, Any]) -> None:
    """One key and one shape for the release-protocol evaluation, whichever tool wrote it."""
    legacy = record.pop(_LEGACY_EVAL, None)
    if legacy is not None and "release_eval" not in record:
        scales = ((record.get("config") or {}).get("eval") or {}).get("scales")
        overrides = {"mode": "multiscale", "flip": True,
                     **({"scales": scales} if scales else {})}
        record["release_eval"] = release_eval_entry(legacy, overrides, "fp32 checkpoint")
    entry = record.get("release_eval")
    if entry is not None and "weights" not in entry:
        # Before the key existed only lab.tools.publish_run wrote the entry, and it scores
        # the released (fp16) model.
        record["release_eval"] = release_eval_entry(entry["metrics"], entry["overrides"],
                                                    "released fp16")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def card_markdown(record: dict[str, Any]) -> str:
    """A short card: what ran, how, on what, and its figures."""
    config = record.get("config") or {}
    model = config.get("model") or {}
    train = config.get("train") or {}
    wall = record.get("wall_time_s")
    attempts = record.get("attempts") or []
    commits = sorted({a["commit"] for a in attempts if a.get("commit")})
    lines = [f"# {record['run']}", "",
             f"- command: `{record['command']}`" if record.get("command")
             else "- command: not recorded with the run",
             *([f"- tables: {', '.join(record['tables'])} (docs/RESULTS.md)"]
               if record.get("tables") else []),
             f"- config: {config.get('name', '-')}; {model.get('name', '-')} "
             f"{json.dumps(model.get('args', {}))}; {train.get('iterations', '-')} iterations "
             f"of batch {train.get('batch_size', '-')}, seed {train.get('seed', '-')}",
             f"- CPU: {record.get('cpu') or 'not recorded with the run'}; precision "
             f"{record.get('precision') or 'not recorded'}; wall time "
             + (f"{wall / 60:.1f} min" if wall else "not recorded")
             + (f"; {len(attempts)} attempt(s) at commit(s) {', '.join(commits)}"
                if commits else "")]
    if record["status"] == "diverged":
        lines.append(f"- diverged: {record['diverged'].get('error', '')}")
    else:
        m = record["metrics"]
        lines.append(f"- val: pixel acc {_pct(m.get('pixel_acc'))}, mean acc "
                     f"{_pct(m.get('mean_acc'))}, mean IU {_pct(m.get('mean_iou'))}, f.w. IU "
                     f"{_pct(m.get('fw_iou'))}")
    held = [text for key, text in HELD if record.get(key) or (
        key == "confusion" and (record.get("metrics") or {}).get("confusion"))]
    lines += ["", f"results.json holds {', '.join(held)}.", ""]
    return "\n".join(lines)


def slim_run(run: Path, **facts: Any) -> dict[str, Any]:
    """Write ``run``'s record and card, delete what they took over; returns the record."""
    run = Path(run)
    record = slim_record(run, **facts)
    (run / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    card = run / "README.md"
    if not card.is_file():
        card.write_text(card_markdown(record))
    shown = card.read_text()
    for name in FOLDED:
        (run / name).unlink(missing_ok=True)
    if CURVE not in shown:
        (run / CURVE).unlink(missing_ok=True)
    return record


def _release_eval_arg(ap: argparse.ArgumentParser, args: argparse.Namespace
                      ) -> dict[str, Any] | None:
    if args.release_eval is None:
        if args.release_eval_set:
            ap.error("--release-eval-set needs --release-eval")
        return None
    if len(args.roots) != 1 or not args.release_eval_set:
        ap.error("--release-eval takes one run directory and its --release-eval-set settings")
    try:
        metrics = json.loads(args.release_eval.read_text())["metrics"]
        if not all(k in metrics for k in RELEASE_EVAL_FIGURES[:4]):
            raise ValueError("its metrics lack pixel_acc, mean_acc, mean_iou or fw_iou")
        overrides = parse_settings(args.release_eval_set)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        ap.error(f"--release-eval {args.release_eval}: not an evaluation's JSON with its "
                 f"KEY=VALUE settings ({err})")
    return release_eval_entry(metrics, overrides, "fp32 checkpoint")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.tools.slim_runs",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("roots", type=Path, nargs="+", help="run directories, or folders of them")
    ap.add_argument("--command", default=None, help="the command, where a run records none")
    ap.add_argument("--cpu", default=None, help="the CPU, where a run records none")
    ap.add_argument("--release-eval", type=Path, default=None, metavar="EVAL_JSON",
                    help="one run's second evaluation, the JSON `parsenet eval --checkpoint "
                    "... --out EVAL_JSON` wrote with the release's settings")
    ap.add_argument("--release-eval-set", action="append", default=[], metavar="KEY=VALUE",
                    help="those settings, e.g. mode=multiscale, flip=true, "
                    "scales=[0.75,1.0,1.25] (repeatable; YAML values)")
    args = ap.parse_args(argv)
    release_eval = _release_eval_arg(ap, args)
    for root in args.roots:
        commands = table_commands(root)
        for run in find_runs(root):
            name = run.relative_to(root).as_posix() if run != root else run.name
            slim_run(run, name=name, command=args.command, cpu=args.cpu,
                     tables=commands.get(run.resolve()), release_eval=release_eval)
            print(run)


if __name__ == "__main__":
    main()
