"""Reading images and label maps from disk, with the checks every dataset needs.

Images become uint8 3 x H x W RGB tensors (EXIF orientation applied); labels become uint8
H x W numpy arrays of class indices. Both go through :mod:`parsenet.data.image_safety`: the
size is read from the header and checked against a pixel limit before anything is decoded,
no decoder that can crash the process is used, and every failure is a ``DataError`` naming
the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from parsenet.data.errors import DataError
from parsenet.data.image_safety import (
    DEFAULT_MAX_PIXELS,
    decode_rgb,
    exif_orientation,
    open_pillow,
)
from parsenet.labels import IGNORE_INDEX

__all__ = ["read_image", "read_label_png", "read_mat_array", "check_label_values",
           "map_label_values", "image_orientation"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG IHDR colour types
_GRAY, _RGB, _PALETTE, _GRAY_ALPHA, _RGBA = 0, 2, 3, 4, 6
_COLOR_TYPE_NAMES = {_GRAY: "grayscale", _RGB: "RGB", _PALETTE: "palette",
                     _GRAY_ALPHA: "grayscale+alpha", _RGBA: "RGBA"}


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} file ({e.strerror or e})") from None


def _png_header(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR chunk, which always comes first."""
    return data[24], data[25]


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Decode an image file into a uint8 3 x H x W RGB tensor, as a viewer shows it (EXIF
    orientation applied).

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images (scaled to 8 bit) are
    converted to RGB. Over ``max_pixels`` (from the header, before decoding) is a
    :class:`~parsenet.data.image_safety.ImageTooLarge`. The tensor may be channels-last in
    memory (as the JPEG decoder writes).
    """
    path = Path(path)
    return decode_rgb(_read_bytes(path, "image"), str(path), max_pixels=max_pixels)


def image_orientation(path: str | Path) -> int:
    """The EXIF orientation of an image file (1 when it has none or cannot be read)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return exif_orientation(image)
    except Exception:  # only for messages: a file that cannot be read was reported already
        return 1


def read_label_png(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a label PNG into a uint8 H x W array of class indices.

    Accepted: 8-bit single-channel PNGs (the value is the class index) and palette PNGs (the
    palette index is the class index, as in VOC's SegmentationClass). RGB, 16-bit and
    grayscale+alpha labels are errors: their values are not class indices. Labels are never
    rotated: a PNG label carries no EXIF orientation of its own.
    """
    path = Path(path)
    data = _read_bytes(path, "label")
    if data[:8] != _PNG_SIGNATURE or len(data) < 26:
        raise DataError(f"{path}: label is not a PNG file")
    bit_depth, color_type = _png_header(data)
    if color_type not in (_GRAY, _PALETTE):
        kind = _COLOR_TYPE_NAMES.get(color_type, f"colour type {color_type}")
        raise DataError(f"{path}: label is a {kind} PNG; labels must be single-channel class "
                        "indices (8-bit grayscale) or a palette PNG")
    if color_type == _GRAY and bit_depth != 8:
        raise DataError(f"{path}: label is a {bit_depth}-bit grayscale PNG; labels must be "
                        "8-bit (values 0..K-1, 255 = ignore)")
    # Pillow keeps palette indices (also of 1/2/4-bit palettes) where libpng would expand.
    with open_pillow(data, str(path), max_pixels, what="label PNG") as image:
        return np.array(image, dtype=np.uint8)


def read_mat_array(path: str | Path, variable: str, field: str | None = None) -> np.ndarray:
    """An integer 2-D array from a MATLAB .mat file: ``variable`` or ``variable.field``."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        contents = scipy.io.loadmat(path, variable_names=[variable], squeeze_me=True,
                                    struct_as_record=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read MATLAB file ({e})") from None
    if variable not in contents:
        raise DataError(f"{path}: no variable {variable!r} in the .mat file")
    value = contents[variable]
    name = variable
    if field is not None:
        name = f"{variable}.{field}"
        if not hasattr(value, field):
            raise DataError(f"{path}: {variable!r} has no field {field!r}")
        value = getattr(value, field)
    array = np.asarray(value)
    if array.ndim != 2:
        raise DataError(f"{path}: {name} must be a 2-D label map, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise DataError(f"{path}: {name} holds non-integer values")
    elif array.dtype.kind not in "iub":
        raise DataError(f"{path}: {name} has dtype {array.dtype}; expected integers")
    return array


def _value_list(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def check_label_values(label: np.ndarray, num_classes: int, path: str | Path,
                       ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Raise unless every value is a class index (0..num_classes-1) or ``ignore_index``.

    Costs one max over the array in the common case (no value >= num_classes), two
    comparisons otherwise; the offending values are only collected when there are some.
    """
    if int(label.max(initial=0)) < num_classes:
        return label
    bad = (label >= num_classes) & (label != ignore_index)
    if bad.any():
        values = np.unique(label[bad])
        raise DataError(f"{path}: label values {_value_list(values)} are neither class "
                        f"indices 0..{num_classes - 1} nor {ignore_index} (ignore)")
    return label


def map_label_values(raw: np.ndarray, table: np.ndarray, path: str | Path,
                     what: str = "label") -> np.ndarray:
    """Map raw label values through ``table`` (raw value -> uint8 class index or 255).

    Raw values must lie in 0..len(table)-1; others are reported by value.
    """
    low = int(raw.min(initial=0))
    high = int(raw.max(initial=0))
    if low < 0 or high >= len(table):
        values = np.unique(raw[(raw < 0) | (raw >= len(table))])
        raise DataError(f"{path}: {what} values {_value_list(values)} are outside the valid "
                        f"range 0..{len(table) - 1}")
    if raw.dtype == np.uint8 or raw.dtype.kind != "f":
        return table[raw]
    return table[raw.astype(np.int64)]
