"""Hostile image files: the size is read from the header, decoders that crash are not used,
corrupt data is a DataError naming the file, and EXIF orientation is applied."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from bad_input_data import bomb_jpeg, bomb_png, chunk, jpeg, png, short_png
from PIL import Image, ImageFile, ImageOps

from parsenet.data import image_safety
from parsenet.data.decode import read_image, read_label_png
from parsenet.data.errors import DataError
from parsenet.data.folder import SegmentationFolder
from parsenet.data.image_safety import CorruptImage, ImageTooLarge, NotAnImage


def _flip_idat_crc(data: bytes) -> bytes:
    end = data.index(b"IEND") - 8  # the IDAT's CRC is the 4 bytes before IEND's length
    return data[:end] + bytes([data[end] ^ 0xFF]) + data[end + 1:]


PNG_CRASHES = {  # each one killed torchvision 0.29.1's decode_png with SIGSEGV
    "too little data (70 bytes)": (short_png(), "not enough image data: 301 of 30100"),
    "too little data, grey": (png(100, 100, b"\0" * 50, color_type=0), "not enough image data"),
    "too little data, palette": (png(100, 100, b"\0" * 50, color_type=3,
                                     extra=chunk(b"PLTE", bytes(12))), "not enough image data"),
    "too little data, 16-bit": (png(100, 100, b"\0" * 301, depth=16), "not enough image data"),
    "too little data, interlaced": (png(100, 100, b"\0" * 301, interlace=1),
                                    "not enough image data: 301 of 30188"),
    "an empty IDAT": (png(10, 10, b""), "not enough image data: 0 of 310"),
    "a damaged IDAT (CRC)": (_flip_idat_crc(png(4, 4, b"\0" * 52)), "CRC mismatch"),
    "a bad filter byte": (png(4, 4, (b"\x09" + b"\0" * 12) * 4), "unrecognized data stream"),
}


@pytest.mark.parametrize("case", PNG_CRASHES)
def test_pngs_that_crashed_torchvision_are_one_data_error_naming_the_file(tmp_path, case):
    data, message = PNG_CRASHES[case]
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    with pytest.raises(CorruptImage, match=f"^{path}: cannot decode image .*{message}"):
        read_image(path)
    label = tmp_path / "label.png"
    label.write_bytes(data)
    if data[25] in (0, 3) and data[24] == 8:  # one a label may be: 8-bit grey or palette
        with pytest.raises(CorruptImage, match=f"^{label}: cannot decode label PNG"):
            read_label_png(label)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_files_stay_errors(tmp_path, cut):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    for suffix, data in (("png", png(40, 30, bytes(range(256)) * 37)),
                         ("jpg", jpeg(64, 48, progressive=True))):
        path = tmp_path / f"cut.{suffix}"
        path.write_bytes(data[:int(len(data) * cut)])
        with pytest.raises(CorruptImage, match=f"^{path}: cannot decode image"):
            read_image(path)


@pytest.mark.parametrize("make, size", [(bomb_png, "30000 x 30000 is 900.0"),
                                        (bomb_jpeg, "40000 x 40000 is 1600.0")])
def test_bombs_are_refused_from_the_header_before_decoding(tmp_path, monkeypatch, make, size):
    def never(*args, **kwargs):
        raise AssertionError("decoded")

    path = tmp_path / "bomb"
    path.write_bytes(make())
    monkeypatch.setattr(image_safety, "decode_jpeg", never)
    monkeypatch.setattr(Image.Image, "load", never)
    with pytest.raises(ImageTooLarge) as info:
        read_image(path)
    assert str(info.value) == (f"{path}: {size} megapixels, over the limit of 40 "
                               f"(--max-megapixels raises it)")


def test_the_limit_can_be_raised_and_pillows_guard_follows_it(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (60, 50), (1, 2, 3)).save(path)
    with pytest.raises(ImageTooLarge, match="60 x 50 is 0.0 megapixels, over the limit of "
                                            "0.002"):
        read_image(path, max_pixels=2000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 3000
    assert tuple(read_image(path, max_pixels=3000).shape) == (3, 50, 60)
    assert Image.MAX_IMAGE_PIXELS == 3000  # raised to our limit, never switched off


def test_other_formats_are_sized_by_pillow_first(tmp_path):
    path = tmp_path / "a.bmp"
    Image.new("RGB", (60, 50)).save(path)
    with pytest.raises(ImageTooLarge):
        read_image(path, max_pixels=2999)
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 4)
    with pytest.raises(CorruptImage, match="PNG without its IHDR"):
        read_image(tmp_path / "x.png")
    (tmp_path / "x.txt").write_bytes(b"hello")
    with pytest.raises(NotAnImage, match="not a format Pillow reads"):
        read_image(tmp_path / "x.txt")
    assert issubclass(CorruptImage, DataError) and issubclass(ImageTooLarge, DataError)


def _oriented(orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    rng = np.random.default_rng(orientation)
    smooth = np.kron(rng.integers(0, 256, (3, 4, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, fmt, exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_and_serve_apply_it(tmp_path, fmt, orientation):
    data = _oriented(orientation, fmt)
    path = tmp_path / "photo"
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as source:
        assert source.size == (32, 24)
        shown = np.asarray(ImageOps.exif_transpose(source).convert("RGB")).astype(int)
    image = read_image(path).permute(1, 2, 0).numpy().astype(int)
    assert image.shape == shown.shape == ((24, 32, 3) if orientation < 5 else (32, 24, 3))
    assert np.abs(image - shown).max() <= (0 if fmt == "PNG" else 3)  # two JPEG decoders


def test_a_label_drawn_on_the_unrotated_pixels_is_refused_with_the_reason(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "images" / "train" / "p.jpg").write_bytes(_oriented(6, "JPEG"))  # 32 x 24
    (tmp_path / "images" / "train" / "q.jpg").write_bytes(_oriented(3, "JPEG"))
    labels = tmp_path / "labels" / "train"
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(labels / "p.png")  # stored size
    Image.fromarray(np.eye(24, 32, dtype=np.uint8)).save(labels / "q.png")
    dataset = SegmentationFolder(tmp_path, "train")
    with pytest.raises(DataError, match=r"p.jpg: image is 24x32 \(WxH\) but its label .*p.png "
                                        r"is 32x24: the image's EXIF orientation 6 turns it"):
        dataset[0]
    # Orientation 3 (half a turn) keeps the size: the image turns and the label does not,
    # which no check can see; the label must be drawn on the image as displayed.
    image, mask = dataset[1]
    assert tuple(image.shape) == (3, 24, 32) and torch.equal(mask, torch.eye(24, 32).byte())


def _decode_mutants(count: int) -> None:
    """Decode ``count`` randomly damaged PNGs and JPEGs; exit 0 if each one decoded or was
    refused as a DataError (an escaped exception exits 1, a crash by its signal)."""
    import os

    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    files = []
    for fmt, kwargs in (("PNG", {}), ("JPEG", {"exif": exif.tobytes()}),
                        ("JPEG", {"progressive": True})):
        buffer = io.BytesIO()
        photo.save(buffer, fmt, **kwargs)
        files.append(buffer.getvalue())
    refused = 0
    for i in range(count):
        data = bytearray(files[i % len(files)])
        for _ in range(rng.integers(1, 6)):
            data[rng.integers(2, len(data))] = rng.integers(0, 256)
        if rng.random() < 0.3:
            data = data[:rng.integers(2, len(data))]
        try:
            image_safety.decode_rgb(bytes(data), f"mutant{i}", max_pixels=100_000)
        except DataError:
            refused += 1
        except Exception:
            os._exit(1)
    os._exit(0 if 0 < refused < count else 2)


def test_random_byte_mutations_never_crash_or_escape_as_another_error():
    import multiprocessing

    # In a child process: a decoder that crashes the interpreter fails this test, not the
    # test run. Forked, so that it starts without importing torch again.
    child = multiprocessing.get_context("fork").Process(target=_decode_mutants, args=(600,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0, f"exit code {child.exitcode} (negative: killed by signal)"
