from parsenet.models.builders import (
    MODELS,
    HeadOptions,
    build_model,
    parsenet_efficientnet_lite0,
    parsenet_efficientnet_lite1,
    parsenet_efficientnet_lite2,
    parsenet_resnet50,
    parsenet_resnet101,
    parsenet_vgg16,
)
from parsenet.models.parsenet import ParseNet

__all__ = ["ParseNet", "HeadOptions", "parsenet_vgg16", "parsenet_resnet50", "parsenet_resnet101",
           "parsenet_efficientnet_lite0", "parsenet_efficientnet_lite1",
           "parsenet_efficientnet_lite2", "MODELS",
           "build_model"]
