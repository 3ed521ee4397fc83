"""lab.tools.recipe_table: the fine-tune recipes' seed tables, on tiny fake run records (two
variants, 1-3 seeds, two eval protocols), and on the committed records, whose tables and
card blocks in the repository must be what the generator writes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lab.tools.recipe_table import (
    BEGIN,
    CARD_BEGIN,
    CARD_END,
    END,
    find_recipe_runs,
    main,
    render_block,
    render_card,
    write_all,
)

RECIPE = {"name": "tiny_release",
          "model": {"name": "parsenet_tiny", "args": {"context": True, "normalize": True,
                                                      "features": ["head"]}},
          "train": {"iterations": 100, "seed": 0, "out_dir": "runs/tiny"},
          "eval": {"mode": "whole", "scales": [0.5, 1.0], "flip": False}}
RELEASE = {"mode": "multiscale", "flip": True}


def _record(folder: Path, *, parsenet: bool, seed: int, iou: float,
            release_iou: float | None = None, **train: object) -> Path:
    """A run record as slim_runs keeps it: the config, the final validation and, with
    ``release_iou``, a release-protocol evaluation."""
    config = copy.deepcopy(RECIPE)
    config["model"]["args"].update(context=parsenet, normalize=parsenet)
    config["train"].update(seed=seed, out_dir=f"/elsewhere/{folder.name}", **train)
    metrics = {"pixel_acc": iou + 0.2, "mean_acc": iou + 0.1, "mean_iou": iou,
               "fw_iou": iou + 0.05}
    record = {"run": folder.name, "metrics": metrics, "config": config, "wall_time_s": 90.0}
    if release_iou is not None:
        record["release_eval"] = {"overrides": RELEASE, "weights": "fp32 checkpoint", "metrics": {
            **metrics, "mean_iou": release_iou}}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(record))
    return folder


@pytest.fixture()
def runs(tmp_path: Path):
    releases, recipes = tmp_path / "lab" / "releases", tmp_path / "lab" / "recipes"
    # The folders' names say nothing true: the variant and seed come from the configs.
    _record(releases / "a_baseline", parsenet=True, seed=0, iou=0.70, release_iou=0.75)
    _record(recipes / "b", parsenet=True, seed=1, iou=0.72, release_iou=0.70)
    _record(recipes / "c", parsenet=True, seed=2, iou=0.74)
    _record(recipes / "d_parsenet", parsenet=False, seed=0, iou=0.68, release_iou=0.72)
    _record(recipes / "e", parsenet=False, seed=1, iou=0.69)
    # An earlier version (its name is the recipe's), and a run of another config.
    _record(recipes / "short", parsenet=True, seed=0, iou=0.60, iterations=50)
    other = _record(recipes / "other", parsenet=True, seed=0, iou=0.10, iterations=7)
    record = json.loads((other / "results.json").read_text())
    record["config"]["name"] = "something_else"
    (other / "results.json").write_text(json.dumps(record))
    return tmp_path, find_recipe_runs({"tiny": RECIPE}, [releases, recipes])


def test_runs_are_grouped_by_their_configs(runs) -> None:
    _, found = runs
    got = {(r.path.name, r.variant, r.seed, tuple(r.differs)) for r in found}
    assert got == {("a_baseline", "ParseNet", 0, ()), ("b", "ParseNet", 1, ()),
                   ("c", "ParseNet", 2, ()), ("d_parsenet", "baseline", 0, ()),
                   ("e", "baseline", 1, ()),
                   ("short", "ParseNet", 0, ("train.iterations 50 (the recipe: 100)",))}


def test_means_stds_differences_and_verdicts(runs) -> None:
    tmp_path, found = runs
    lines = render_block({"tiny": RECIPE}, found, tmp_path / "docs").splitlines()
    # whole images: ParseNet 70/72/74 -> 72.00 ± 2.00 (n - 1); baseline 68/69 -> 68.50 ± 0.71
    assert ("| whole images | ParseNet | 3 (0, 1, 2) | 92.00 ± 2.00 | 82.00 ± 2.00 | "
            "72.00 ± 2.00 | 77.00 ± 2.00 | the trainer's final validation |") in lines
    assert ("| whole images | baseline | 2 (0, 1) | 88.50 ± 0.71 | 78.50 ± 0.71 | 68.50 ± 0.71 "
            "| 73.50 ± 0.71 | the trainer's final validation |") in lines
    # Every ParseNet seed above every baseline seed, and the mean too: held.
    assert ("| whole images | seed 0: +2.00, seed 1: +3.00 | +2.50 ± 0.71 | held |") in lines
    # The release protocol: ParseNet 75 / 70, the baseline one seed (no ±): too few seeds.
    assert ("| scales 0.5 / 1 + flip | ParseNet | 2 (0, 1) | 91.00 ± 1.41 | 81.00 ± 1.41 | "
            "72.50 ± 3.54 | 76.00 ± 1.41 | fp32 checkpoint |") in lines
    assert ("| scales 0.5 / 1 + flip | baseline | 1 (0) | 88.00 | 78.00 | 72.00 | 73.00 | "
            "fp32 checkpoint |") in lines
    assert "| scales 0.5 / 1 + flip | seed 0: +3.00 | +3.00 | too few seeds |" in lines
    # The earlier version is listed, with what differs, and summarised nowhere.
    short = [line for line in lines if line.startswith("| [short]")]
    assert short == ["| [short](../lab/recipes/short/README.md) | ParseNet | 0 | 50 | -, - | "
                     "1.5 | 80.0 / 70.0 / 60.0 / 65.0 | - | no: train.iterations 50 (the recipe: "
                     "100) |"]
    assert not any("[other]" in line for line in lines)


def test_inside_the_spread_and_a_recipe_without_runs(tmp_path: Path) -> None:
    for name, parsenet, seed, iou in (("p0", True, 0, 0.70), ("p1", True, 1, 0.72),
                                      ("b0", False, 0, 0.71), ("b1", False, 1, 0.69)):
        _record(tmp_path / "runs" / name, parsenet=parsenet, seed=seed, iou=iou)
    found = find_recipe_runs({"tiny": RECIPE}, [tmp_path / "runs"])
    block = render_block({"tiny": RECIPE, "empty": {**RECIPE, "name": "empty"}}, found, tmp_path)
    assert ("| whole images | seed 0: -1.00, seed 1: +3.00 | +1.00 ± 2.83 | inside the spread |"
            in block.splitlines())
    assert "**empty** (`configs/recipes/empty.yaml`, parsenet_tiny)\n\nNo run of this recipe yet." \
        in block


def test_the_card_line_is_replaced_not_repeated(runs) -> None:
    tmp_path, found = runs
    run = next(r for r in found if r.path.name == "b")
    once = render_card("# card\n", run, found, tmp_path / "docs" / "RESULTS.md")
    assert once.count(CARD_BEGIN) == 1
    assert "[docs/RESULTS.md](../../../docs/RESULTS.md)" in once
    assert "This run: ParseNet, seed 1." in once
    assert render_card(once, run, found, tmp_path / "docs" / "RESULTS.md") == once


def test_the_card_carries_the_recipes_figures(runs) -> None:
    """Per protocol, each side's mean IU ± std with its seeds, and ParseNet − baseline with
    the verdict: the very figures of the RESULTS.md tables, on every run's card."""
    tmp_path, found = runs
    block = render_block({"tiny": RECIPE}, found, tmp_path / "docs").splitlines()
    for name in ("b", "e", "short"):  # a ParseNet seed, a baseline seed, an earlier version
        run = next(r for r in found if r.path.name == name)
        card = render_card("# card\n", run, found, tmp_path / "docs" / "RESULTS.md")
        lines = card.splitlines()
        assert ("| whole images | 72.00 ± 2.00 (3 seeds) | 68.50 ± 0.71 (2 seeds) | "
                "+2.50 ± 0.71 (seeds 0, 1) | held |") in lines
        assert ("| scales 0.5 / 1 + flip | 72.50 ± 3.54 (2 seeds) | 72.00 (1 seed) | "
                "+3.00 (seed 0) | too few seeds |") in lines
        # The table ends on a blank line before the pointer, which stays.
        assert lines[lines.index(CARD_END) - 2] == ""
        assert "the fine-tune recipes' seed table" in lines[lines.index(CARD_END) - 1]
        # The earlier version's 60.0 is in no mean.
        assert "60.00" not in card
    # The same numbers as the page's tables.
    assert any("| 72.00 ± 2.00 | 77.00 ± 2.00 |" in line for line in block)
    assert "| whole images | seed 0: +2.00, seed 1: +3.00 | +2.50 ± 0.71 | held |" in block


def test_a_card_without_runs_of_the_recipe_as_it_stands(runs) -> None:
    tmp_path, found = runs
    short = [r for r in found if r.path.name == "short"]
    card = render_card("", short[0], short, tmp_path / "docs" / "RESULTS.md")
    assert "No run of this recipe (`configs/recipes/tiny.yaml`) as it stands yet." in card
    assert "| eval |" not in card
    assert "not in the summary: it differs from the recipe in train.iterations 50" in card


def test_the_committed_tables_and_cards_are_the_generated_ones() -> None:
    """docs/RESULTS.md's block and every recipe run's card block, regenerated from the
    committed records, byte for byte."""
    assert write_all(check=True) == []
    text = (Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1


def test_a_record_that_is_not_json_is_one_line_of_error(tmp_path, capsys) -> None:
    (tmp_path / "runs" / "broken").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "results.json").write_text("{not json")
    (tmp_path / "RESULTS.md").write_text("page\n")
    with pytest.raises(SystemExit) as stop:
        main(["--results", str(tmp_path / "RESULTS.md"), "--runs", str(tmp_path / "runs")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("broken/results.json: not a run record's JSON "
                                                 "(Expecting property name enclosed in double "
                                                 "quotes: line 1 column 2 (char 1))")
