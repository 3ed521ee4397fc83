"""ImageNet VGG-16 conversion, on a random torchvision vgg16 the test saves itself."""

import pytest
import torch
from torchvision.models import vgg16

from parsenet.backbones import WeightsError
from parsenet.models import parsenet_vgg16
from parsenet.preprocessing import IMAGENET


@pytest.fixture(scope="module")
def tv_vgg_path(tmp_path_factory):
    torch.manual_seed(0)
    net = vgg16()
    path = tmp_path_factory.mktemp("w") / "vgg16.pth"
    torch.save(net.state_dict(), path)
    return net.eval(), path


def test_fcn32s_fc7_equals_torchvision_classifier(tv_vgg_path):
    net, path = tv_vgg_path
    model = parsenet_vgg16(num_classes=2, base="fcn32s", context=False, normalize=False,
                           weights=str(path)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = model.backbone(x, ("fc7",))["fc7"]
        feats = torch.flatten(net.avgpool(net.features(x)), 1)
        theirs = net.classifier[:5](feats)  # fc6, relu, dropout, fc7, relu
    assert ours.shape[-2:] == (7, 7)
    # The centre cell's 7x7 fc6 window covers the whole pool5 map, as the Linear layer does.
    torch.testing.assert_close(ours[0, :, 3, 3], theirs[0], rtol=1e-4, atol=1e-4)
    assert model.preprocessing == IMAGENET


def test_largefov_decimates_fc6_fc7(tv_vgg_path):
    net, path = tv_vgg_path
    model = parsenet_vgg16(num_classes=2, weights=path)
    fc6, fc7 = model.backbone.fc_layers()
    w6 = net.classifier[0].weight.detach().reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
    torch.testing.assert_close(fc6.weight.detach(), w6)
    w7 = net.classifier[3].weight.detach()[::4, ::4]
    torch.testing.assert_close(fc7.weight.detach()[:, :, 0, 0], w7)
    conv1_1 = model.backbone.conv_layers()[0]
    torch.testing.assert_close(conv1_1.weight.detach(), net.features[0].weight.detach())


def test_width_reduced_model_rejects_weights(tv_vgg_path):
    _, path = tv_vgg_path
    with pytest.raises(WeightsError, match="width"):
        parsenet_vgg16(num_classes=2, width=0.5, weights=path)


def test_truncated_file_named_in_error(tv_vgg_path, tmp_path):
    _, path = tv_vgg_path
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated.pth"):
        parsenet_vgg16(num_classes=2, weights=bad)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        parsenet_vgg16(num_classes=2, weights=tmp_path / "nope.pth")


def test_file_without_classifier_is_refused_not_half_loaded(tv_vgg_path, tmp_path):
    net, _ = tv_vgg_path
    features_only = tmp_path / "features.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()
               if k.startswith("features.")}, str(features_only))
    # A path entry fills fc6/fc7 too (the pretrained group says so): a file without them
    # is an error rather than fc6/fc7 silently left at their initialisation.
    with pytest.raises(WeightsError, match="features.safetensors: no classifier"):
        parsenet_vgg16(num_classes=2, weights=features_only)
