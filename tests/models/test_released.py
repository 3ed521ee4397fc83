"""Released models: fp16 safetensors + card, typed entries, `parsenet models/eval/predict`."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parsenet.cli import build_parser, main
from parsenet.config import Config, config_to_dict
from parsenet.engine.checkpoint import CHECKPOINT_FORMAT, load_model, save_checkpoint
from parsenet.engine.loaded import load_released
from parsenet.engine.release import write_release
from parsenet.errors import UsageError
from parsenet.models import parsenet_efficientnet_lite0
from parsenet.models.released import Release, ReleasedWeights, released
from parsenet.recipe import load_recipe

CLASSES = ["sky", "ground", "thing"]
ARGS = {"output_stride": 32, "features": ["head"], "context": True}


def _write_dataset(root: Path, split: str) -> None:
    rng = np.random.default_rng(0)
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
            root / "images" / split / f"im{i}.png")
        label = rng.integers(0, len(CLASSES), (40, 56)).astype(np.uint8)
        Image.fromarray(label).save(root / "labels" / split / f"im{i}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    base = tmp_path_factory.mktemp("release")
    config = Config()
    config.model.name = "parsenet_efficientnet_lite0"
    config.model.args = dict(ARGS)
    torch.manual_seed(0)
    model = parsenet_efficientnet_lite0(num_classes=len(CLASSES), **ARGS).eval()
    state = {"format": CHECKPOINT_FORMAT, "iteration": 5, "model": model.state_dict(),
             "config": config_to_dict(config), "classes": CLASSES,
             "palette": [[0, 0, 255], [0, 255, 0], [255, 0, 0]],
             "preprocessing": model.preprocessing.to_dict()}
    ckpt = save_checkpoint(base / "last.pt", state)
    write_release(ckpt, base / "out", "tiny", {"dataset": "test", "variant": "parsenet",
                                               "val_metrics": {"mean_iou": 0.5,
                                                               "pixel_acc": 0.6}})
    return model, Release.from_card("tiny", root=str(base / "out")), base


def test_release_is_fp16_and_rebuilds_the_model(release):
    from safetensors.torch import load_file

    model, rel, _ = release
    stored = load_file(str(rel.weights_path))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert rel.meta["classes"] == CLASSES and rel.meta["model"] == "parsenet_efficientnet_lite0"
    rebuilt = rel.build()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), rebuilt(x)
    assert out.shape == (1, 3, 64, 64)
    # Only fp16 rounding of the weights separates them.
    assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_load_released_gives_the_bundle_load_model_gives_for_its_checkpoint(release):
    _, rel, base = release
    from_release, from_checkpoint = load_released(rel), load_model(base / "last.pt")
    for loaded in (from_release, from_checkpoint):
        assert loaded.classes == tuple(CLASSES) and loaded.iteration == 5
        assert loaded.palette == ((0, 0, 255), (0, 255, 0), (255, 0, 0))
        assert loaded.preprocessing == from_checkpoint.model.preprocessing
        assert loaded.config.model.name == "parsenet_efficientnet_lite0"
        assert not loaded.model.training
    assert from_release.config == from_checkpoint.config
    with pytest.raises(dataclasses.FrozenInstanceError):
        from_release.classes = ()


def test_eval_and_predict_with_model_on_any_folder_dataset(release, monkeypatch, tmp_path,
                                                           capsys):
    import parsenet.models.released as released_module

    _, rel, base = release
    monkeypatch.setattr(released_module, "released", lambda name: rel)
    _write_dataset(tmp_path / "data", "heldout")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", "tiny", "--data-root", str(tmp_path / "data"),
                 "--split", "heldout", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["classes"] == CLASSES
    assert sum(map(sum, result["metrics"]["confusion"])) == 2 * 40 * 56
    image = tmp_path / "data" / "images" / "heldout" / "im0.png"
    assert main(["predict", str(image), "--model", "tiny", "--out", str(tmp_path / "pred"),
                 "--no-progress"]) == 0
    assert "backend eager" in capsys.readouterr().out
    with Image.open(tmp_path / "pred" / "im0.png") as label:
        assert label.size == (56, 40) and np.asarray(label).max() < len(CLASSES)


def test_unknown_model_is_a_usage_error(capsys):
    with pytest.raises(UsageError, match="no such released model"):
        released("no-such-model")
    assert main(["eval", "--model", "no-such-model"]) == 2
    assert "no such released model" in capsys.readouterr().err


@pytest.mark.parametrize("member", ReleasedWeights.available(), ids=lambda m: m.value.name)
def test_shipped_release_is_small_and_loads(member):
    rel = member.value
    assert rel.weights_path.stat().st_size <= 10 * 2**20
    model = rel.build()
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 96, 128))
    assert y.shape == (1, len(rel.meta["classes"]), 96, 128)
    assert len(rel.meta["palette"]) == len(rel.meta["classes"])
    assert "command" in rel.meta and "val_metrics" in rel.meta


@pytest.mark.parametrize("member", ReleasedWeights.available(), ids=lambda m: m.value.name)
def test_a_releases_command_runs_with_todays_cli(member, monkeypatch):
    """A card's ``command`` is one a user can run today: it parses and its config loads
    (from the checkout's configs/); a historic command that no longer runs is kept as
    ``trained_with``, explained in ``command_note``."""
    meta = member.value.meta
    words = shlex.split(meta["command"])
    while words and "=" in words[0]:  # the environment, e.g. OMP_NUM_THREADS=1
        words.pop(0)
    assert words[0] == "parsenet"
    try:
        args = build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"{member.value.name}: today's CLI refuses {meta['command']!r}")
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    head = ["train.frozen_prefix.upto=all"] if args.command == "train-head" else []
    load_recipe(args.config, [*head, *args.set])
    if "trained_with" in meta:
        assert meta["trained_with"] != meta["command"] and meta["command_note"]


def test_models_lists_each_shipped_release_with_its_val_figures(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shipped = ReleasedWeights.available()
    assert [line.split()[0] for line in lines] == [m.value.name for m in shipped]
    # One column for the descriptions, however long a name.
    columns = {line.index(m.value.meta["dataset"]) for line, m in zip(lines, shipped, strict=True)}
    assert len(columns) <= 1
    for line, member in zip(lines, shipped, strict=True):
        miou = 100 * member.value.meta["val_metrics"]["mean_iou"]
        assert f"val mean IoU {miou:.1f}" in line
