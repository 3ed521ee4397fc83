"""Fixtures shared by the whole suite."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # Once OpenVINO is loaded its thread pool stays in the process, and a later test that
    # forks worker processes (tests/engine/test_trainer_processes.py) then dies with a
    # segfault: the tests that load it run last.
    items.sort(key=lambda item: item.get_closest_marker("openvino") is not None)


@pytest.fixture
def one_thread():
    # Two cores shared by many processes: one thread is faster and gives the same sums in
    # every run of these tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _eager_default_and_private_export_cache(tmp_path_factory):
    # `auto` would export every test's model to ONNX (seconds each) and cache it under the
    # user's home; tests of `auto` itself delete PARSENET_BACKEND. Session-wide, so that
    # module-scoped fixtures see it too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARSENET_BACKEND", "eager")
        patch.setenv("PARSENET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "exports"))
        yield


@pytest.fixture
def onnx_exporters(monkeypatch) -> list[str]:
    """The ``exporter`` of every :func:`parsenet.engine.export.export_onnx` call the test
    makes (``auto`` when not given), in order; the exports still run."""
    from parsenet.engine import export

    seen: list[str] = []
    real = export.export_onnx

    def recording(model, path, **kwargs):
        seen.append(kwargs.get("exporter", "auto"))
        return real(model, path, **kwargs)

    monkeypatch.setattr(export, "export_onnx", recording)
    return seen
