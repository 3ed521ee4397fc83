"""Shared checks every model variant must pass; subclass and set ``build``."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn


def symmetrize_kernels(model: nn.Module) -> None:
    """Make every conv kernel left-right symmetric, so the network commutes with a
    horizontal flip exactly when its sampling grid is aligned with the input."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)


class ModelTestBase:
    num_classes = 4
    sizes = [(32, 32), (33, 47), (65, 97)]
    # A width for which the grid is symmetric: 8k+1 for offset-0 grids, 32k for FCN.
    symmetric_size = (49, 65)
    onnx = True
    # False for grids that are not mirror symmetric (TF-"SAME" pads after the image).
    flip_symmetric = True

    def build(self) -> nn.Module:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        torch.manual_seed(0)
        return cls().build()

    def test_forward_any_size(self, model):
        model.eval()
        with torch.no_grad():
            for h, w in self.sizes:
                y = model(torch.randn(2, 3, h, w))
                assert y.shape == (2, self.num_classes, h, w)
                assert torch.isfinite(y).all()

    def test_backward_reaches_every_parameter(self, model):
        model.train()
        model.zero_grad()
        y = model(torch.randn(2, 3, 41, 53))
        y.logsumexp(dim=1).mean().backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing

    def test_batch_of_one_in_train_mode(self, model):
        model.train()
        y = model(torch.randn(1, 3, 37, 45))
        assert y.shape == (1, self.num_classes, 37, 45)
        assert torch.isfinite(y).all()

    def test_output_aligned_with_input(self):
        if not self.flip_symmetric:
            pytest.skip("grid not mirror symmetric; alignment tested by the backbone's tests")
        torch.manual_seed(0)
        model = self.build().eval()
        symmetrize_kernels(model)
        x = torch.randn(1, 3, *self.symmetric_size)
        with torch.no_grad():
            y = model(x)
            y_flipped = model(x.flip(-1)).flip(-1)
        torch.testing.assert_close(y_flipped, y, rtol=1e-4, atol=1e-4)

    def test_bf16_autocast_finite(self, model):
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(torch.randn(1, 3, 40, 40) * 100)
        assert torch.isfinite(y.float()).all()

    def test_onnx_export_dynamic_size_matches_eager(self, model, tmp_path):
        if not self.onnx:
            pytest.skip("export covered by another variant")
        ort = pytest.importorskip("onnxruntime")
        from parsenet.engine.export import export_onnx

        model.eval()
        path = tmp_path / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, path, sample_size=(57, 71))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for h, w in [(57, 71), (33, 90), (81, 49)]:
            x = torch.randn(1, 3, h, w)
            (out,) = session.run(None, {name: x.numpy()})
            with torch.no_grad():
                ref = model(x)
            assert out.shape == tuple(ref.shape)
            assert float((torch.from_numpy(out) - ref).abs().max()) <= 1e-4
