"""The allowed names of the config's enum fields, each defined once.

Kept apart from :mod:`parsenet.config` so that the CLI can build its parser (``--mode``
choices) without importing pydantic: ``parsenet --help`` stays fast.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["EvalMode", "AmpMode", "DataFormat", "LossReduction", "EVAL_MODES", "AMP_MODES",
           "DATA_FORMATS", "LOSS_REDUCTIONS", "LrPolicy", "MeanIuConvention", "PreprocessingName",
           "LR_POLICIES", "MEAN_IU_CONVENTIONS", "PREPROCESSING_NAMES", "ClassWeighting",
           "CLASS_WEIGHTINGS", "BACKENDS", "EXPORT_FORMATS", "MAX_SCALES"]

EvalMode = Literal["whole", "slide", "multiscale"]
AmpMode = Literal["auto", "off", "bf16", "fp16"]  # auto: bf16/fp16 where the device is fast
DataFormat = Literal["folder", "voc", "context", "siftflow", "camvid", "synthetic"]
LossReduction = Literal["mean", "sum"]
LrPolicy = Literal["poly", "fixed"]  # fixed: Caffe's constant rate
# see parsenet.engine.class_weights; "none" is the paper's unweighted loss
ClassWeighting = Literal["none", "median_frequency"]
MeanIuConvention = Literal["present", "nanmean"]  # see parsenet.metrics
PreprocessingName = Literal["caffe_vgg", "caffe_fcn", "imagenet"]  # see parsenet.preprocessing
# runtimes of predict/eval/serve (parsenet.engine.backends) and formats of `parsenet export`
BACKENDS: tuple[str, ...] = ("auto", "eager", "onnx", "openvino", "openvino-bf16",
                             "openvino-bf16-split")
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "openvino", "torchscript")
# The most test-time scales predict takes (--scales; parsenet.engine.inferencer.checked_scales):
# each is a forward pass an image (two with flip), so a long list is a slow mistake.
MAX_SCALES = 8
EVAL_MODES: tuple[str, ...] = get_args(EvalMode)
AMP_MODES: tuple[str, ...] = get_args(AmpMode)
DATA_FORMATS: tuple[str, ...] = get_args(DataFormat)
LOSS_REDUCTIONS: tuple[str, ...] = get_args(LossReduction)
LR_POLICIES: tuple[str, ...] = get_args(LrPolicy)
CLASS_WEIGHTINGS: tuple[str, ...] = get_args(ClassWeighting)
MEAN_IU_CONVENTIONS: tuple[str, ...] = get_args(MeanIuConvention)
PREPROCESSING_NAMES: tuple[str, ...] = get_args(PreprocessingName)
