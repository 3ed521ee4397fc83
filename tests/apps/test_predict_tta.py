"""Test-time augmentation options of ``parsenet predict`` and ``serve``: ``--flip/--no-flip``
and ``--scales`` replace the model's own eval.flip and eval.scales, counted in forward passes
of the model itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parsenet.cli import main
from parsenet.config import Config, config_to_dict
from parsenet.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from parsenet.engine.inferencer import Inferencer
from parsenet.models import parsenet_vgg16

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py

CLASSES = ["sky", "ground", "thing"]
SIZES = {"a.png": (40, 56), "b.png": (48, 40)}  # (h, w), over MIN_SIZE: nothing is padded


def _checkpoint(path: Path, **eval_values) -> Path:
    config = Config()
    config.model.args = {"width": 0.0625}
    for key, value in eval_values.items():
        setattr(config.eval, key, value)
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=len(CLASSES), width=0.0625)
    state = {"format": CHECKPOINT_FORMAT, "iteration": 1, "model": model.state_dict(),
             "config": config_to_dict(config), "classes": CLASSES, "palette": None,
             "preprocessing": model.preprocessing.to_dict()}
    return save_checkpoint(path, state)


@pytest.fixture(scope="module")
def camvid_like(tmp_path_factory) -> Path:
    """A checkpoint whose own eval is the camvid release's: scales 1 / 1.25 / 1.5 with flip."""
    return _checkpoint(tmp_path_factory.mktemp("run") / "last.pt", mode="multiscale",
                       scales=[1.0, 1.25, 1.5], flip=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


class Forwards(list):
    """The input size (h, w) of every forward pass of the model in predict's Inferencer,
    and that Inferencer."""

    inferencer: Inferencer


@pytest.fixture
def forwards(monkeypatch) -> Forwards:
    spy = Forwards()
    create = Inferencer.create

    def counted(model, **kwargs):
        spy.inferencer = create(model, **kwargs)  # measures the model first: not counted
        model.register_forward_hook(lambda m, args, out: spy.append(tuple(args[0].shape[-2:])))
        return spy.inferencer

    monkeypatch.setattr(Inferencer, "create", counted)
    return spy


def _predict(checkpoint: Path, images: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(images), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--backend", "eager", "--no-progress", *extra])


@pytest.mark.parametrize("mode, default, no_flip", [
    ("whole", 2, 1),  # --no-flip: one fast pass an image, against the model's own flip
    ("auto", 6, 3),  # the model's own mode, multi-scale: 3 scales x flip, then no flip
])
def test_no_flip_halves_the_passes_an_image(camvid_like, images, tmp_path, forwards, mode,
                                            default, no_flip):
    assert _predict(camvid_like, images, tmp_path / "own", "--mode", mode) == 0
    assert len(forwards) == default * len(SIZES) and forwards.inferencer.options.flip
    forwards.clear()
    assert _predict(camvid_like, images, tmp_path / "out", "--mode", mode, "--no-flip") == 0
    assert len(forwards) == no_flip * len(SIZES)
    assert forwards.inferencer.options.flip is False
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "b.png"]


def test_flip_turns_on_a_flip_the_model_lacks(images, tmp_path, forwards):
    whole = _checkpoint(tmp_path / "whole.pt")  # its own eval: whole images, no flip
    assert _predict(whole, images, tmp_path / "out", "--flip") == 0
    assert len(forwards) == 2 * len(SIZES) and forwards.inferencer.options.flip is True


def test_scales_reach_the_inferencer(camvid_like, images, tmp_path, forwards):
    assert _predict(camvid_like, images, tmp_path / "out", "--scales", "1", "1.5",
                    "--no-flip") == 0
    assert forwards.inferencer.options.scales == (1.0, 1.5)
    assert forwards.inferencer.options.mode == "auto"  # the model's own mode, multi-scale
    expected = [size for h, w in SIZES.values() for size in ((h, w), (1.5 * h, 1.5 * w))]
    assert sorted(forwards) == sorted(expected)


def test_scales_with_an_explicit_multiscale_mode(images, tmp_path, forwards):
    whole = _checkpoint(tmp_path / "whole.pt")  # its own eval: whole images, no flip
    assert _predict(whole, images, tmp_path / "out", "--mode", "multiscale",
                    "--scales", "0.8") == 0
    assert sorted(forwards) == sorted((round(0.8 * h), round(0.8 * w))
                                      for h, w in SIZES.values())


@pytest.mark.parametrize("extra, message", [
    (["--mode", "whole", "--scales", "1", "1.5"],
     "--scales 1 1.5: scales apply to --mode multiscale, not --mode whole; add --mode "
     "multiscale or drop --scales"),
    (["--mode", "slide", "--scales", "1"], "not --mode slide"),
    (["--scales", "0"], "--scales 0: 0 is not a scale; give finite numbers > 0"),
    (["--scales", "1", "-0.5"], "-0.5 is not a scale"),
    (["--scales", "inf"], "inf is not a scale"),
    (["--scales", "nan"], "nan is not a scale"),
    (["--scales", *["1"] * 9], "give 1 to 8 scales"),
    (["--scales", "1", "1e6"],
     "--scales 1 1e+06: 1e+06 would enlarge even a 32x32 image (the smallest a model takes) "
     "past the 40 megapixels a scaled image may have; give smaller scales"),
])
def test_bad_scales_are_one_line_before_loading(images, tmp_path, capsys, extra, message):
    missing = tmp_path / "not-loaded.pt"  # refused before the model would be read
    assert _predict(missing, images, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("parsenet: error: --scales ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_scale_that_enlarges_an_image_past_the_limit_is_one_line(images, tmp_path, capsys):
    """150 passes the check before loading (a 32 x 32 image would stay under 40 MP) but
    would make a.png (40 x 56) 50 MP: refused naming the image, before it is scaled."""
    whole = _checkpoint(tmp_path / "whole.pt")
    assert _predict(whole, images, tmp_path / "out", "--mode", "multiscale",
                    "--scales", "150") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("parsenet: error: ") and len(err.splitlines()) == 1
    assert "a.png: scale 150 would make this 40x56 image 50.4 megapixels, over the 40 " \
           "megapixels a scaled image may have" in err


def test_scales_for_a_model_that_never_runs_multiscale(images, tmp_path, capsys):
    whole = _checkpoint(tmp_path / "whole.pt")  # auto runs its own mode, whole
    assert _predict(whole, images, tmp_path / "out", "--scales", "1", "2") == 2
    err = capsys.readouterr().err.strip()
    assert err == ("parsenet: error: --scales 1 2: this model's own eval mode is whole, so "
                   "--mode auto never runs multi-scale; add --mode multiscale")


def test_serve_no_flip_reaches_every_served_model(camvid_like, monkeypatch):
    pytest.importorskip("fastapi")
    import uvicorn

    import parsenet.apps.serve.server as server

    registries = []
    create_app = server.create_app
    monkeypatch.setattr(server, "create_app", lambda registry, settings: (
        registries.append(registry) or create_app(registry, settings)))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    for extra in ([], ["--no-flip"]):
        assert main(["serve", "--checkpoint", str(camvid_like), "--port", "0", *extra]) == 0
    (own,), (no_flip,) = (registry.models() for registry in registries)
    assert own.inferencer.options.flip is True  # the model's own eval.flip
    assert no_flip.inferencer.options.flip is False
    assert no_flip.inferencer.options.scales == (1.0, 1.25, 1.5)
