import errno
import random

import numpy as np
import pytest
import torch

from parsenet.config import Config, ModelConfig, config_to_dict
from parsenet.engine import checkpoint as ckpt
from parsenet.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from parsenet.models import parsenet_vgg16
from parsenet.preprocessing import CAFFE_VGG

ARGS = {"width": 0.0625, "fusion": "late"}


def make_state(model, iteration=3):
    config = Config(model=ModelConfig(name="parsenet_vgg16", args=dict(ARGS)))
    return {
        "format": ckpt.CHECKPOINT_FORMAT, "iteration": iteration, "model": model.state_dict(),
        "config": config_to_dict(config), "classes": ["a", "b", "c"],
        "palette": [[0, 0, 0], [1, 2, 3], [4, 5, 6]], "preprocessing": CAFFE_VGG.to_dict(),
        "rng": rng_state(),
    }


@pytest.fixture
def model():
    torch.manual_seed(0)
    return parsenet_vgg16(num_classes=3, **ARGS)


def test_roundtrip_and_load_model_rebuilds_the_same_network(tmp_path, model):
    path = save_checkpoint(tmp_path / "ck" / "last.pt", make_state(model))
    state = load_checkpoint(path)
    assert state["iteration"] == 3
    loaded = load_model(path)
    rebuilt = loaded.model
    assert loaded.classes == ("a", "b", "c") and loaded.iteration == 3
    assert loaded.preprocessing == CAFFE_VGG
    assert rebuilt.preprocessing == CAFFE_VGG  # the stored one, not the builder's default
    assert not rebuilt.training
    x = torch.randn(1, 3, 40, 40)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_a_crash_during_save_leaves_the_previous_file_intact(tmp_path, model, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, make_state(model, iteration=1))
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_state(model, iteration=2))
    assert path.read_bytes() == before
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_truncated_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, model):
    path = save_checkpoint(tmp_path / "last.pt", make_state(model))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="last.pt.*truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="last.pt"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04garbage"])
def test_corrupt_files_are_checkpoint_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(path)


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_foreign_and_incompatible_files_are_rejected(tmp_path, model):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="tensor.pt: not a parsenet checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a parsenet checkpoint.*missing"):
        load_checkpoint(tmp_path / "other.pt")
    # Weights of a different architecture than the stored config describes.
    state = make_state(parsenet_vgg16(num_classes=3, width=0.125))
    save_checkpoint(tmp_path / "mismatch.pt", state)
    with pytest.raises(CheckpointError, match="mismatch.pt: weights do not fit"):
        load_model(tmp_path / "mismatch.pt")


def test_arbitrary_objects_are_refused_by_weights_only(tmp_path, model):
    state = make_state(model)
    state["evil"] = object()  # would need unpickling of arbitrary classes
    torch.save(state, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled.pt"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_rng_states_survive_a_weights_only_roundtrip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (torch.rand(4), np.random.rand(4), np.random.standard_normal(),
                [random.random() for _ in range(4)], random.gauss(0, 1))
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (torch.rand(4), np.random.rand(4), np.random.standard_normal(),
           [random.random() for _ in range(4)], random.gauss(0, 1))
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    assert got[3] == expected[3] and got[4] == expected[4]


@pytest.mark.parametrize("disk_full", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 2048: "
                 "file write failed, error code 28"),
])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch,
                                                               disk_full):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1})

    def fails(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise disk_full

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(path, {"iteration": 2})
    assert str(error.value) == (f"{path}: cannot write checkpoint: no space left on the "
                                f"device (the previous checkpoint is kept); free space and "
                                f"resume")
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"iteration": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_other_write_errors_keep_their_type(tmp_path, monkeypatch):
    def fails(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . error code 5")

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(RuntimeError, match="error code 5"):
        save_checkpoint(tmp_path / "last.pt", {"iteration": 2})
    assert list(tmp_path.iterdir()) == []
