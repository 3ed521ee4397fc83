"""Turning an uploaded file into an RGB array, within limits, with one clear message if not.

Uploads are decoded in memory: nothing the user sends is written to a named file. The
pixel count is read from the header before anything is decoded, so a small file that
would expand into a huge image is refused without allocating it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["UploadLimits", "UploadRejected", "decode_upload"]

MB = 1_000_000


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * MB
    max_pixels: int = 40_000_000


class UploadRejected(Exception):
    """An upload the server will not segment; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def too_many_bytes(name: str, size: int, limits: UploadLimits) -> UploadRejected:
    return UploadRejected(413, f"{name}: {size / MB:.1f} MB is over the upload limit of "
                               f"{limits.max_bytes / MB:g} MB")


def decode_upload(data: bytes, name: str, limits: UploadLimits) -> np.ndarray:
    """H x W x 3 uint8 RGB from an uploaded file's bytes (EXIF orientation applied).

    Raises :class:`UploadRejected`: 400 empty, 413 over ``max_bytes`` or ``max_pixels``,
    415 not an image, 422 an image that cannot be decoded (truncated or corrupt)."""
    if not data:
        raise UploadRejected(400, f"{name}: the file is empty")
    if len(data) > limits.max_bytes:
        raise too_many_bytes(name, len(data), limits)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UploadRejected(415, f"{name}: not an image (or not a format Pillow reads: "
                                  f"JPEG, PNG, WebP, BMP, TIFF, GIF, ...)") from None
    except Image.DecompressionBombError:
        raise UploadRejected(413, f"{name}: the image is over the limit of "
                                  f"{limits.max_pixels / 1e6:g} megapixels") from None
    except Exception as e:  # a damaged header: Pillow raises many types (SyntaxError, ...)
        raise UploadRejected(422, f"{name}: cannot read the image header ({e})") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise UploadRejected(413, f"{name}: {width} x {height} is "
                                  f"{width * height / 1e6:.1f} megapixels, over the limit of "
                                  f"{limits.max_pixels / 1e6:g}")
    try:
        with image:
            image.load()
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except Exception as e:  # truncated or corrupt data: OSError, SyntaxError, ValueError, ...
        raise UploadRejected(422, f"{name}: cannot decode the image, is the file truncated "
                                  f"or corrupt? ({e})") from None
    return np.array(rgb)  # writable, as torch.from_numpy wants
