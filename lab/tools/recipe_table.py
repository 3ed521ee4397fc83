"""The fine-tune recipes' seed tables in docs/RESULTS.md, generated from every recipe run's record.

    python -m lab.tools.recipe_table           # rewrite the block and the runs' card blocks
    python -m lab.tools.recipe_table --check   # exit 1 if a file would change

A run of a recipe is a record (``lab/runs/releases/*/results.json``,
``lab/runs/recipes/*/results.json``) whose config is ``configs/recipes/<dataset>.yaml`` up to
:data:`FREE`: the fields a run sets without changing the recipe (its name, seed and output
folder, and the variant's switches). Its variant comes from the config too: ParseNet (pool6
and L2Norm, ``model.args.context`` and ``model.args.normalize``), baseline (neither). A record
named as the recipe (``name``, or ``name`` + ``_baseline``) whose config differs elsewhere
(an earlier version, e.g. fewer iterations) is listed with what differs, not summarised.

Per dataset and eval protocol: the trainer's final validation (the config's ``eval``) and,
where the record has one, ``release_eval`` (the release's default evaluation, e.g. multi-scale
+ flip; see :mod:`lab.tools.slim_runs`). Each variant's figures are mean ± sample std (n - 1)
over its seeds, one seed without ±. ParseNet − baseline in mean IU per seed both ran, and
the verdict of the claims tables (:func:`lab.study.claims.verdict`) on "ParseNet beats the
baseline".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.study.claims import verdict

__all__ = ["RecipeRun", "find_recipe_runs", "load_recipes", "render_block", "render_card",
           "write_all", "variant_of", "BEGIN", "END", "CARD_BEGIN", "CARD_END"]

REPO = Path(__file__).resolve().parents[2]  # the checkout: lab/tools/ is two below it
RECIPES = REPO / "configs" / "recipes"
RUN_FOLDERS = (REPO / "lab" / "runs" / "releases", REPO / "lab" / "runs" / "recipes")
RESULTS = REPO / "docs" / "RESULTS.md"
BEGIN, END = "<!-- recipes:begin -->", "<!-- recipes:end -->"
CARD_BEGIN, CARD_END = "<!-- recipe-table:begin -->", "<!-- recipe-table:end -->"
# What a run may set without being another recipe: where it writes (and keeps its prefix
# cache), its name, its seed, and the two switches that make the variant.
FREE = frozenset({"name", "train.seed", "train.out_dir", "train.progress",
                  "train.frozen_prefix.cache", "model.args.context", "model.args.normalize"})
FIGURES = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")
VARIANT_ORDER = ("ParseNet", "baseline", "pool6, no L2Norm", "L2Norm, no pool6")


@dataclass
class RecipeRun:
    """One record of a recipe's run: where it is, what it is, and its figures per protocol
    (protocol -> (figures, what was scored))."""

    path: Path
    recipe: str
    variant: str
    seed: int
    record: dict[str, Any]
    differs: list[str] = field(default_factory=list)
    scores: dict[str, tuple[dict[str, float], str]] = field(default_factory=dict)


def variant_of(config: dict[str, Any]) -> str:
    """ParseNet (pool6 + L2Norm), baseline (neither), or which one it has."""
    args = (config.get("model") or {}).get("args") or {}
    context, normalize = bool(args.get("context", True)), bool(args.get("normalize", True))
    return {(True, True): "ParseNet", (False, False): "baseline",
            (True, False): "pool6, no L2Norm", (False, True): "L2Norm, no pool6"}[
        (context, normalize)]


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _differences(config: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    """The recipe's fields this config sets otherwise (a field only one side has is a field
    the config schema gained or lost since the run: not a difference of recipe)."""
    ours, theirs = _flat(config), _flat(recipe)
    return [f"{key} {json.dumps(ours[key])} (the recipe: {json.dumps(theirs[key])})"
            for key in sorted(ours.keys() & theirs.keys())
            if key not in FREE and ours[key] != theirs[key]]


def load_recipes(folder: Path = RECIPES) -> dict[str, dict[str, Any]]:
    """Dataset (the file's stem) -> the recipe's full config, defaults filled in."""
    from parsenet.config import config_to_dict, load_config

    return {path.stem: config_to_dict(load_config(path))
            for path in sorted(Path(folder).glob("*.yaml"))}


def _protocol(eval_cfg: dict[str, Any]) -> str:
    mode = eval_cfg.get("mode", "whole")
    if mode == "whole":
        text = "whole images"
    elif mode == "multiscale":
        text = "scales " + " / ".join(f"{s:g}" for s in eval_cfg.get("scales") or [])
    else:
        text = f"{mode} {eval_cfg.get('window', '')}".strip()
    return text + (" + flip" if eval_cfg.get("flip") else "")


def _scores(record: dict[str, Any]) -> dict[str, tuple[dict[str, float], str]]:
    eval_cfg = (record.get("config") or {}).get("eval") or {}
    out = {_protocol(eval_cfg): (record["metrics"], "the trainer's final validation")}
    extra = record.get("release_eval")
    if extra:
        out[_protocol({**eval_cfg, **extra["overrides"]})] = (extra["metrics"], extra["weights"])
    return out


def find_recipe_runs(recipes: dict[str, dict[str, Any]],
                     folders: Sequence[Path] = RUN_FOLDERS) -> list[RecipeRun]:
    """Every finished record of a recipe's run under ``folders`` (see the module docstring)."""
    runs = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*/results.json")):
            try:
                record = json.loads(path.read_text())
            except ValueError as err:
                raise ValueError(f"{path}: not a run record's JSON ({err})") from None
            config = record.get("config") if isinstance(record, dict) else None
            if not isinstance(config, dict) or "metrics" not in record:
                continue
            for name, recipe in recipes.items():
                differs = _differences(config, recipe)
                named = config.get("name") in (recipe["name"], recipe["name"] + "_baseline")
                if not differs or named:
                    runs.append(RecipeRun(path.parent, name, variant_of(config),
                                          int((config.get("train") or {}).get("seed", 0)),
                                          record, differs,
                                          _scores(record)))
                    break
    return runs


def _pm(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _variants(runs: list[RecipeRun]) -> list[str]:
    present = {r.variant for r in runs}
    return [v for v in VARIANT_ORDER if v in present]


def _seeds(runs: list[RecipeRun], variant: str, protocol: str) -> list[RecipeRun]:
    """The variant's runs scored in ``protocol``, by seed."""
    return sorted((r for r in runs if r.variant == variant and protocol in r.scores),
                  key=lambda r: r.seed)


def _summary(runs: list[RecipeRun], protocols: list[str]) -> list[str]:
    lines = ["| eval | variant | seeds | pixel acc | mean acc | mean IU | f.w. IU | scored |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for protocol in protocols:
        for variant in _variants(runs):
            done = _seeds(runs, variant, protocol)
            if not done:
                continue
            scored = sorted({r.scores[protocol][1] for r in done})
            if len(scored) > 1:  # say which seed had which weights
                scored = [f"{r.scores[protocol][1]} (seed {r.seed})" for r in done]
            figures = [_pm([r.scores[protocol][0][k] for r in done]) for k in FIGURES]
            lines.append(f"| {protocol} | {variant} | {len(done)} "
                         f"({', '.join(str(r.seed) for r in done)}) | {' | '.join(figures)} | "
                         f"{'; '.join(scored)} |")
    return lines


@dataclass
class _Comparison:
    """ParseNet against the baseline in one protocol, as the tables print it: the per-seed
    mean IU differences, their mean (± std), and the claims tables' verdict."""

    seeds: list[int]
    per_seed: str
    mean: str
    verdict: str


def _compare(runs: list[RecipeRun], protocol: str) -> _Comparison:
    scored = {v: [(r.seed, r.scores[protocol][0]["mean_iou"]) for r in _seeds(runs, v, protocol)]
              for v in ("ParseNet", "baseline")}
    iou = {v: dict(pairs) for v, pairs in scored.items()}
    both = sorted(iou["ParseNet"].keys() & iou["baseline"].keys())
    gaps = [100 * (iou["ParseNet"][s] - iou["baseline"][s]) for s in both]
    per_seed = ", ".join(f"seed {s}: {g:+.2f}" for s, g in zip(both, gaps, strict=True)) or "-"
    mean = "-" if not gaps else f"{statistics.mean(gaps):+.2f}" + (
        f" ± {statistics.stdev(gaps):.2f}" if len(gaps) > 1 else "")
    said = verdict(*([value for _, value in scored[v]] for v in ("ParseNet", "baseline")))
    return _Comparison(both, per_seed, mean, said)


def _differences_table(runs: list[RecipeRun], protocols: list[str]) -> list[str]:
    lines = ["| eval | ParseNet − baseline, mean IU, per seed | mean of the seeds' differences "
             "| ParseNet beats the baseline |", "| --- | --- | --- | --- |"]
    for protocol in protocols:
        got = _compare(runs, protocol)
        lines.append(f"| {protocol} | {got.per_seed} | {got.mean} | {got.verdict} |")
    return lines


def _cell(run: RecipeRun, protocol: str) -> str:
    if protocol not in run.scores:
        return "-"
    figures, scored = run.scores[protocol]
    text = " / ".join(f"{100 * figures[k]:.1f}" for k in FIGURES)
    return text + (f" ({scored})" if scored == "fp32 checkpoint" else "")


def _link(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _runs_table(runs: list[RecipeRun], protocols: list[str], docs: Path) -> list[str]:
    lines = ["| run | variant | seed | iterations | CPU, precision | wall min | "
             + " | ".join(protocols) + " | in the summary |",
             "| --- " * (7 + len(protocols)) + "|"]
    for run in sorted(runs, key=lambda r: (bool(r.differs), VARIANT_ORDER.index(r.variant),
                                           r.seed, r.path.name)):
        rec = run.record
        link = f"[{run.path.name}]({_link(run.path / 'README.md', docs)})"
        released = f", released `{rec['release']}`" if rec.get("release") else ""
        wall = rec.get("wall_time_min") or (round(rec["wall_time_s"] / 60, 1)
                                            if rec.get("wall_time_s") else "-")
        cells = [_cell(run, p) for p in protocols]
        lines.append(f"| {link}{released} | {run.variant} | {run.seed} | "
                     f"{rec['config'].get('train', {}).get('iterations', '-')} | "
                     f"{rec.get('cpu') or '-'}, "
                     f"{rec.get('precision') or '-'} | {wall} | {' | '.join(cells)} | "
                     f"{'no: ' + '; '.join(run.differs) if run.differs else 'yes'} |")
    return lines


def render_block(recipes: dict[str, dict[str, Any]], runs: list[RecipeRun],
                 docs: Path = RESULTS.parent) -> str:
    """The text between :data:`BEGIN` and :data:`END` of a page in ``docs``: per recipe,
    its summary over seeds, the ParseNet − baseline differences and its runs."""
    out = ["Written by `python -m lab.tools.recipe_table` from lab/runs/releases/*/results.json "
           "and lab/runs/recipes/*/results.json. Figures in percent on each recipe's val "
           "split; mean ± sample std (n - 1) over the seeds, one seed shown without ±. "
           "Verdicts: the claims tables' rule (at least 2 seeds a side).", ""]
    for name, recipe in recipes.items():
        mine = [r for r in runs if r.recipe == name]
        summed = [r for r in mine if not r.differs]
        out.append(f"**{name}** (`configs/recipes/{name}.yaml`, {recipe['model']['name']})")
        out.append("")
        if not mine:
            out += ["No run of this recipe yet.", ""]
            continue
        protocols = list(dict.fromkeys(p for r in mine for p in r.scores))
        if summed:
            used = [p for p in protocols if any(p in r.scores for r in summed)]
            out += [*_summary(summed, used), "", *_differences_table(summed, used), ""]
        else:
            out += ["No run of the recipe as it stands yet.", ""]
        out += [*_runs_table(mine, protocols, docs), ""]
    return "\n".join(out).rstrip("\n")


def _replace_block(text: str, begin: str, end: str, body: str) -> str:
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def _n_seeds(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}"


def _card_table(peers: list[RecipeRun]) -> list[str]:
    """Per protocol, each side's mean IU over its seeds and ParseNet − baseline: the
    summary's and the differences table's own figures, for the card."""
    lines = ["| eval | ParseNet | baseline | ParseNet − baseline | ParseNet beats the baseline |",
             "| --- | --- | --- | --- | --- |"]
    for protocol in dict.fromkeys(p for r in peers for p in r.scores):
        cells = []
        for variant in ("ParseNet", "baseline"):
            done = _seeds(peers, variant, protocol)
            iou = _pm([r.scores[protocol][0]["mean_iou"] for r in done]) if done else ""
            cells.append(f"{iou} ({len(done)} seed{'s' if len(done) != 1 else ''})"
                         if done else "-")
        got = _compare(peers, protocol)
        # The mean of the per-seed differences is not the difference of the two means when
        # one side has more seeds: say which seeds it pairs.
        cells.append(f"{got.mean} ({_n_seeds(got.seeds)})" if got.seeds else got.mean)
        lines.append(f"| {protocol} | {' | '.join(cells)} | {got.verdict} |")
    return lines


def render_card(text: str, run: RecipeRun, runs: list[RecipeRun],
                results: Path = RESULTS) -> str:
    """``text`` (a run's card) with its recipe's ParseNet against the baseline, per eval
    protocol, and the line pointing at the full seed table."""
    peers = [r for r in runs if r.recipe == run.recipe and not r.differs]
    config = f"`configs/recipes/{run.recipe}.yaml`"
    if peers:  # the blank line ends the table, which would run on into the next line
        head = [f"The seeds of this recipe ({config}) as it stands, val mean IU in percent: "
                "mean ± sample std (n - 1) over the seeds; ParseNet − baseline, the mean of "
                "the differences of the seeds both ran:", "", *_card_table(peers), ""]
    else:
        head = [f"No run of this recipe ({config}) as it stands yet.", ""]
    where = (f"{run.variant}, seed {run.seed}, not in the summary: it differs from the recipe "
             f"in {'; '.join(run.differs)}" if run.differs else f"{run.variant}, seed {run.seed}")
    tail = (f"Every figure and run: [docs/RESULTS.md]({_link(results, run.path)}), the "
            "fine-tune recipes' seed table (`python -m lab.tools.recipe_table`). "
            f"This run: {where}.")
    return _replace_block(text, CARD_BEGIN, CARD_END, "\n".join([*head, tail]))


def write_all(results: Path = RESULTS, recipes_dir: Path = RECIPES,
              folders: Sequence[Path] = RUN_FOLDERS, check: bool = False) -> list[Path]:
    """Rewrite the block in ``results`` and each run's card block; returns the files that
    changed (with ``check``, that would change, writing nothing)."""
    recipes = load_recipes(recipes_dir)
    runs = find_recipe_runs(recipes, folders)
    page = Path(results).read_text()
    block = render_block(recipes, runs, Path(results).parent)
    wanted = {Path(results): _replace_block(page, BEGIN, END, block)}
    for run in runs:
        card = run.path / "README.md"
        wanted[card] = render_card(card.read_text() if card.is_file() else "", run, runs,
                                   Path(results))
    changed = [path for path, text in wanted.items()
               if not path.is_file() or path.read_text() != text]
    if not check:
        for path in changed:
            path.write_text(wanted[path])
    return changed


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.tools.recipe_table",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if docs/RESULTS.md or a card would change")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="the page with the block (default: docs/RESULTS.md)")
    ap.add_argument("--runs", type=Path, action="append", default=None, metavar="DIR",
                    help="a folder of run records (repeatable; default: lab/runs/releases "
                    "and lab/runs/recipes)")
    args = ap.parse_args(argv)
    try:
        changed = write_all(args.results, folders=args.runs or RUN_FOLDERS, check=args.check)
    except (OSError, ValueError) as err:  # a config or record that cannot be read
        ap.error(str(err))
    for path in changed:
        print(path)
    if args.check and changed:
        sys.exit(1)


if __name__ == "__main__":
    main()
