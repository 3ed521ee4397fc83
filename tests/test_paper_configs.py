"""configs/paper: one file per row of Tables 1-8, every value sourced, every model buildable.

Every row passes ``load_config`` (every field typed and checked, ``base:`` resolved) and
builds with every one of its model arguments at reduced width.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parsenet.apps.study.paper import load_paper_figures
from parsenet.config import load_config, read_config_file
from parsenet.models import build_model

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
ROWS = sorted(p for p in PAPER.glob("table*.yaml"))
BASES = sorted((PAPER / "base").glob("*.yaml"))
FIGURES = load_paper_figures()
SOURCE = re.compile(r"#.*\b(paper|reference|paper's words|guessed|ours)\b")

def test_one_config_per_row_of_the_paper_and_no_other() -> None:
    trained = {r.id for r in FIGURES.rows.values() if not r.reported_by}
    assert {p.stem for p in ROWS} == trained
    # Every table of the paper has rows to train (Table 8: the two test submissions).
    assert {FIGURES.rows[p.stem].table for p in ROWS} == set("12345678")
    assert {r.id for r in FIGURES.tables["8"].rows if not r.reported_by} == {
        "table8_voc_test_parsenet_baseline", "table8_voc_test_parsenet"}


@pytest.mark.parametrize("path", ROWS + BASES, ids=lambda p: p.stem)
def test_every_value_names_its_source(path: Path) -> None:
    """A key with a value carries '# paper|reference|paper's words|guessed|ours' on its line
    or in the comment block right above it."""
    comment_block: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        key, _, value = stripped.partition(":")
        top_level = not line.startswith(" ")
        if value.split("#")[0].strip() and not (top_level and key in ("base", "name")):
            sourced = SOURCE.search(line) or any(SOURCE.search(c) for c in comment_block)
            assert sourced, f"{path.name}: {stripped!r} names no source"
        comment_block = []


def _row(stem: str) -> dict:
    return read_config_file(PAPER / f"{stem}.yaml")


def test_the_recipes_are_the_papers() -> None:
    for path in ROWS:
        v = read_config_file(path)
        assert v["train"]["loss_reduction"] == "sum" and v["train"]["batch_size"] == 1
        assert v["data"]["crop_size"] is None
        fcn_data_layer = FIGURES.rows[path.stem].table in "134"  # FCN's data layers' mean
        assert v["model"]["preprocessing"] == ("caffe_fcn" if fcn_data_layer else "caffe_vgg")
    a, c, d = (_row(f"table1_context_baseline_{x}") for x in "acd")
    assert (a["train"]["lr"], a["train"]["momentum"], a["train"]["lr_policy"]) == (
        1e-10, 0.99, "fixed")
    assert a["model"]["args"]["conv1_pad"] == 100 and a["train"]["iterations"] == 80000
    assert _row("table1_context_baseline_b")["train"]["iterations"] == 160000
    assert (c["train"]["lr"], c["train"]["momentum"], c["model"]["args"]["init"]) == (
        1e-9, 0.9, "caffe_xavier")
    assert c["model"]["args"]["conv1_pad"] == 1 and c["train"]["lr_policy"] == "fixed"
    assert (d["train"]["lr_policy"], d["train"]["iterations"]) == ("poly", 80000)


def test_fusion_norm_and_network_per_row() -> None:
    for path in ROWS:
        args = read_config_file(path)["model"]["args"]
        table = FIGURES.rows[path.stem].table
        if table in "34" and len(args["features"]) + args["context"] > 1:
            assert args["fusion"] == "early", path.stem  # Tables 3, 4 concatenate
        base = {"1": "fcn32s", "3": "fcn32s", "4": "fcn32s", "5": "deeplab", "6": "largefov",
                "7": "largefov", "8": "largefov"}.get(table)
        if base:
            assert args["base"] == base, path.stem
        # ParseNet's test submission is named without "norm" but normalises (Sec. 4.2).
        named_norm = "norm" in path.stem.replace("nonorm", "")
        assert args["normalize"] == (named_norm or path.stem == "table8_voc_test_parsenet")
    for fusion, letter in (("early", "E"), ("late", "L")):
        for norm in ("", "_norm"):
            row = FIGURES.rows[f"table6_voc_pool6_fc7{norm}_{fusion}"]
            assert row.label.endswith(letter.replace("E", "Early").replace("L", "Late"))
            assert _row(row.id)["model"]["args"]["fusion"] == fusion
    cells = {(n, c): _row(f"table7_voc_{n}_{c}")["model"]["args"]
             for n in ("norm1", "norm10", "nonorm") for c in ("conv1x1", "concat")}
    for (_norm, c), args in cells.items():
        assert args["fusion"] == {"conv1x1": "conv1x1", "concat": "early"}[c]
        assert args["context"] is True
    assert (cells["norm1", "concat"]["scale_init"], cells["norm1", "concat"]["learn_scale"]) \
        == (1.0, False)
    assert (cells["norm10", "concat"]["scale_init"], cells["norm10", "concat"]["learn_scale"]) \
        == (10.0, True)


@pytest.mark.parametrize("path", ROWS, ids=lambda p: p.stem)
def test_row_loads_validated_and_builds(path: Path) -> None:
    config = load_config(path)
    assert config.train.out_dir.endswith(path.stem)
    args = {**config.model.args, "width": 0.0625, "weights": None}
    model = build_model(config.model.name, num_classes=3, **args)
    assert model.num_classes == 3 and config.name == path.stem


def test_readme_lists_every_row_with_the_papers_figures() -> None:
    from parsenet.apps.study.paper import format_figures

    text = (PAPER / "README.md").read_text()
    for row in FIGURES.rows.values():
        line = next((x for x in text.splitlines()
                     if x.startswith(f"| {row.table} | {row.label} | ")), None)
        assert line is not None, row.id
        assert f"| {format_figures(row)} |" in line
        assert (f"`{row.id}.yaml`" in line) != bool(row.reported_by)
