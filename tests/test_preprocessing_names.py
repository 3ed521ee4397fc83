import pytest
import torch

from parsenet.config import ConfigError
from parsenet.preprocessing import CAFFE_VGG, IMAGENET, preprocessing_by_name


def test_caffe_vgg_is_bgr_0_255_minus_the_vgg16_mean():
    pixel = torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1)  # R, G, B
    out = preprocessing_by_name("caffe_vgg")(pixel).flatten().tolist()
    assert out == pytest.approx([30 - 103.939, 20 - 116.779, 10 - 123.68], abs=1e-4)


def test_other_names_and_a_bad_one():
    assert preprocessing_by_name("caffe_fcn") is CAFFE_VGG  # FCN's data-layer mean
    assert preprocessing_by_name("imagenet") is IMAGENET
    with pytest.raises(ConfigError, match="model.preprocessing"):
        preprocessing_by_name("caffe")
