from parsenet.backbones.resnet import ResNetBackbone
from parsenet.backbones.vgg import VGGBackbone
from parsenet.backbones.weights import WeightsError, load_vgg16_weights, read_state_dict

__all__ = ["VGGBackbone", "ResNetBackbone", "load_vgg16_weights", "read_state_dict",
           "WeightsError"]
