"""Opening image files that may be hostile: every reader (datasets, predict, serve) goes
through here.

Three guards, in this order:

1. **Size from the header, before anything is decoded.** PNG's IHDR and JPEG's frame header
   (SOF) are parsed here; other formats through ``PIL.Image.open``, which reads only the
   header. An image over ``max_pixels`` is :class:`ImageTooLarge` without allocating it
   (a 632-byte JPEG can claim 40000 x 40000, an 875 KB palette PNG 30000 x 30000).
2. **No decoder that can crash the process.** torchvision's ``decode_png`` dies with SIGSEGV
   on every libpng error raised while rows are read: too little IDAT data ("Not enough
   image data"), an IDAT CRC error, a bad filter byte, a corrupt zlib stream, in RGB, grey,
   palette, 16-bit and interlaced files alike (torchvision 0.29.1; its errors from the
   header, a truncated file, a zero width, come back as exceptions). Validating first would
   mean inflating the whole IDAT stream and still trusting libpng's error path, so **PNGs
   and every format but JPEG are decoded by Pillow**, with its guards on:
   ``Image.MAX_IMAGE_PIXELS`` is never below our limit (only raised to it, never switched
   off) and ``LOAD_TRUNCATED_IMAGES`` stays False, so a truncated file is an error. Pillow
   does not check what libpng does check, that the IDAT stream holds every row (a zlib
   stream that ends early gives black rows) and the IDAT CRCs, so a PNG's IDAT is inflated
   once here first (discarding the output): about a third of Pillow's decode time.
   **JPEGs keep torchvision's libjpeg-turbo decoder** (``apply_exif_orientation=True``):
   truncated, empty, zero-sized, corrupt-scan and CMYK files all raise or decode, and 6,000
   random byte mutations of baseline and progressive JPEGs plus 9,000 of their EXIF segment
   never crashed it.
   Cost, measured on this machine (AMD EPYC, one thread, median of 300 reads of
   benchmarks/loader_speed.py's 500x375 JPEG + label PNG; the machine is shared, +-10 %):
   ``read_image`` 0.96 -> 0.99 ms (the header parse and EXIF), ``read_label_png`` 0.30 ->
   0.71 ms (Pillow instead of libpng, and the IDAT check). The whole training pipeline of
   one worker (``python -m benchmarks.loader_speed``: decode, checks, train_transforms)
   went from 268-276 to 221-227 items per CPU-second, about 0.8 ms more per item: the
   loader stays far ahead of the train step.
3. **Corrupt data is our error.** Whatever a decoder raises becomes :class:`CorruptImage`
   (a :class:`~parsenet.errors.DataError`) naming the file; an unknown format is
   :class:`NotAnImage`.

EXIF orientation is applied to every image (torchvision for JPEGs, ``ImageOps.exif_transpose``
otherwise), as a photo viewer shows it and as ``serve`` always did, so predict, eval, the
datasets and serve see one picture. Label PNGs are never rotated: they carry no orientation.
A label drawn on a photo's stored pixels therefore no longer fits it when the tag turns the
photo a quarter (the datasets' size check says so, naming the tag); a half turn or a mirror
keeps the size, and only the labels as displayed are right.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from parsenet.errors import DataError

try:
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - torchvision > 0.29 may drop it: Pillow decodes all
    ImageReadMode = decode_jpeg = None  # type: ignore[assignment,misc]

__all__ = ["DEFAULT_MAX_PIXELS", "ImageHeader", "ImageTooLarge", "NotAnImage", "CorruptImage",
           "read_header", "check_pixels", "decode_rgb", "open_pillow", "exif_orientation"]

# serve's limit from the start: a 40 MP photo is bigger than any phone's, and its float
# activations already take GBs.
DEFAULT_MAX_PIXELS = 40_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8"
# Start-of-frame markers C0..CF, except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset((0x01, *range(0xD0, 0xD9)))  # TEM, RSTn, SOI: no length


class ImageTooLarge(DataError):
    """An image whose header claims more pixels than the limit. ``limit_message`` is the
    message without the advice on raising the limit (serve's users cannot)."""

    # One positional message, as every DataError: a DataLoader worker's error is rebuilt in
    # the main process as ``type(error)(message)``.
    def __init__(self, message: str, limit_message: str | None = None) -> None:
        super().__init__(message)
        self.limit_message = limit_message or message


class NotAnImage(DataError):
    """A file in no format Pillow or torchvision reads."""


class CorruptImage(DataError):
    """An image whose header or data cannot be decoded (truncated or damaged)."""


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "png", "jpeg" or Pillow's name of the format
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@contextmanager
def _pillow_errors(name: str, what: str = "image") -> Iterator[None]:
    """Pillow's many exception types for bad files (OSError, SyntaxError, ValueError,
    struct.error, ...) as one DataError naming the file."""
    try:
        yield
    except DataError:
        raise
    except UnidentifiedImageError:  # its message names a BytesIO, not the file
        raise NotAnImage(f"{name}: cannot decode {what} (not a format Pillow reads)") from None
    except Exception as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise CorruptImage(f"{name}: cannot decode {what} ({detail})") from None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame segment, or None if there is none
    before the scan (libjpeg also takes the first: a second one is its error)."""
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE_MARKERS:
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker in (0xDA, 0xD9):  # scan or end before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def read_header(data: bytes, name: str, what: str = "image") -> ImageHeader:
    """Format and size without decoding any pixels; ``what`` names the file in errors."""
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise CorruptImage(f"{name}: cannot decode {what} (PNG without its IHDR header: "
                               f"truncated or corrupt)")
        width, height = struct.unpack(">II", data[16:24])
        return ImageHeader("png", width, height)
    if data[:2] == _JPEG_SIGNATURE:
        size = _jpeg_size(data)
        if size is None:
            raise CorruptImage(f"{name}: cannot decode {what} (no frame header in the JPEG: "
                               f"truncated or corrupt)")
        return ImageHeader("jpeg", *size)
    with _pillow_errors(name, what), Image.open(io.BytesIO(data)) as image:
        return ImageHeader(str(image.format).lower(), *image.size)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by IHDR colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # (x0, y0, dx, dy) of the seven interlace passes


def _png_raw_size(data: bytes) -> int:
    """Bytes the IDAT stream must inflate to: a filter byte and the packed pixels per row."""
    width, height = struct.unpack(">II", data[16:24])
    depth, color_type, interlace = data[24], data[25], data[28]
    bits = _PNG_CHANNELS.get(color_type, 4) * depth

    def rows(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if not interlace:
        return rows(width, height)
    return sum(rows(max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy)))
               for x0, y0, dx, dy in _ADAM7)


def _check_png_data(data: bytes, name: str, what: str) -> None:
    """Every IDAT chunk's CRC, and an IDAT stream that holds all the rows.

    Pillow does neither: a zlib stream that ends early decodes as an image whose missing rows
    are black (the 70-byte PNG of 100 x 100 RGB zeros), and a damaged IDAT decodes as noise.
    libpng refuses both. Inflating costs about a third of Pillow's decode and is bounded by
    the pixel limit already checked (output is discarded in 1 MB pieces)."""
    need, got, i = _png_raw_size(data), 0, 8
    inflate = zlib.decompressobj()
    try:
        while i + 12 <= len(data) and got < need:
            length, kind = struct.unpack(">I4s", data[i:i + 8])
            body = data[i + 8:i + 8 + length]
            if kind == b"IDAT":
                if len(body) < length or data[i + 8 + length:i + 12 + length] != struct.pack(
                        ">I", zlib.crc32(kind + body)):
                    raise CorruptImage(f"{name}: cannot decode {what} (an IDAT chunk is "
                                       f"damaged or cut short: CRC mismatch)")
                while body and got < need:
                    got += len(inflate.decompress(body, 1 << 20))
                    body = inflate.unconsumed_tail
            elif kind == b"IEND":
                break
            i += 12 + length
    except zlib.error as e:
        raise CorruptImage(f"{name}: cannot decode {what} (corrupt image data: {e})") from None
    if got < need:
        raise CorruptImage(f"{name}: cannot decode {what} (not enough image data: {got} of "
                           f"{need} bytes; the file is truncated or corrupt)")


def check_pixels(header: ImageHeader, name: str, max_pixels: int) -> None:
    if header.pixels > max_pixels:
        limit = (f"{name}: {header.width} x {header.height} is {header.pixels / 1e6:.1f} "
                 f"megapixels, over the limit of {max_pixels / 1e6:g}")
        raise ImageTooLarge(f"{limit} (--max-megapixels raises it)", limit)


def _keep_pillow_guard(max_pixels: int) -> None:
    # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that. Our limit is checked
    # first; Pillow's guard stays on behind it, raised (never lowered, never disabled) so a
    # user who raised our limit is not refused by Pillow's smaller default.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def open_pillow(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                what: str = "image") -> Image.Image:
    """A fully decoded Pillow image, after the pixel limit; errors name ``name``."""
    header = read_header(data, name, what)
    check_pixels(header, name, max_pixels)
    if header.format == "png" and len(data) >= 29:
        _check_png_data(data, name, what)
    _keep_pillow_guard(max_pixels)
    with _pillow_errors(name, what), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        check_pixels(ImageHeader(str(image.format), *image.size), name, max_pixels)
        image.load()
        return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored, 2-8 = flipped and/or rotated)."""
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block is ignored, as viewers do
        return 1


def _pillow_rgb(image: Image.Image, name: str) -> np.ndarray:
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image)
        if array.min() < 0 or array.max() > 65535:
            raise CorruptImage(f"{name}: 32-bit image with values outside 0..65535")
        # Round to nearest rather than truncate: 65535 -> 255, 32896 -> 128.
        eight = ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(eight[..., None], 3, axis=2)
    if image.mode == "F":
        raise CorruptImage(f"{name}: floating-point image; expected 8- or 16-bit")
    # Grayscale, palette, RGBA (alpha dropped), CMYK, YCbCr, LAB -> RGB.
    return np.array(image if image.mode == "RGB" else image.convert("RGB"))


def decode_rgb(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """uint8 3 x H x W RGB, EXIF orientation applied (H x W as displayed).

    Raises :class:`ImageTooLarge` (from the header, before decoding), :class:`NotAnImage`
    or :class:`CorruptImage`, each naming ``name``. The tensor may be channels-last in
    memory (as libjpeg-turbo writes)."""
    header = read_header(data, name)
    check_pixels(header, name, max_pixels)
    if header.format == "jpeg" and decode_jpeg is not None:
        try:
            with warnings.catch_warnings():  # its deprecation in favour of TorchCodec
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                   mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except RuntimeError as e:
            # torchvision prefixes its messages with a C++ source location.
            detail = str(e).rsplit(", ", 1)[-1].strip()
            raise CorruptImage(f"{name}: cannot decode image ({detail})") from None
    with open_pillow(data, name, max_pixels) as image, _pillow_errors(name):
        return torch.from_numpy(_pillow_rgb(image, name)).permute(2, 0, 1)
