"""Run configuration: typed sections (pydantic v2), YAML files and dotted overrides.

A config is built once (``load_config(path, overrides)``), saved with the run
(``save_config``) and passed down; nothing else reads files or the environment for settings.

    parsenet train --config configs/cpu/siftflow_parsenet.yaml --set train.iterations=500 \
        --set model.args.fusion=early

Every field has a type and bounds, checked when the config is read (from YAML, from
``--set``, from a checkpoint) and again when training starts (a config changed in Python).
A bad value is a :class:`ConfigError` of one line naming the key, the value and what is
allowed (see :mod:`parsenet.config_messages`). YAML is read with YAML 1.2 numbers and
booleans (:mod:`parsenet.config_files`): ``1e-3`` is a number (YAML 1.1 reads it as a
string), ``yes``/``on``/``maybe`` are strings, so a boolean field accepts only true/false.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from parsenet.choices import (  # noqa: F401  (re-exported)
    AMP_MODES,
    DATA_FORMATS,
    EVAL_MODES,
    LOSS_REDUCTIONS,
    AmpMode,
    ClassWeighting,
    DataFormat,
    EvalMode,
    LossReduction,
    LrPolicy,
    MeanIuConvention,
    PreprocessingName,
)
from parsenet.config_files import (  # noqa: F401  (re-exported)
    load_yaml,
    merge_dicts,
    read_config_file,
)
from parsenet.config_messages import describe_validation_error
from parsenet.disk_full import naming_full_disk
from parsenet.errors import ConfigError

__all__ = ["Config", "ModelConfig", "DataConfig", "TrainConfig", "FrozenPrefixConfig",
           "EvalConfig", "ConfigError",
           "load_config", "read_config_file", "merge_dicts", "save_config", "apply_overrides",
           "config_from_dict", "config_to_dict", "check_config", "load_yaml",
           "EVAL_MODES", "AMP_MODES", "DATA_FORMATS", "LOSS_REDUCTIONS"]


def _whole_number(value: Any) -> Any:
    # 1e3 is a float in YAML; an integer field takes it when it is whole (2.5 stays refused).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _tuple_to_list(value: Any) -> Any:
    # Python callers write (0.5, 2.0); YAML gives lists. Items are still checked one by one.
    return list(value) if isinstance(value, tuple) else value


def _not_one(value: int) -> int:
    if value == 1:
        raise ValueError("1 is not allowed (expected 0 (off) or an integer >= 2; 1 would "
                         "leave no training ids)")
    return value


def _ordered(value: list[float]) -> list[float]:
    if len(value) == 2 and value[0] > value[1]:
        raise ValueError(f"{value!r} is not allowed (expected [low, high] with "
                         f"0 < low <= high)")
    return value


_FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max


def _int(ge: int) -> Any:
    return Annotated[int, BeforeValidator(_whole_number), Field(ge=ge)]


Count = _int(1)  # iterations, sizes, intervals: at least 1
NonNegative = _int(0)
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Floats = Annotated[list[Positive], BeforeValidator(_tuple_to_list)]
Strings = Annotated[list[str], BeforeValidator(_tuple_to_list)]
Size = Annotated[list[Count], BeforeValidator(_tuple_to_list), Field(min_length=2, max_length=2)]


class _Section(BaseModel):
    """Strict (no '3' for 3, no 'yes' for true), closed (unknown keys refused), and built
    with one-line :class:`ConfigError` s instead of pydantic's multi-line report."""

    model_config = ConfigDict(extra="forbid", strict=True)
    SECTION: ClassVar[str] = ""  # the key of this section in a config file

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError(describe_validation_error(e, type(self), "config",
                                                        section=self.SECTION)) from None

    # Tells pydantic that this __init__ only validates, as BaseModel's does (RootModel marks
    # its own the same way), so that a section nested in a file's dict is validated
    # directly and its problems come back with the whole config's, keyed from the top.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class ModelConfig(_Section):
    SECTION: ClassVar[str] = "model"
    name: str = Field("parsenet_vgg16", min_length=1)  # a key of parsenet.models.MODELS
    # Keyword arguments of the builder (num_classes is taken from the dataset):
    # base, features, context, fusion, normalize, scale_init, learn_scale, pyramid, dropout,
    # weights, width, batch_norm, conv1_pad, init, fusion_grid, ...
    args: dict[str, Any] = Field(default_factory=dict)
    # Backbone stages to freeze (requires_grad off), named as the backbone names them:
    # conv1 ... conv5, fc6, fc7 (VGG-16); stem, stage1 ... stage7, head (EfficientNet-Lite0);
    # stem, layer1 ... layer4 (ResNet). No key names the pretrained parameters: they are the
    # stages the weights entry (model.args.weights) fills, and learn at train.lr; every other
    # parameter is new and gets train.lr * train.new_layer_lr_mult.
    freeze: Strings = Field(default_factory=list)
    # The backbone's BatchNorm layers keep ImageNet's running statistics while training
    # (eval mode; their affine terms still learn unless frozen): mmsegmentation's norm_eval.
    norm_eval: bool = False
    # A file whose weights start the whole model (a checkpoint of ours or a .safetensors
    # state dict, e.g. a head trained on frozen features): iteration, optimiser and
    # schedule still start fresh (that is --resume's job), and every parameter learns at
    # train.lr (none is new). mmsegmentation's load_from.
    init_from: str | None = None
    # Input preparation, overriding the weights' own: None (the weights'), "caffe_vgg" (BGR,
    # 0-255, minus VGG-16's published mean 103.939/116.779/123.68), "caffe_fcn" (the same
    # with FCN's data-layer mean 104.007/116.669/122.679) or "imagenet" (torchvision's).
    preprocessing: PreprocessingName | None = None

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, values: Any) -> Any:
        # The module-path keys of earlier versions: say what replaced them, not "unknown key".
        if isinstance(values, dict) and "pretrained_prefixes" in values:
            raise ValueError("pretrained_prefixes: was replaced: the pretrained parameters are "
                             "now the backbone stages model.args.weights fills; delete the key")
        if isinstance(values, dict) and "frozen_prefixes" in values:
            raise ValueError("frozen_prefixes: was replaced by model.freeze, a list of backbone "
                             "stage names such as [conv1, conv2, conv3]")
        return values


