"""Run configuration: dataclasses, YAML files and dotted command-line overrides.

A config is built once (``load_config(path, overrides)``), saved with the run
(``save_config``) and passed down; nothing else reads files or the environment for settings.

    parsenet train --config configs/cpu/siftflow_parsenet.yaml --set train.iterations=500 \
        --set model.args.fusion=early
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from parsenet.errors import ConfigError  # noqa: F401  (re-exported)

__all__ = ["Config", "ModelConfig", "DataConfig", "TrainConfig", "EvalConfig", "ConfigError",
           "load_config", "read_config_file", "merge_dicts", "save_config", "apply_overrides",
           "config_from_dict", "config_to_dict"]


@dataclass
class ModelConfig:
    name: str = "parsenet_vgg16"  # a key of parsenet.models.MODELS
    # Keyword arguments of the builder (num_classes is taken from the dataset):
    # base, features, context, fusion, normalize, scale_init, learn_scale, pyramid, dropout,
    # weights, width, batch_norm, conv1_pad, init, fusion_grid, ...
    args: dict[str, Any] = field(default_factory=dict)
    # Parameters whose names start with one of these are "pretrained": base LR. Every other
    # parameter is a new layer and gets train.lr * train.new_layer_lr_mult (10x: DeepLab's
    # prototxts give fc8 lr_mult 10; the paper itself states no multiplier).
    # Empty: all parameters are new (training from scratch).
    pretrained_prefixes: list[str] = field(default_factory=list)
    # Parameters whose names start with one of these are frozen.
    frozen_prefixes: list[str] = field(default_factory=list)
    # paper recipe knobs
    # Input preparation, overriding the weights' own: None (the weights'), "caffe_vgg" (BGR,
    # 0-255, minus VGG-16's published mean 103.939/116.779/123.68), "caffe_fcn" (the same
    # with FCN's data-layer mean 104.007/116.669/122.679) or "imagenet" (torchvision's).
    preprocessing: str | None = None


@dataclass
class DataConfig:
    root: str = "data/synthetic"
    format: str = "folder"  # folder | voc | context | siftflow | camvid | synthetic
    train_split: str = "train"
    val_split: str = "val"
    # Carve a validation set from one split: of the split's sorted ids, every
    # ``holdout_every``-th (index % holdout_every == 0) is validation, the rest training.
    # Used when train_split == val_split (SiftFlow's trainval).
    holdout_every: int = 0
    crop_size: int | None = 320
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    color_jitter: float = 0.0
    workers: int = 1
    # Synthetic data only: generated into ``root`` if absent.
    synthetic: dict[str, Any] = field(default_factory=dict)
    # paper recipe knobs
    # crop_size (above) may be null: whole-image training at the image's own size, no crop
    # and no padding (FCN / the paper: "any size, without warping or cropping"). Needs
    # train.batch_size 1; train.accumulate is then Caffe's iter_size. scale_range still
    # applies (an isotropic rescale, never a warp); set [1.0, 1.0] for the images as they are.


@dataclass
class TrainConfig:
    iterations: int = 1000
    batch_size: int = 8
    accumulate: int = 1  # gradient accumulation steps per iteration
    lr: float = 1e-3
    new_layer_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    warmup_iterations: int = 0
    # "mean" over non-ignored pixels, or "sum" (Caffe's loss with normalize: false)
    loss_reduction: str = "mean"
    amp: str = "auto"  # auto | off | fp16 | bf16; auto = bf16/fp16 only where the device is fast
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = 200
    val_every: int = 0  # 0: validate only at the end
    log_every: int = 10
    max_val_images: int = 0  # 0: the whole validation split
    out_dir: str = "runs/default"
    progress: bool = True
    # paper recipe knobs
    lr_policy: str = "poly"  # "poly" (base_lr * (1 - it/max)^poly_power) | "fixed" (Caffe's)
    bias_lr_mult: float = 1.0  # biases learn this many times their group's rate (FCN nets: 2)
    # Whether biases take weight decay. False is this project's rule and every Caffe net the
    # paper builds on (FCN, DeepLab, ParseNet prototxts: bias decay_mult 0).
    bias_decay: bool = False


@dataclass
class EvalConfig:
    mode: str = "whole"  # whole | slide | multiscale
    window: int = 512  # sliding window size
    stride: int = 341  # sliding window step
    scales: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])
    flip: bool = False
    # paper recipe knobs
    # "present": mean IU over classes with ground truth; "nanmean": FCN score.py's nanmean
    # over classes with a non-empty union (see parsenet.metrics)
    mean_iu: str = "present"


@dataclass
class Config:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        sub = fields[name].default_factory if dataclasses.is_dataclass(
            fields[name].default_factory) else None  # type: ignore[arg-type]
        kwargs[name] = _build(sub, value, f"{where}.{name}") if sub else value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any], where: str = "config") -> Config:
    return _build(Config, values or {}, where)


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = values
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = _parse_value(text)
    return values


def merge_dicts(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``delta`` over ``base``: mappings merge key by key, anything else (lists too) replaces."""
    merged = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as a dict, with its ``base:`` chain resolved.

    ``base: other.yaml`` (a path relative to this file) is read first and this file is merged
    over it (:func:`merge_dicts`), so a paper row is a short delta over its table's file.
    """
    path = Path(path)
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"{path}: base: chain loops ({cycle})")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: must be a path to a YAML file, got {base!r}")
    parent = read_config_file(path.parent / base, (*_chain, path.resolve()))
    return merge_dicts(parent, values)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None
                ) -> Config:
    """Read a YAML config (optional, ``base:`` resolved), apply dotted overrides, validate."""
    values: dict[str, Any] = {}
    where = "config"
    if path is not None:
        values = read_config_file(path)
        where = str(path)
    apply_overrides(values, list(overrides or []))
    return config_from_dict(values, where)


def save_config(config: Config, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
