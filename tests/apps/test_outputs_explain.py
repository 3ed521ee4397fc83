"""Outputs that explain themselves: the split eval names, where its JSON goes, the legend
under predict's overlays, and each command's --help example."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from bad_input_data import write_dataset
from PIL import Image

from parsenet.cli import EXAMPLES, build_parser, main
from parsenet.viz import legend_entries, legend_strip

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py

STANFORD = ["sky", "tree", "road", "grass", "water", "building", "mountain", "foreground"]


def test_eval_of_a_released_model_names_the_split_and_writes_nothing_unasked(
        tmp_path, monkeypatch, capsys):
    data = write_dataset(tmp_path / "data", classes=STANFORD, splits=("test",),
                         size=(48, 64))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ["eval", "--model", "stanford", "--data-root", str(data), "--split", "test",
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert " on test of " in printed and " on val " not in printed
    assert "no JSON written" in printed
    assert list(work.rglob("*")) == []  # no runs/released/... in the current folder

    out = tmp_path / "figures" / "stanford.json"
    assert main([*argv, "--out", str(out)]) == 0
    assert f"written: {out}" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["classes"] == STANFORD
    assert list(work.rglob("*")) == []


def test_eval_of_a_checkpoint_writes_beside_it_under_the_split_given(tmp_path, capsys):
    from serve_helpers import write_tiny_checkpoint

    classes = ["sky", "ground", "thing"]
    checkpoint = write_tiny_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", classes,
                                       seed=0, name="tiny")
    data = write_dataset(tmp_path / "data", classes=classes, splits=("test",), size=(48, 64))
    assert main(["eval", "--checkpoint", str(checkpoint), "--data-root", str(data),
                 "--split", "test", "--no-progress"]) == 0
    written = checkpoint.with_name("last.eval-test-whole.json")
    assert f"written: {written}" in capsys.readouterr().out
    assert json.loads(written.read_text())["split"] == "test"
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [
        "last.eval-test-whole.json", "last.pt"]


def test_predict_overlay_carries_a_legend_of_the_classes_present(tmp_path):
    from parsenet.apps.tasks import predict_images
    from parsenet.models.released import released

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)).save(image)
    release = released("stanford")
    out = predict_images(release, [image], tmp_path / "out", progress=False)
    label_png, overlay_path = out["outputs"][0]
    labels = np.asarray(Image.open(label_png))
    entries = legend_entries(labels, STANFORD, release.meta["palette"])
    assert entries and abs(sum(share for _, _, share in entries) - 1) < 1e-6
    with Image.open(overlay_path) as drawn:
        strip = legend_strip(entries, drawn.width)
        # The three panels (titles + 60 px) and the strip below them, not the panels alone.
        assert drawn.height == 60 + 22 + strip.height
        bottom = np.asarray(drawn.convert("RGB"))[-strip.height:].astype(int)
    # Each class's swatch is drawn in its colour (JPEG: within a few levels).
    for _, colour, _ in entries:
        assert (np.abs(bottom - np.array(colour)).sum(axis=2) < 40).sum() >= 50, colour


def test_legend_shares_count_ignored_pixels_in_the_total_only():
    labels = np.array([[0, 0, 1, 255]])
    entries = legend_entries(labels, ["a", "b"], [[1, 2, 3], [4, 5, 6]])
    assert entries == [("a", (1, 2, 3), 0.5), ("b", (4, 5, 6), 0.25)]


NESTED = {"caffe": ("convert", "caffe")}  # sub-commands of a command


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_help_ends_with_an_example_the_parser_accepts(command, capsys):
    words = list(NESTED.get(command, (command,)))
    with pytest.raises(SystemExit):
        main([*words, "--help"])
    help_text = capsys.readouterr().out
    example = EXAMPLES[command]
    assert help_text.rstrip().endswith(f"example: {example}")
    argv = shlex.split(example)
    assert argv[:1 + len(words)] == ["parsenet", *words]
    args = build_parser().parse_args(argv[1:])
    assert args.command == words[0]
