"""The tasks behind ``parsenet predict``: what they write, and where."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parsenet.apps.tasks import predict_images
from parsenet.config import Config, config_to_dict
from parsenet.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from parsenet.models import parsenet_vgg16

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py

CLASSES = ["sky", "ground", "thing"]


@pytest.fixture
def checkpoint(tmp_path_factory) -> Path:  # one per test: each starts from a clean run folder
    torch.manual_seed(0)
    config = Config()
    config.model.args = {"width": 0.0625}
    model = parsenet_vgg16(num_classes=len(CLASSES), width=0.0625)
    state = {"format": CHECKPOINT_FORMAT, "iteration": 1, "model": model.state_dict(),
             "config": config_to_dict(config), "classes": CLASSES, "palette": None,
             "preprocessing": model.preprocessing.to_dict()}
    return save_checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "last.pt", state)


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("backend", ["eager", pytest.param("onnx", marks=pytest.mark.slow)])
def test_predict_writes_only_into_its_out_folder_and_the_export_cache(checkpoint, tmp_path,
                                                                      monkeypatch, backend):
    """The user's run folder is not a cache: nothing is added beside the checkpoint; an
    ONNX export goes to the export cache only, and no temporary file outlives the call."""
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    run = checkpoint.parents[1]
    before = _tree(run)
    scratch, cache = tmp_path / "tmp", tmp_path / "cache"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where temporary files go
    image = tmp_path / "in" / "x.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)).save(image)
    result = predict_images(checkpoint, [image], tmp_path / "out", backend=backend,
                            progress=False, export_cache=cache)
    assert result["backend"] == backend
    assert _tree(run) == before
    assert _tree(scratch) == []
    assert len(list(cache.glob("*.onnx"))) == (backend == "onnx")
    assert _tree(tmp_path / "out") == ["x.png", "x_overlay.jpg"]


def test_eval_of_a_released_model_refuses_its_own_files_and_replaces_an_old_out(tmp_path,
                                                                              one_thread):
    from parsenet.apps.tasks import evaluate_checkpoint
    from parsenet.errors import UsageError
    from parsenet.models.released import released

    model = released("stanford")
    card = model.weights_path.with_suffix(".json")
    before = card.read_bytes()
    with pytest.raises(UsageError, match="the released model's card"):
        evaluate_checkpoint(model, out=card, overwrite=True, progress=False)
    assert card.read_bytes() == before
    root = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "stanford_background"
    if not root.is_dir():
        pytest.skip("../shared/data/stanford_background is absent")
    out = tmp_path / "eval.json"
    out.write_text("{}")
    result = evaluate_checkpoint(model, out=out, overwrite=True, progress=False, max_images=1,
                                 mode="whole", overrides=[f"data.root={root}"])
    assert result["json"] == str(out) and "pixel_acc" in out.read_text()


def test_predict_runs_at_the_checkpoints_data_resize_and_labels_at_the_images_size(tmp_path):
    """A checkpoint trained with data.resize sees every image warped to it (as in training
    and eval); the label PNG keeps the image's own size."""
    import torch.nn.functional as F
    from serve_helpers import write_tiny_checkpoint
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from parsenet.engine.checkpoint import load_model

    ckpt = write_tiny_checkpoint(tmp_path / "run" / "last.pt", CLASSES, seed=0, name="warped",
                                 data={"resize": [32, 48]})
    rgb = np.random.default_rng(0).integers(0, 255, (45, 61, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "im.png")
    result = predict_images(ckpt, [tmp_path / "im.png"], tmp_path / "out", backend="eager",
                            mode="whole", progress=False)
    written = np.asarray(Image.open(result["outputs"][0][0]))
    loaded = load_model(ckpt)
    image = torch.from_numpy(rgb).permute(2, 0, 1)
    warped = TF.resize(image, [32, 48], interpolation=InterpolationMode.BILINEAR,
                       antialias=True)
    with torch.no_grad():
        scores = loaded.model(loaded.preprocessing(warped)[None])
        native = loaded.model(loaded.preprocessing(image)[None]).argmax(1)[0].numpy()
    expected = F.interpolate(scores, size=(45, 61), mode="bilinear",
                             align_corners=False).argmax(1)[0].numpy()
    assert written.shape == (45, 61)
    assert not np.array_equal(expected, native)  # the warp shows in the labels
    assert np.array_equal(written, expected)


def test_eval_of_the_train_split_scores_whole_images_as_val_does(tmp_path):
    """The train split is read with the evaluation transforms, not training's random crops
    and flips: the same images under train/ and val/ give the same figures, twice."""
    import shutil

    from bad_input_data import write_dataset, write_tiny_checkpoint

    from parsenet.apps.tasks import evaluate_checkpoint

    root = write_dataset(tmp_path / "data", n=2, splits=("train",), size=(64, 80))
    for kind in ("images", "labels"):
        shutil.copytree(root / kind / "train", root / kind / "val")
    ckpt = write_tiny_checkpoint(tmp_path / "run" / "last.pt", root)
    # Training crops smaller than the images, so an augmented train split would differ.
    crop = ["data.crop_size=32", "data.scale_range=[0.5,2.0]", "data.flip=true"]
    figures = [evaluate_checkpoint(ckpt, split=split, overrides=crop, progress=False,
                                   out=tmp_path / f"{split}{i}.json")["metrics"]
               for i, split in enumerate(("train", "train", "val"))]
    assert figures[0] == figures[1] == figures[2]
