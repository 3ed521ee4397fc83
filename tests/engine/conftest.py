"""Fixtures shared by the trainer tests (in-process and multi-process)."""

import pytest
from trainer_fixtures import write_tiny_dataset


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
