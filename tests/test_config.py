"""Typed configs: YAML 1.2 numbers and booleans, strict types, bounds, enums, sections,
unknown keys, and the one line each problem gives."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from parsenet.config import (
    AMP_MODES,
    DATA_FORMATS,
    EVAL_MODES,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    check_config,
    config_from_dict,
    config_to_dict,
    load_config,
    load_yaml,
    save_config,
)

SECTIONS = (ModelConfig, DataConfig, TrainConfig, EvalConfig)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _error(overrides: list[str], path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- YAML 1.2
@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("1E10", 1e10), (".5", 0.5), ("-1.5e+3", -1500.0), ("3.", 3.0),
    ("12", 12), ("true", True), ("False", False),
    # YAML 1.1 booleans are strings in 1.2: a boolean field refuses them, amp: off is 'off'
    ("yes", "yes"), ("off", "off"), ("on", "on"), ("'1e-3'", "1e-3"),
])
def test_yaml_reads_numbers_and_booleans_as_yaml_1_2(text, value):
    loaded = load_yaml(f"v: {text}")["v"]
    assert loaded == value and type(loaded) is type(value)


def test_numbers_in_any_spelling_from_files_and_overrides(tmp_path):
    path = _write(tmp_path, "train:\n  lr: 1e-3\n  iterations: 1e3\n  weight_decay: 5E-4\n"
                  "data:\n  color_jitter: .5\n")
    config = load_config(path, ["train.momentum=.25", "eval.scales=[1e0, 1.5E0]"])
    assert (config.train.lr, config.train.weight_decay, config.data.color_jitter) == \
        (1e-3, 5e-4, 0.5)
    # an integer field takes a whole number in float spelling, and stays an int
    assert config.train.iterations == 1000 and type(config.train.iterations) is int
    assert config.train.momentum == 0.25 and config.eval.scales == [1.0, 1.5]


def test_unquoted_off_is_the_amp_name_not_false(tmp_path):
    assert load_config(_write(tmp_path, "train: {amp: off}\n")).train.amp == "off"


# ---------------------------------------------------------------------------- types
@pytest.mark.parametrize("override, message", [
    ("train.iterations=abc",
     "train.iterations: 'abc' is not an integer (expected an integer >= 1)"),
    ("train.iterations=2.5", "train.iterations: 2.5 is not an integer (expected an integer >= 1)"),
    ("train.iterations='3'", "train.iterations: '3' is not an integer (expected an integer >= 1)"),
    ("train.iterations=true",
     "train.iterations: True is not an integer (expected an integer >= 1)"),
    ("train.lr=abc", "train.lr: 'abc' is not a number (expected a number > 0)"),
    ("train.lr=.nan", "train.lr: nan is not a finite number (expected a number > 0)"),
    ("train.progress=maybe", "train.progress: 'maybe' is not a boolean (expected true or false)"),
    ("data.flip=yes", "data.flip: 'yes' is not a boolean (expected true or false)"),
    ("data.flip=1", "data.flip: 1 is not a boolean (expected true or false)"),
    ("data.root=3", "data.root: 3 is not a string (expected a string)"),
    ("eval.scales=[1, x]",
     "eval.scales[1]: 'x' is not a number (expected a non-empty list of numbers > 0)"),
    ("model.freeze=conv1", "model.freeze: 'conv1' is not a list "
     "(expected a list)"),
])
def test_a_wrong_type_names_key_value_and_what_is_allowed(override, message):
    assert _error([override]) == f"--set {message}"


@pytest.mark.parametrize("override, message", [
    ("train.lr=0", "train.lr: 0 is not allowed (expected a number > 0)"),
    ("train.batch_size=0", "train.batch_size: 0 is not allowed (expected an integer >= 1)"),
    ("train.momentum=1", "train.momentum: 1 is not allowed (expected a number >= 0 and < 1)"),
    ("train.seed=-1", "train.seed: -1 is not allowed (expected an integer >= 0)"),
    ("data.workers=-2", "data.workers: -2 is not allowed (expected an integer >= 0)"),
    ("data.holdout_every=1", "data.holdout_every: 1 is not allowed (expected 0 (off) or an "
     "integer >= 2; 1 would leave no training ids)"),
    ("data.scale_range=[2, 1]", "data.scale_range: [2.0, 1.0] is not allowed (expected "
     "[low, high] with 0 < low <= high)"),
    ("data.scale_range=[1]", "data.scale_range: [1] has too few items (expected "
     "[low, high] with 0 < low <= high)"),
    ("eval.scales=[]", "eval.scales: [] has too few items (expected a non-empty list of "
     "numbers > 0)"),
    ("eval.stride=600", "eval.stride: 600 is not allowed (expected an integer <= "
     "eval.window, 512, so that the windows cover the image)"),
])
def test_a_value_out_of_bounds_names_the_bound(override, message):
    assert _error([override]) == f"--set {message}"


@pytest.mark.parametrize("override, allowed", [
    ("train.amp=fp8", "one of 'auto', 'off', 'bf16', 'fp16'"),
    ("train.loss_reduction=avg", "one of 'mean', 'sum'"),
    ("data.format=coco", "one of 'folder', 'voc', 'context', 'siftflow', 'camvid', "
     "'synthetic'"),
    ("eval.mode=foo", "one of 'whole', 'slide', 'multiscale'"),
    ("train.device=tpu", "auto, cpu, cuda or cuda:N"),
])
def test_enums_by_name(override, allowed):
    key, value = override.split("=")
    assert _error([override]) == f"--set {key}: {value!r} is not allowed (expected {allowed})"


def test_device_names_that_are_allowed():
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert load_config(None, [f"train.device={device}"]).train.device == device


# ---------------------------------------------------------------------------- sections, keys
def test_sections_must_be_mappings():
    assert _error(["model.args=foo"]) == \
        "--set model.args: 'foo' is not a mapping (expected a mapping of name: value)"
    assert _error(["train=3"]) == "--set train: 3 is not a mapping (expected a mapping of " \
        "train settings)"
    assert _error(["model.args=foo", "model.args.width=1"]) == (
        "--set model.args.width=1: model.args is 'foo', not a section (a mapping) that could "
        "hold 'width'")


def test_unknown_keys_are_refused_with_the_known_ones(tmp_path):
    path = _write(tmp_path, "trian: {lr: 0.1}\n")
    assert _error([], path) == (f"{path}: trian: unknown key (known: name, model, data, "
                                "train, eval)")
    assert _error(["eval.windw=3"]) == ("--set eval.windw: unknown key (known: mode, window, "
                                        "stride, scales, flip, mean_iu)")


def test_problems_are_reported_against_their_source_on_one_line(tmp_path):
    path = _write(tmp_path, "train:\n  iterations: abc\n")
    assert _error(["train.lr=0"], path) == (
        f"{path}: train.iterations: 'abc' is not an integer (expected an integer >= 1); "
        "--set train.lr: 0 is not allowed (expected a number > 0)")


def test_yaml_errors_keep_line_and_column(tmp_path):
    path = _write(tmp_path, "train:\n  lr: [0.1\n")
    message = _error([], path)
    assert message.startswith(f"{path}:3:1: not valid YAML: expected ',' or ']'")


def test_a_config_path_that_is_a_directory_or_not_text(tmp_path):
    assert _error([], tmp_path) == f"{tmp_path}: is a directory, not a config file (give a " \
        ".yaml file)"
    path = tmp_path / "c.yaml"
    path.write_bytes(b"train: {lr: 0.1}\n# caf\xe9\n")
    assert _error([], path) == f"{path}: not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8"


# ---------------------------------------------------------------------------- Python use
def test_sections_built_in_python_are_checked_too():
    with pytest.raises(ConfigError, match=r"^config: data.format: 'coco' is not allowed"):
        DataConfig(format="coco")
    with pytest.raises(ConfigError, match=r"^config: train.iterations: 0 is not allowed"):
        TrainConfig(iterations=0)
    assert DataConfig(scale_range=(1.0, 1.5)).scale_range == [1.0, 1.5]  # tuples welcome


def test_assignment_is_checked_by_check_config():
    config = Config()
    config.train.lr = "fast"
    with pytest.raises(ConfigError, match=r"train.lr: 'fast' is not a number"):
        check_config(config)


def test_save_and_load_round_trip(tmp_path):
    config = load_config(None, ["train.lr=1e-5", "model.args={width: 0.5}", "eval.mode=slide"])
    save_config(config, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again == config and config_to_dict(again) == config_to_dict(config)
    assert config_from_dict(config_to_dict(config)) == config


def test_the_allowed_names_are_defined_once():
    from parsenet.cli import build_parser
    from parsenet.data import FORMATS
    from parsenet.engine import inference, precision

    assert inference.EVAL_MODES is EVAL_MODES and precision.AMP_MODES is AMP_MODES
    assert set(FORMATS) == set(DATA_FORMATS)
    sub = build_parser()._subparsers._group_actions[0].choices
    # predict adds "auto": whole or sliding windows, by the memory estimate
    for command, extra in (("eval", ()), ("predict", ("auto",))):
        mode = next(a for a in sub[command]._actions if a.dest == "mode")
        assert tuple(mode.choices) == (*EVAL_MODES, *extra)


def _numeric(annotation) -> bool:
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is \
        typing.Annotated else annotation
    return base in (int, float)


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_every_field_is_typed_and_every_number_bounded(section: type[BaseModel]):
    for name, field in section.model_fields.items():
        assert field.annotation is not typing.Any, f"{section.__name__}.{name} has no type"
        if _numeric(field.annotation):
            bounds = [m for m in field.metadata if hasattr(m, "ge") or hasattr(m, "gt")]
            assert bounds, f"{section.__name__}.{name} has no lower bound"


# ---------------------------------------------------------------------------- model section
@pytest.mark.parametrize("model, message", [
    (ModelConfig(name="segnet"), "model.name: 'segnet' is not a known model (expected one of "
     "parsenet_vgg16, parsenet_resnet50, parsenet_resnet101, parsenet_efficientnet_lite0, "
     "parsenet_efficientnet_lite1, parsenet_efficientnet_lite2)"),
    (ModelConfig(args={"widht": 0.5}), "model.args.widht: unknown key (known: base, "
     "features, context, fusion,"),
    (ModelConfig(args={"width": "abc"}),
     "model.args.width: 'abc' is not a number (expected a number)"),
    (ModelConfig(args={"features": "fc7"}),
     "model.args.features: 'fc7' is a string, not a list (expected a list)"),
    (ModelConfig(args={"pyramid": [1, "2"]}),
     "model.args.pyramid[1]: '2' is not an integer (expected an integer)"),
    (ModelConfig(args={"fc_channels": "x"}),
     "model.args.fc_channels: 'x' is not an integer (expected an integer or null)"),
    (ModelConfig(args={"width": 0.0625, "fusion": "sideways"}),
     "model.args: fusion mode must be one of ('early', 'late', 'conv1x1'), got 'sideways' "
     "(model parsenet_vgg16)"),
])
def test_a_model_section_the_builder_cannot_use_is_a_config_error(model, message):
    from parsenet.recipe import build_model_from_config

    with pytest.raises(ConfigError) as info:
        build_model_from_config(model, num_classes=3)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("params, message", [
    ({"size": "abc"}, "data.synthetic.size: 'abc' is not an integer (expected an integer)"),
    ({"size": 2.5}, "data.synthetic.size: 2.5 is not an integer (expected an integer)"),
    ({"splits": {"train": "x"}},
     "data.synthetic.splits.train: 'x' is not an integer (expected an integer)"),
])
def test_synthetic_parameters_are_typed(params, message):
    from parsenet.data.synthetic import SyntheticParams
    from parsenet.errors import DataError

    with pytest.raises(DataError) as info:
        SyntheticParams.from_kwargs(params)
    assert str(info.value) == message


def test_a_checkpoint_whose_stored_config_does_not_fit(tmp_path):
    import torch

    from parsenet.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_model

    path = tmp_path / "old.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "iteration": 1, "model": {}, "classes": ["a"],
                "config": {"train": {"iterations": "x"}}, "preprocessing": {}}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value) == (f"{path}: stored config does not fit this version: "
                               "train.iterations: 'x' is not an integer (expected an integer "
                               ">= 1)")