class DataConfig(_Section):
    SECTION: ClassVar[str] = "data"
    root: str = "data/synthetic"
    format: DataFormat = "folder"  # the keys of parsenet.data.build.FORMATS
    train_split: str = Field("train", min_length=1)
    val_split: str = Field("val", description="a split name, or '' for no validation")
    # Carve a validation set from one split: of the split's sorted ids, every
    # ``holdout_every``-th (index % holdout_every == 0) is validation, the rest training.
    # Used when train_split == val_split (SiftFlow's trainval).
    holdout_every: Annotated[NonNegative, AfterValidator(_not_one)] = Field(
        0, description="0 (off) or an integer >= 2")
    # null: whole-image training at the image's own size, no crop and no padding (FCN / the
    # paper: "any size, without warping or cropping"). Needs train.batch_size 1;
    # train.accumulate is then Caffe's iter_size. scale_range still applies (an isotropic
    # rescale, never a warp); set [1.0, 1.0] for the images as they are.
    crop_size: Count | None = 320
    scale_range: Annotated[Floats, AfterValidator(_ordered)] = Field(
        default_factory=lambda: [0.5, 2.0], min_length=2, max_length=2,
        description="[low, high] with 0 < low <= high")
    flip: bool = True
    color_jitter: NonNegativeFloat = 0.0
    # [height, width]: every image is warped to this size before the other steps (labels by
    # nearest neighbour), in training and in validation, where the scores are resized back
    # to the full-size label that they are scored against. null: images keep their size.
    resize: Size | None = Field(None, description="null or [height, width]")
    workers: NonNegative = 1  # DataLoader worker processes; 0 loads in the main process
    # Images and labels over this size (read from the file's header) are refused before
    # they are decoded: a few hundred bytes can claim gigabytes of pixels. serve's default.
    max_megapixels: Positive = 40.0
    # Synthetic data only: generated into ``root`` if absent.
    synthetic: dict[str, Any] = Field(default_factory=dict)


