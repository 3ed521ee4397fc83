"""Fixtures for the data tests: tiny datasets written into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from data_helpers import (
    write_camvid,
    write_context,
    write_folder_dataset,
    write_siftflow,
    write_voc,
)


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Callable[..., Path]:
    def make(split: str = "train", **kwargs) -> Path:
        root = tmp_path / "folder"
        write_folder_dataset(root, split, **kwargs)
        return root
    return make


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return write_voc(tmp_path)


@pytest.fixture
def context_root(tmp_path: Path) -> Path:
    return write_context(tmp_path)


@pytest.fixture
def siftflow_root(tmp_path: Path) -> Path:
    return write_siftflow(tmp_path)


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    return write_camvid(tmp_path)
