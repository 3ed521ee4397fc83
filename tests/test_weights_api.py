"""Typed weights entries: verify(), the groups they give, freezing by stage, old keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet50_Weights

from parsenet.backbones.efficientnet_lite_weights import EfficientNetLite0Weights
from parsenet.backbones.hed import H5File, HedWheelFile
from parsenet.backbones.resnet import ResNet50Weights
from parsenet.backbones.weights import VGG16Weights
from parsenet.config import load_config
from parsenet.engine.checkpoint import CHECKPOINT_FORMAT, load_model, save_checkpoint
from parsenet.engine.optim import freeze, pretrained_parameter_names
from parsenet.errors import ConfigError, WeightsError
from parsenet.models import parsenet_vgg16
from parsenet.models.released import ReleasedWeights
from parsenet.models.weights import weights_enum_of
from parsenet.preprocessing import CAFFE_VGG, IMAGENET, Preprocessing
from parsenet.weights_api import InMemory, LocalFile, ModelWeights, UrlFile


@pytest.mark.parametrize("name", ["hed", "HED", "VGG16Weights.HED"])
def test_a_members_name_gives_its_entry(name):
    assert VGG16Weights.verify(name) is VGG16Weights.HED.value
    assert VGG16Weights.verify(VGG16Weights.HED) is VGG16Weights.HED.value


def test_entries_carry_their_source_preprocessing_and_the_stages_they_fill():
    tv = VGG16Weights.IMAGENET1K_V1.value
    assert isinstance(tv.source, UrlFile) and tv.source.url.endswith(".pth")
    assert tv.preprocessing == IMAGENET and tv.fills[-2:] == ("fc6", "fc7")
    assert tv.meta["_metrics"]["ImageNet-1K"]["acc@1"] > 70  # torchvision's own card
    hed = VGG16Weights.HED.value
    assert isinstance(hed.source, HedWheelFile) and hed.preprocessing == CAFFE_VGG
    assert hed.fills == ("conv1", "conv2", "conv3", "conv4", "conv5")


def test_a_path_gives_an_entry_by_its_format_without_reading_it(tmp_path):
    pth = VGG16Weights.verify(tmp_path / "absent.pth")
    assert pth.source == LocalFile(tmp_path / "absent.pth") and "fc6" in pth.fills
    h5 = VGG16Weights.verify(str(tmp_path / "absent.h5"))
    assert isinstance(h5.source, H5File) and h5.preprocessing == CAFFE_VGG
    with pytest.raises(WeightsError, match="absent.pth: no such weights file"):
        pth.get_state_dict()


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(WeightsError, match="'imagenet'.*imagenet1k_v1, hed"):
        VGG16Weights.verify("imagenet")
    with pytest.raises(WeightsError, match="expected a VGG16Weights member"):
        VGG16Weights.verify(3)


def test_another_backbones_entry_is_refused():
    with pytest.raises(WeightsError, match="efficientnet_lite0 do not fit"):
        parsenet_vgg16(num_classes=2, weights=EfficientNetLite0Weights.IMAGENET.value)


def test_a_torchvision_member_becomes_our_entry():
    entry = ResNet50Weights.verify(ResNet50_Weights.IMAGENET1K_V2)
    assert entry == ResNet50Weights.IMAGENET1K_V2.value
    assert entry.source.url == ResNet50_Weights.IMAGENET1K_V2.url


def test_model_weights_enum_comes_from_the_builders_annotation():
    assert weights_enum_of("parsenet_vgg16") is VGG16Weights
    assert weights_enum_of("parsenet_efficientnet_lite0") is EfficientNetLite0Weights
    with pytest.raises(ConfigError, match="model.name: 'nope'"):
        weights_enum_of("nope")


@pytest.fixture(scope="module")
def full_vgg():
    return parsenet_vgg16(num_classes=2)


def test_pretrained_group_is_what_the_entry_fills(full_vgg):
    names = dict(full_vgg.named_parameters())
    hed = pretrained_parameter_names(full_vgg, VGG16Weights.HED.value)
    assert len(hed) == 26 and all(".conv" in n for n in hed)  # 13 convs, weight + bias
    tv = pretrained_parameter_names(full_vgg, VGG16Weights.IMAGENET1K_V1.value)
    assert set(tv) - set(hed) == {n for n in names if ".fc6." in n or ".fc7." in n}
    assert pretrained_parameter_names(full_vgg, None) == []
    whole = ModelWeights(InMemory(full_vgg.state_dict()), IMAGENET)
    assert pretrained_parameter_names(full_vgg, whole) == list(names)


def test_freeze_takes_stage_names_and_refuses_others():
    model = parsenet_vgg16(num_classes=2, width=0.0625)
    frozen = freeze(model, ["conv1", "fc7"])
    assert len(frozen) == 6 and not any(p.requires_grad for n, p in
                                        model.named_parameters() if n in frozen)
    with pytest.raises(ConfigError, match="model.freeze: 'conv9' is not a stage of the "
                                          "VGGBackbone \\(stages: conv1, .*fc7\\)"):
        freeze(model, ["conv9"])


@pytest.mark.parametrize("key, replaced_by", [
    ("pretrained_prefixes", "stages model.args.weights fills"),
    ("frozen_prefixes", "model.freeze, a list of backbone stage names"),
])
def test_old_module_path_keys_say_what_replaced_them(tmp_path, key, replaced_by):
    path = tmp_path / "old.yaml"
    path.write_text(f"model:\n  {key}: [backbone.layers.conv]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: model: {key}: was replaced")
    assert replaced_by in message and "\n" not in message


def test_checkpoint_model_keeps_its_stored_preprocessing(tmp_path):
    from parsenet.config import Config, config_to_dict

    config = Config()
    config.model.args = {"width": 0.0625}
    model = parsenet_vgg16(num_classes=2, width=0.0625)
    path = save_checkpoint(tmp_path / "last.pt", {
        "format": CHECKPOINT_FORMAT, "iteration": 1, "model": model.state_dict(),
        "config": config_to_dict(config), "classes": ["a", "b"], "palette": None,
        "preprocessing": CAFFE_VGG.to_dict()})
    bundle = load_model(path)
    loaded = bundle.model
    assert loaded.preprocessing == CAFFE_VGG  # not the untrained default, IMAGENET
    assert bundle.preprocessing == CAFFE_VGG
    first = next(iter(model.state_dict()))
    assert torch.equal(loaded.state_dict()[first], model.state_dict()[first])


def test_releases_are_whole_model_entries_with_their_cards():
    for member in ReleasedWeights.available():
        entry = member.value
        assert isinstance(entry, ModelWeights) and entry.weights_path.is_file()
        assert entry.preprocessing == Preprocessing.from_dict(entry.meta["preprocessing"])
        assert "freeze" in entry.meta["config"]["model"]
    assert Path(ReleasedWeights.SIFTFLOW.value.weights_path).suffix == ".safetensors"
