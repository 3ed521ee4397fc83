"""Fixtures shared by the trainer tests (in-process and multi-process)."""

import pytest
import torch
from trainer_fixtures import write_tiny_dataset


@pytest.fixture
def one_thread():
    # Two cores shared by many processes: one thread is faster and gives the same sums in
    # every run of these tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
