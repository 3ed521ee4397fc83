"""ParseNet assembled from injected parts: the parts must fit, and branch_norms names the
L2Norm layer of every normalised branch."""

from functools import partial

import pytest
import torch
from torch import nn

from parsenet.backbones.vgg import VGGBackbone
from parsenet.layers import ContextFusion, GlobalContext, L2Norm
from parsenet.models import HeadOptions, ParseNet, parsenet_vgg16

TINY = dict(num_classes=3, width=0.0625)


def test_branch_norms_name_every_normalised_branch():
    model = parsenet_vgg16(**TINY, features=("conv4", "fc7"), pyramid=(1, 2), scale_init=7.0)
    norms = model.branch_norms()
    assert list(norms) == ["conv4", "fc7", "pool6", "pool6_2x2"]
    assert norms["conv4"] is model.head.norms[0] and norms["fc7"] is model.head.norms[1]
    assert norms["pool6"] is model.context.norms[0]
    assert norms["pool6_2x2"] is model.context.norms[1]
    assert all(isinstance(n, L2Norm) and torch.all(n.weight == 7.0) for n in norms.values())
    assert [n.channels for n in norms.values()] == [32, 64, 64, 64]


def test_branch_norms_of_the_baseline_and_of_a_fixed_scale():
    assert parsenet_vgg16(**TINY, context=False, normalize=False).branch_norms() == {}
    fixed = parsenet_vgg16(**TINY, learn_scale=False).branch_norms()
    assert list(fixed) == ["fc7", "pool6"]
    assert not any(n.weight.requires_grad for n in fixed.values())  # buffers, not parameters


def test_parts_injected_by_hand_equal_the_builder():
    torch.manual_seed(0)
    built = parsenet_vgg16(**TINY, features=("conv5", "fc7"), scale_init=20.0)
    torch.manual_seed(0)
    backbone = VGGBackbone(taps=("conv5", "fc7"), width=0.0625)
    norm = partial(L2Norm, scale_init=20.0)
    by_hand = ParseNet(backbone, GlobalContext(64, norm_layer=norm),
                       ContextFusion([32, 64], [64], 3, norm_layer=norm),
                       features=("conv5", "fc7"), context_source="fc7")
    assert list(by_hand.state_dict()) == list(built.state_dict())
    for (name, a), b in zip(by_hand.state_dict().items(), built.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert by_hand.num_classes == 3


def test_parts_that_do_not_fit_are_refused():
    backbone = VGGBackbone(taps=("conv5", "fc7"), width=0.0625)  # 32 and 64 channels
    head = ContextFusion([64], [64], 3)
    with pytest.raises(ValueError, match="does not provide taps"):
        ParseNet(backbone, GlobalContext(64), head, features=("conv4",), context_source="fc7")
    with pytest.raises(ValueError, match="needs context_source"):
        ParseNet(backbone, GlobalContext(64), head, features=("fc7",))
    with pytest.raises(ValueError, match="context pools 32 channels"):
        ParseNet(backbone, GlobalContext(32), head, features=("fc7",), context_source="fc7")
    with pytest.raises(ValueError, match="head expects"):
        ParseNet(backbone, None, head, features=("fc7",))


def test_head_options_are_declared_once_and_refuse_unknown_names():
    assert HeadOptions().norm_layer().func is L2Norm
    assert HeadOptions(normalize=False).norm_layer() is nn.Identity
    with pytest.raises(TypeError, match="scale_int"):
        parsenet_vgg16(**TINY, scale_int=10.0)


@pytest.mark.parametrize("name", ["parsenet_vgg16", "parsenet_resnet50",
                                  "parsenet_efficientnet_lite0"])
def test_every_builder_takes_the_head_options_from_a_config(name):
    import dataclasses

    from parsenet.config import ModelConfig
    from parsenet.errors import ConfigError
    from parsenet.recipe import build_model_from_config, builder_arguments

    known = builder_arguments(name).model_fields
    assert {f.name for f in dataclasses.fields(HeadOptions)} <= set(known)
    assert "features" in known and "weights" in known
    with pytest.raises(ConfigError, match=r"^model.args.scale_init: 'x' is not a number"):
        build_model_from_config(ModelConfig(name=name, args={"scale_init": "x"}),
                                num_classes=3)
    with pytest.raises(ConfigError, match=r"^model.args.scale_int: unknown key \(known: "):
        build_model_from_config(ModelConfig(name=name, args={"scale_int": 1.0}),
                                num_classes=3)


def test_a_head_option_a_layer_refuses_is_a_config_error_for_any_backbone():
    from parsenet.config import ModelConfig
    from parsenet.errors import ConfigError
    from parsenet.recipe import build_model_from_config

    model = ModelConfig(name="parsenet_efficientnet_lite0", args={"init": "sideways"})
    with pytest.raises(ConfigError, match=r"^model.args: init must be one of .* got "
                                          r"'sideways' \(model parsenet_efficientnet_lite0\)"):
        build_model_from_config(model, num_classes=3)