class FrozenPrefixConfig(_Section):
    """The backbone's stages up to ``upto`` are frozen (no gradient, BatchNorm on its running
    statistics: mmseg's ``frozen_stages``, by name); ``cache``: their outputs are computed
    once per image, flip and scale into that directory and training reads stride-aligned
    crops of them (:mod:`parsenet.engine.frozen_prefix`)."""

    SECTION: ClassVar[str] = "train.frozen_prefix"
    upto: str | None = None  # a stage of model.freeze's names; null: nothing frozen this way
    cache: str | None = None  # a directory; null: the prefix runs on every crop
    # With a cache, the random scale is drawn from these (each cached), not data.scale_range.
    scales: Floats = Field(default_factory=lambda: [1.0], min_length=1,
                           description="a non-empty list of numbers > 0")


class TrainConfig(_Section):
    SECTION: ClassVar[str] = "train"
    iterations: Count = 1000
    batch_size: Count = 8
    accumulate: Count = 1  # gradient accumulation steps per iteration
    lr: Positive = 1e-3
    new_layer_lr_mult: NonNegativeFloat = 10.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    poly_power: NonNegativeFloat = 0.9
    warmup_iterations: NonNegative = 0
    # "mean" over non-ignored pixels, or "sum" (Caffe's loss with normalize: false)
    loss_reduction: LossReduction = "mean"
    # per-class loss weights counted from the train labels (engine/class_weights.py); not
    # the paper's, whose loss is unweighted ("none")
    class_weights: ClassWeighting = "none"
    amp: AmpMode = "auto"  # auto = bf16/fp16 only where the device is fast
    seed: NonNegative = 0  # numpy's seeds must be >= 0
    deterministic: bool = False
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$",
                        description="auto, cpu, cuda or cuda:N")
    checkpoint_every: Count = 200
    val_every: NonNegative = 0  # 0: validate only at the end
    log_every: Count = 10
    max_val_images: NonNegative = 0  # 0: the whole validation split
    out_dir: str = Field("runs/default", min_length=1)
    progress: bool = True
    # "poly" (base_lr * (1 - it/max)^poly_power) or "fixed" (Caffe's constant rate)
    lr_policy: LrPolicy = "poly"
    # biases learn this many times their group's rate (FCN nets: 2)
    bias_lr_mult: NonNegativeFloat = 1.0
    # Whether biases take weight decay. False is this project's rule and every Caffe net the
    # paper builds on (FCN, DeepLab, ParseNet prototxts: bias decay_mult 0).
    bias_decay: bool = False
    frozen_prefix: FrozenPrefixConfig = Field(default_factory=FrozenPrefixConfig)
    # The loss on every loss_stride-th pixel of each row and column, those where the output
    # grid's upsampling lands on whole pixels (engine/iteration.py): loss_stride**2 times
    # fewer pixels in the softmax and its backward. 1: every pixel.
    loss_stride: Count = 1

    @model_validator(mode="after")
    def _rates_fit_float32(self) -> TrainConfig:
        # The optimizer steps in float32: a larger rate fails inside torch's SGD.
        rate = self.lr * max(1.0, self.new_layer_lr_mult, self.bias_lr_mult,
                             self.new_layer_lr_mult * self.bias_lr_mult)
        if rate > _FLOAT32_MAX:
            raise ValueError(f"lr: {self.lr:g} is not allowed (times the largest rate "
                             f"multiplier it is {rate:g}, beyond float32's {_FLOAT32_MAX:.3g} "
                             f"that the optimizer steps in)")
        return self


