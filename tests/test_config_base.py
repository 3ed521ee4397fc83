"""``base:`` inheritance of config files."""

from pathlib import Path

import pytest

from parsenet.config import ConfigError, load_config


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_row_is_a_delta_over_its_base(tmp_path):
    _write(tmp_path / "table.yaml", "name: table\nmodel:\n  args: {fusion: late, features: [fc7]}\n"
           "train: {lr: 0.5, iterations: 7}\n")
    (tmp_path / "rows").mkdir()
    row = _write(tmp_path / "rows" / "row.yaml",
                 "base: ../table.yaml\nname: row\nmodel:\n  args: {features: [fc7, conv5]}\n")
    config = load_config(row, ["train.iterations=9"])
    assert config.name == "row"
    # mappings merge key by key; a list replaces the base's list
    assert config.model.args == {"fusion": "late", "features": ["fc7", "conv5"]}
    assert (config.train.lr, config.train.iterations) == (0.5, 9)


def test_bases_chain_and_loops_are_refused(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\ntrain: {iterations: 1}\n")
    _write(tmp_path / "b.yaml", "base: c.yaml\ntrain: {batch_size: 3}\n")
    _write(tmp_path / "c.yaml", "train: {batch_size: 2, lr: 0.25}\n")
    config = load_config(tmp_path / "a.yaml")
    assert (config.train.iterations, config.train.batch_size, config.train.lr) == (1, 3, 0.25)
    _write(tmp_path / "c.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


def test_a_missing_base_names_the_file(tmp_path):
    row = _write(tmp_path / "row.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: no such config file"):
        load_config(row)
