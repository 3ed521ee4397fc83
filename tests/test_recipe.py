"""parsenet.recipe: the config's model section is checked against its builder when the config
is read, before any dataset or weights file is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from parsenet.cli import main
from parsenet.config import ConfigError, ModelConfig
from parsenet.recipe import build_model_from_config, check_model_args, load_recipe


def _config(tmp_path: Path, model_args: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {{name: parsenet_vgg16, args: {model_args}}}\n"
                    f"data: {{root: {tmp_path / 'no_such_data'}}}\n"
                    f"train: {{out_dir: {tmp_path / 'run'}, device: cpu}}\n")
    return path


def test_a_misspelt_model_key_fails_when_the_config_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model\.args\.widht: unknown key \(known: base"):
        load_recipe(_config(tmp_path, "{widht: 0.0625}"))
    with pytest.raises(ConfigError, match=r"^model\.args\.width: 'abc' is not a number"):
        load_recipe(_config(tmp_path, "{width: abc}"))
    assert load_recipe(_config(tmp_path, "{width: 0.0625}")).model.args == {"width": 0.0625}


def test_train_names_the_model_key_before_it_looks_for_the_data(tmp_path: Path, capsys) -> None:
    """The data root does not exist: the error printed is the model key's, so nothing was
    read before the model section was checked."""
    assert main(["train", "--config", str(_config(tmp_path, "{widht: 0.0625}"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("parsenet: error: model.args.widht: unknown key")
    assert "no_such_data" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_trainer_checks_the_model_before_the_datasets(tmp_path: Path) -> None:
    """Python users calling train() directly get the same order."""
    from parsenet.config import load_config
    from parsenet.engine.trainer import train

    config = load_config(_config(tmp_path, "{widht: 0.0625}"))  # read unchecked
    with pytest.raises(ConfigError, match=r"^model\.args\.widht: unknown key"):
        train(config)


def test_an_unknown_model_name_is_one_line_listing_the_known() -> None:
    with pytest.raises(ConfigError, match="'segnet' is not a known model .*parsenet_vgg16"):
        check_model_args(ModelConfig(name="segnet"))
    with pytest.raises(ConfigError, match="fusion mode must be one of"):
        build_model_from_config(ModelConfig(args={"width": 0.0625, "fusion": "sideways"}),
                                num_classes=3)
