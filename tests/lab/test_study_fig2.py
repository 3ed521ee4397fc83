"""Fig. 2 pieces on a tiny untrained VGG: the vectors, the fc6/fc7 reader, the plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lab.study.fig2 import LAYERS, TAPS, _fc_tensors, plot_fig2, position_vectors
from parsenet.errors import WeightsError
from parsenet.models.builders import parsenet_vgg16
from parsenet.viz import feature_norms


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=3, base="largefov", features=TAPS, context=True,
                           fusion="early", normalize=True, width=0.125, fc_channels=256)
    return model.eval()


def test_position_vectors_are_the_maps_at_the_cell_and_normalised_to_the_scale(tiny_model):
    image = torch.randn(3, 64, 64)
    vectors = position_vectors(tiny_model, image, position=(3, 5))
    maps = tiny_model.feature_maps(image.unsqueeze(0), TAPS)
    assert list(vectors) == list(LAYERS)
    for name in LAYERS:
        np.testing.assert_allclose(vectors[name]["raw"], maps[name][0, :, 3, 5].detach(),
                                   rtol=1e-6)
        # The scale starts at 10 (the paper's init) for every branch; a ReLU vector that is
        # all zero at this cell (possible in a tiny random net) stays zero.
        raw_norm = np.linalg.norm(vectors[name]["raw"])
        expected = 10.0 if raw_norm > 0 else 0.0
        assert np.linalg.norm(vectors[name]["normed"]) == pytest.approx(expected, rel=1e-4)
        assert vectors[name]["raw_norms"].size == maps[name][0, 0].numel()
    assert np.linalg.norm(vectors["pool6"]["raw"]) > 0
    # pool6 is one vector replicated: the same norm at every cell.
    assert np.ptp(vectors["pool6"]["raw_norms"]) < 1e-3 * vectors["pool6"]["raw_norms"][0]


def test_plot_writes_a_png(tiny_model, tmp_path):
    image = torch.randn(3, 64, 64)
    out = plot_fig2(position_vectors(tiny_model, image),
                    feature_norms(tiny_model, [image], TAPS), tmp_path / "fig2.png", "test")
    assert out.stat().st_size > 10_000


def test_fc_tensors_found_by_name_and_refused_when_absent(tmp_path):
    good = {"head.fc6.weight": torch.zeros(8, 4, 3, 3), "head.fc6.bias": torch.zeros(8),
            "backbone.layers.fc7.0.weight": torch.ones(8, 8, 1, 1),
            "backbone.layers.fc7.0.bias": torch.ones(8), "classifier.weight": torch.ones(3, 8)}
    save_file(good, str(tmp_path / "good.safetensors"))
    found = _fc_tensors(str(tmp_path / "good.safetensors"))
    assert sorted(found) == ["fc6.bias", "fc6.weight", "fc7.bias", "fc7.weight"]
    assert found["fc7.weight"].sum() == 64
    save_file({"fc6.weight": torch.zeros(8, 4, 3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match="bad.safetensors: expected fc6/fc7"):
        _fc_tensors(str(tmp_path / "bad.safetensors"))
