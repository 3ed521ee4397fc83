"""Turning an uploaded file into an RGB array, within limits, with one clear message if not.

Uploads are decoded in memory: nothing the user sends is written to a named file. They go
through :mod:`parsenet.data.image_safety`, as every image parsenet reads: the pixel count
is read from the header before anything is decoded, so a small file that would expand into
a huge image is refused without allocating it, and no decoder that can crash is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parsenet.data.image_safety import (
    DEFAULT_MAX_PIXELS,
    ImageHeader,
    ImageTooLarge,
    NotAnImage,
    check_pixels,
    decode_rgb,
    read_header,
)
from parsenet.errors import DataError

__all__ = ["UploadLimits", "UploadRejected", "decode_upload", "upload_header"]

MB = 1_000_000


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * MB
    max_pixels: int = DEFAULT_MAX_PIXELS


class UploadRejected(Exception):
    """An upload the server will not segment; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def too_many_bytes(name: str, size: int, limits: UploadLimits) -> UploadRejected:
    return UploadRejected(413, f"{name}: {size / MB:.1f} MB is over the upload limit of "
                               f"{limits.max_bytes / MB:g} MB")


def _rejected(error: DataError) -> UploadRejected:
    if isinstance(error, ImageTooLarge):  # the operator's flag is no advice for the user
        return UploadRejected(413, error.limit_message)
    if isinstance(error, NotAnImage):
        name = str(error).split(": cannot decode", 1)[0]
        return UploadRejected(415, f"{name}: not an image (or not a format Pillow reads: "
                                   f"JPEG, PNG, WebP, BMP, TIFF, GIF, ...)")
    return UploadRejected(422, str(error))  # "<name>: cannot decode image (<why>)"


def upload_header(data: bytes, name: str, limits: UploadLimits) -> ImageHeader:
    """The upload's format and size, from its header only.

    Raises :class:`UploadRejected`: 400 empty, 413 over ``max_bytes`` or ``max_pixels``,
    415 not an image, 422 a damaged header."""
    if not data:
        raise UploadRejected(400, f"{name}: the file is empty")
    if len(data) > limits.max_bytes:
        raise too_many_bytes(name, len(data), limits)
    try:
        header = read_header(data, name)
        check_pixels(header, name, limits.max_pixels)
    except DataError as e:
        raise _rejected(e) from None
    return header


def decode_upload(data: bytes, name: str, limits: UploadLimits) -> np.ndarray:
    """H x W x 3 uint8 RGB from an uploaded file's bytes (EXIF orientation applied).

    Raises :class:`UploadRejected` as :func:`upload_header` does, and 422 for an image that
    cannot be decoded (truncated or corrupt)."""
    upload_header(data, name, limits)
    try:
        image = decode_rgb(data, name, max_pixels=limits.max_pixels)
    except DataError as e:
        raise _rejected(e) from None
    return image.permute(1, 2, 0).contiguous().numpy()  # writable, as torch.from_numpy wants
