"""Decoding and validation of single image / label files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from parsenet.data.decode import (
    check_label_values,
    map_label_values,
    read_image,
    read_label_png,
    read_mat_array,
)
from parsenet.data.errors import DataError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


@pytest.mark.parametrize("suffix", ["png", "bmp", "tif"])
def test_lossless_rgb_images_decode_exactly(tmp_path, suffix):
    path = tmp_path / f"a.{suffix}"
    Image.fromarray(RGB).save(path)
    image = read_image(path)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 6, 8)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), RGB)


def test_jpeg_decodes_close_to_the_original(tmp_path):
    smooth = np.full((16, 16, 3), (200, 100, 50), dtype=np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert tuple(image.shape) == (3, 16, 16)
    assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - smooth).max() <= 3


@pytest.mark.parametrize("mode, suffix", [("L", "png"), ("L", "jpg"), ("RGBA", "png"),
                                          ("P", "png"), ("CMYK", "jpg"), ("LA", "png")])
def test_other_colour_modes_become_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"a.{suffix}"
    source = Image.fromarray(RGB).convert(mode)
    source.save(path, quality=100) if suffix == "jpg" else source.save(path)
    image = read_image(path)
    assert tuple(image.shape) == (3, 6, 8)
    expected = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - expected).max() <= 2


def test_rgba_drops_alpha(tmp_path):
    rgba = np.dstack([RGB, np.zeros((6, 8), np.uint8)])  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png").permute(1, 2, 0).numpy(), RGB)


def test_16_bit_grayscale_is_scaled_to_8_bit(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype.itemsize == 1
    np.testing.assert_array_equal(image[0].numpy(), [[0, 1, 128, 255]])
    np.testing.assert_array_equal(image[0].numpy(), image[2].numpy())


def test_16_bit_tiff_is_scaled_to_8_bit(tmp_path):
    values = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif")[1].numpy(), [[0, 255], [128, 1]])


@pytest.mark.parametrize("content", [b"", b"not an image at all" * 5, "truncated-jpeg",
                                     "truncated-png"])
def test_corrupt_images_name_the_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    if isinstance(content, str):
        buffer = io.BytesIO()
        Image.fromarray(RGB).save(buffer, "JPEG" if "jpeg" in content else "PNG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(DataError, match="broken.jpg.*cannot decode image"):
        read_image(path)


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(DataError, match="nothere.jpg: image file not found"):
        read_image(tmp_path / "nothere.jpg")


def test_grayscale_label_keeps_values(tmp_path):
    label = np.array([[0, 1, 2], [255, 7, 0]], dtype=np.uint8)
    Image.fromarray(label).save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "l.png"), label)


@pytest.mark.parametrize("bits", [8, 4])
def test_palette_label_gives_indices_not_colours(tmp_path, bits):
    indices = RNG.integers(0, 2 ** bits, (5, 7), dtype=np.uint8)
    indices[0, 0] = 2 ** bits - 1
    im = Image.fromarray(indices, "P")
    im.putpalette(list(RNG.integers(0, 256, 3 * 2 ** bits)))
    im.save(tmp_path / "l.png", bits=bits)
    assert (tmp_path / "l.png").read_bytes()[24] == bits
    np.testing.assert_array_equal(read_label_png(tmp_path / "l.png"), indices)


@pytest.mark.parametrize("mode, message", [("RGB", "RGB PNG"), ("RGBA", "RGBA PNG"),
                                           ("LA", "grayscale\\+alpha"), ("I;16", "16-bit")])
def test_non_index_labels_are_errors(tmp_path, mode, message):
    if mode == "I;16":
        Image.fromarray(np.ones((4, 4), np.uint16)).save(tmp_path / "label.png")
    else:
        Image.fromarray(RGB).convert(mode).save(tmp_path / "label.png")
    with pytest.raises(DataError, match=f"label.png: label is a {message}"):
        read_label_png(tmp_path / "label.png")


def test_label_that_is_not_a_png_is_an_error(tmp_path):
    Image.fromarray(RGB[..., 0]).save(tmp_path / "label.jpg")
    with pytest.raises(DataError, match="label.jpg: label is not a PNG"):
        read_label_png(tmp_path / "label.jpg")


def test_corrupt_label_png_names_the_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 3, (40, 40), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / "label.png").write_bytes(buffer.getvalue()[:60])
    with pytest.raises(DataError, match="label.png: cannot decode label PNG"):
        read_label_png(tmp_path / "label.png")


def test_check_label_values_accepts_classes_and_ignore():
    label = np.array([[0, 2, 255]], dtype=np.uint8)
    assert check_label_values(label, 3, "x.png") is label


def test_check_label_values_names_the_bad_values_and_file():
    label = np.array([[0, 3, 255, 7, 3]], dtype=np.uint8)
    with pytest.raises(DataError, match=r"x.png: label values 3, 7 are neither class indices "
                                        r"0..2 nor 255"):
        check_label_values(label, 3, "x.png")


def test_map_label_values_maps_and_reports_out_of_range():
    table = np.array([255, 0, 1], dtype=np.uint8)
    np.testing.assert_array_equal(map_label_values(np.array([[0, 1, 2]]), table, "y"),
                                  [[255, 0, 1]])
    with pytest.raises(DataError, match=r"y.mat: S values -1, 3 are outside the valid range 0..2"):
        map_label_values(np.array([[0, 3, -1]]), table, "y.mat", what="S")


def test_read_mat_array_struct_field_and_errors(tmp_path):
    path = tmp_path / "a.mat"
    segmentation = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": segmentation}, "F": np.full((2, 2), 0.5)})
    np.testing.assert_array_equal(read_mat_array(path, "GTcls", "Segmentation"), segmentation)
    with pytest.raises(DataError, match="a.mat: no variable 'S'"):
        read_mat_array(path, "S")
    with pytest.raises(DataError, match="a.mat: 'GTcls' has no field 'Boundaries'"):
        read_mat_array(path, "GTcls", "Boundaries")
    with pytest.raises(DataError, match="a.mat: F holds non-integer values"):
        read_mat_array(path, "F")
    (tmp_path / "bad.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.mat: cannot read MATLAB file"):
        read_mat_array(tmp_path / "bad.mat", "S")


def test_pillow_fallback_gives_the_same_pixels(tmp_path, monkeypatch):
    import parsenet.data.image_safety as image_safety

    Image.fromarray(RGB).save(tmp_path / "a.jpg", quality=90)
    fast = read_image(tmp_path / "a.jpg")
    monkeypatch.setattr(image_safety, "decode_jpeg", None)  # a torchvision without it
    torch.testing.assert_close(read_image(tmp_path / "a.jpg"), fast, rtol=0, atol=1)
