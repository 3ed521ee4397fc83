"""Fixtures for the data tests: tiny datasets written into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from data_helpers import write_folder_dataset


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Callable[..., Path]:
    def make(split: str = "train", **kwargs) -> Path:
        root = tmp_path / "folder"
        write_folder_dataset(root, split, **kwargs)
        return root
    return make
