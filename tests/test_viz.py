import json

import numpy as np
import pytest
import torch
from PIL import Image

from parsenet.errors import UsageError
from parsenet.models import parsenet_vgg16
from parsenet.viz import (
    IGNORE_COLOR,
    colorize,
    feature_norms,
    label_image,
    overlay,
    plot_curves,
    plot_feature_norms,
    save_label_png,
    side_by_side,
    voc_palette,
)

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)


def test_voc_palette_known_colours():
    p = voc_palette(256)
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert p[0].tolist() == [0, 0, 0] and p[1].tolist() == [128, 0, 0]
    assert p[15].tolist() == [192, 128, 128]  # person
    assert len({tuple(c) for c in p[:21]}) == 21


def test_colorize_and_overlay():
    mask = torch.tensor([[0, 1], [2, 255]])
    rgb = colorize(mask, PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 1].tolist() == [255, 0, 0] and rgb[1, 0].tolist() == [0, 0, 255]
    assert rgb[1, 1].tolist() == list(IGNORE_COLOR)
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    out = overlay(image, mask, PALETTE, alpha=0.5)
    assert out[0, 1].tolist() == [178, 50, 50]  # (100 + 255) / 2 rounded, 100 / 2
    assert out[1, 1].tolist() == [100, 100, 100]  # ignored: image only
    with pytest.raises(ValueError, match="mask shape"):
        overlay(image, np.zeros((3, 3), dtype=np.int64), PALETTE)


def test_save_label_png_keeps_class_ids(tmp_path):
    mask = np.array([[0, 1, 2], [2, 1, 255]], dtype=np.uint8)
    path = tmp_path / "sub" / "label.png"
    save_label_png(mask, PALETTE, path)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert np.array_equal(np.asarray(im), mask)
        assert im.getpalette()[3:6] == [255, 0, 0]


def test_label_png_of_more_than_256_classes_is_16_bit(tmp_path):
    """A PNG palette holds 256 colours: a 300-class model's ids go into a 16-bit greyscale
    PNG, even for an image whose ids all fit a byte (the format follows the model)."""
    palette = voc_palette(300)
    mask = np.array([[0, 255, 256], [299, 43, 1]])
    path = tmp_path / "label.png"
    save_label_png(mask, palette, path)
    with Image.open(path) as im:
        print("300 classes:", im.mode, np.asarray(im).tolist())
        assert im.mode == "I;16" and np.array_equal(np.asarray(im), mask)
    assert label_image(np.array([[0, 7]]), palette).mode == "I;16"
    with pytest.raises(UsageError, match="class id 65536 does not fit a 16-bit label PNG"):
        label_image(np.array([[65536]]), palette)


def test_side_by_side_sizes():
    a = np.zeros((20, 30, 3), dtype=np.uint8)
    b = np.full((10, 40, 3), 255, dtype=np.uint8)
    canvas = side_by_side([("image", a), ("prediction", b)], gap=4)
    assert canvas.size[0] == 30 + 4 + 40
    assert canvas.size[1] > 20  # room for the titles
    pixels = np.asarray(canvas)
    assert (pixels[-5:, 5] == 0).all()  # panel a reaches the bottom
    with pytest.raises(ValueError):
        side_by_side([])


def _write_log(path, scale):
    lines = [{"kind": "event", "iteration": 0, "event": "start"}]
    for it in range(0, 50, 10):
        lines.append({"kind": "train", "iteration": it, "loss": scale / (it + 1), "lr": 0.01})
    lines.append({"kind": "val", "iteration": 50, "mean_iou": 0.3 * scale})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "tr')


def test_plot_curves_several_runs(tmp_path):
    pytest.importorskip("matplotlib")
    _write_log(tmp_path / "runA" / "log.jsonl", 1.0)
    _write_log(tmp_path / "runB" / "log.jsonl", 2.0)
    out = plot_curves([tmp_path / "runA", tmp_path / "runB" / "log.jsonl"],
                      tmp_path / "curves.png")
    with Image.open(out) as im:
        assert im.size[0] > 500
    records = [{"kind": "train", "iteration": i, "loss": 1.0, "lr": 0.1} for i in range(3)]
    assert plot_curves({"mine": records}, tmp_path / "one.png").is_file()
    with pytest.raises(FileNotFoundError):
        plot_curves(tmp_path / "missing.jsonl", tmp_path / "x.png")


def test_feature_norms_before_and_after():
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=3, width=0.0625, features=("conv4", "fc7"),
                           scale_init=7.0)
    images = [torch.randn(3, 48, 64), torch.randn(1, 3, 40, 40)]
    norms = feature_norms(model, images)
    assert list(norms) == ["conv4", "conv5", "fc7", "pool6"]
    # A normalised vector with every gamma_c = s has norm s * 1 (eps is negligible here).
    for name in ("conv4", "fc7", "pool6"):
        before, after = norms[name]
        assert before > 0 and after == pytest.approx(7.0, rel=1e-3)
    assert norms["conv5"][1] is None  # conv5 is not a branch of this model
    # The mean norm of pool6 cannot exceed that of the map it averages (triangle inequality).
    assert norms["pool6"][0] <= norms["fc7"][0] + 1e-6

    baseline = parsenet_vgg16(num_classes=3, width=0.0625, context=False, normalize=False)
    assert all(after is None for _, after in feature_norms(baseline, images).values())


def test_plot_feature_norms(tmp_path):
    pytest.importorskip("matplotlib")
    norms = {"conv4": (350.0, 10.0), "conv5": (40.0, None), "fc7": (3.0, 10.0),
             "pool6": (0.5, 10.0)}
    out = plot_feature_norms(norms, tmp_path / "fig2.png")
    with Image.open(out) as im:
        assert im.size[0] > 200 and im.size[1] > 200