class EvalConfig(_Section):
    SECTION: ClassVar[str] = "eval"
    mode: EvalMode = "whole"
    window: Count = 512  # sliding window size
    stride: Count = 341  # sliding window step
    scales: Floats = Field(default_factory=lambda: [0.75, 1.0, 1.25], min_length=1,
                           description="a non-empty list of numbers > 0")
    flip: bool = False
    # "present": mean IU over classes with ground truth; "nanmean": FCN score.py's nanmean
    # over classes with a non-empty union (see parsenet.metrics)
    mean_iu: MeanIuConvention = "present"

    @model_validator(mode="after")
    def _window(self) -> EvalConfig:
        if self.stride > self.window:
            # "key: problem": config_messages files it under eval.stride
            raise ValueError(f"stride: {self.stride} is not allowed (expected an integer <= "
                             f"eval.window, {self.window}, so that the windows cover the image)")
        return self


class Config(_Section):
    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _whole_images_come_one_at_a_time(self) -> Config:
        if self.data.crop_size is None and self.train.batch_size != 1:
            # "key: problem": config_messages files it under data
            raise ValueError(f"data: crop_size is null (whole-image training: every image keeps "
                             f"its own size) so train.batch_size must be 1, got "
                             f"{self.train.batch_size}; use train.accumulate for Caffe's "
                             f"iter_size")
        prefix = self.train.frozen_prefix
        if prefix.cache is not None and (prefix.upto is None or self.data.crop_size is None
                                         or self.data.color_jitter):
            # A cache holds the prefix's output of each whole image, so an image-level step
            # (jitter) cannot follow it and the crop must have a size.
            raise ValueError("train: frozen_prefix.cache needs frozen_prefix.upto, a "
                             "data.crop_size and data.color_jitter 0")
        return self


# ---------------------------------------------------------------------------- dicts
def _validate(values: Any, where: str, from_overrides: Collection[str] = ()) -> Config:
    if not isinstance(values, dict):
        raise ConfigError(": ".join(filter(None, (where, "expected a mapping of sections, got "
                                                  f"{type(values).__name__}"))))
    try:
        return Config.model_validate(values)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, Config, where, from_overrides)) from None


def config_from_dict(values: dict[str, Any], where: str = "config", *,
                     overrides: Sequence[str] = ()) -> Config:
    """A checked :class:`Config` from nested dicts (a file's, a checkpoint's), with dotted
    ``overrides`` applied first (to ``values``, in place) and reported as ``--set``."""
    values = apply_overrides(values or {}, list(overrides))
    return _validate(values, where, _override_keys(list(overrides)))


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dicts and lists (what ``save_config`` writes and checkpoints store)."""
    return config.model_dump(warnings=False)


def check_config(config: Config, where: str = "config") -> Config:
    """Check a config again, e.g. after Python code changed its fields (assignment is not
    checked); returns the checked copy or raises :class:`ConfigError`."""
    return _validate(config_to_dict(config), where)


def _parse_value(text: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text  # not YAML (say "[1,"): the string itself, which the field then judges


def _override_keys(overrides: list[str]) -> list[str]:
    return [item.split("=", 1)[0].strip() for item in overrides if "=" in item]


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML 1.2) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: {key.strip()!r} is not a dotted key")
        node = values
        for depth, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                section = ".".join(parts[:depth + 1])
                raise ConfigError(f"--set {item}: {section} is {node!r}, not a section "
                                  f"(a mapping) that could hold {parts[depth + 1]!r}")
        node[parts[-1]] = _parse_value(text)
    return values


# ---------------------------------------------------------------------------- files
def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None
                ) -> Config:
    """Read a YAML config (optional, ``base:`` resolved), apply dotted overrides, validate.

    A bad value is reported against the file, or against ``--set`` when an override gave it.
    """
    values: dict[str, Any] = {}
    where = "config"
    if path is not None:
        values = read_config_file(path)
        where = str(path)
    overrides = list(overrides or [])
    apply_overrides(values, overrides)
    return _validate(values, where, _override_keys(overrides))


def save_config(config: Config, path: str | os.PathLike) -> None:
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    with naming_full_disk(path, "the run's config"):
        Path(path).write_text(text)
