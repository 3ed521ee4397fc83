"""The paper's training-recipe knobs through the trainer (FCN solver settings, whole-image
batch-1 training, preprocessing override)."""

import json

import pytest
import torch
from trainer_fixtures import tiny_config, tiny_factory

from parsenet.config import ConfigError
from parsenet.engine.checkpoint import load_checkpoint
from parsenet.engine.trainer import train
from parsenet.preprocessing import CAFFE_VGG16

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: conftest.py


def _records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_fcn_solver_settings_train_at_a_constant_tiny_rate(data_root, tmp_path):
    out = tmp_path / "fcn"
    config = tiny_config(data_root, out, iterations=3, batch_size=1, accumulate=2,
                         lr=1e-10, momentum=0.99, loss_reduction="sum", lr_policy="fixed",
                         bias_lr_mult=2.0, bias_decay=False)
    result = train(config, dataset_factory=tiny_factory())
    lrs = [r["lr"] for r in _records(out) if r["kind"] == "train"]
    assert lrs == [1e-10] * 3  # fixed: no poly decay
    state = load_checkpoint(result["last_checkpoint"])
    groups = {g["name"]: g for g in state["optimizer"]["param_groups"]}
    assert groups["new/bias"]["lr"] == pytest.approx(2e-9)  # 1e-10 x 10 (new) x 2 (bias)
    assert groups["new/bias"]["weight_decay"] == 0.0
    assert all(g["momentum"] == 0.99 for g in groups.values())
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    # the schedule saved in the checkpoint is the fixed one
    assert state["scheduler"]["lr_lambdas"][0] == {"warmup_iterations": 0}


def test_preprocessing_override_is_used_and_stored(data_root, tmp_path):
    seen = []

    def factory(data, split, preprocessing):
        seen.append(preprocessing)
        return tiny_factory()(data, split, preprocessing)

    config = tiny_config(data_root, tmp_path / "pp", iterations=1)
    config.model.preprocessing = "caffe_vgg"
    result = train(config, dataset_factory=factory)
    assert seen == [CAFFE_VGG16]  # the training set, built once (no probe before it)
    assert load_checkpoint(result["last_checkpoint"])["preprocessing"] == CAFFE_VGG16.to_dict()


@pytest.mark.parametrize("section,field,value,match", [
    ("train", "lr_policy", "step", "train.lr_policy"),
    ("model", "preprocessing", "bgr", "model.preprocessing"),
    ("eval", "mean_iu", "fcn", "eval.mean_iu"),
])
def test_bad_recipe_knobs_are_config_errors(data_root, tmp_path, section, field, value, match):
    config = tiny_config(data_root, tmp_path / "bad")
    setattr(getattr(config, section), field, value)
    with pytest.raises(ConfigError, match=match):
        train(config, dataset_factory=tiny_factory())


def test_whole_image_training_needs_batch_one(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path / "whole", batch_size=2)
    config.data.crop_size = None
    with pytest.raises(ConfigError, match="crop_size.*batch_size must be 1"):
        train(config, dataset_factory=tiny_factory())


def test_whole_image_batch_one_training_with_iter_size_runs_the_default_path(data_root,
                                                                            tmp_path):
    from parsenet.recipe import datasets_from_config

    config = tiny_config(data_root, tmp_path / "whole", iterations=2, batch_size=1,
                         accumulate=2, loss_reduction="sum", lr=1e-6, lr_policy="fixed")
    config.data.crop_size = None
    config.data.scale_range = [1.0, 1.0]
    config.data.flip = False
    item = datasets_from_config(config.data, CAFFE_VGG16, with_valid=True)[0][0]  # the trainer's
    image, mask, valid = item  # whole image, its own size, every pixel real
    assert image.shape == (3, 56, 64) and mask.shape == (56, 64) and bool(valid.all())
    result = train(config)
    start = _records(tmp_path / "whole")[0]
    assert start["images_per_iteration"] == 2  # batch 1 x iter_size 2
    assert result["iteration"] == 2 and result["final_loss"] > 0


def test_padded_crops_reach_the_model_with_their_validity_mask(data_root, tmp_path,
                                                              monkeypatch):
    from parsenet.models.parsenet import ParseNet

    seen = []
    original = ParseNet.forward

    def spy(self, x, valid=None):
        seen.append(None if valid is None else (tuple(valid.shape), bool(valid.all())))
        return original(self, x, valid)

    monkeypatch.setattr(ParseNet, "forward", spy)
    config = tiny_config(data_root, tmp_path / "pad", iterations=1, batch_size=2)
    config.data.crop_size = 72  # larger than the 56 x 64 images: every crop is padded
    config.data.scale_range = [1.0, 1.0]
    train(config)
    assert seen and all(s == ((2, 72, 72), False) for s in seen)
