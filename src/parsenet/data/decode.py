"""Reading images and label maps from disk, with the checks every dataset needs.

Images become uint8 3 x H x W RGB tensors; labels become uint8 H x W numpy arrays of class
indices. JPEGs and 8-bit PNGs go through torchvision's libjpeg-turbo / libpng decoders (the
fast path, ~1.1 ms of CPU for a 500x375 JPEG against Pillow's ~1.5 ms); anything else goes
through Pillow with explicit conversion rules. torchvision 0.29 deprecates its decoders in
favour of TorchCodec; while they exist they are used (their warning silenced), and Pillow
takes over when they are gone. Every failure is a ``DataError`` naming the file.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from parsenet.data.errors import DataError
from parsenet.labels import IGNORE_INDEX

try:
    from torchvision.io import ImageReadMode, decode_jpeg, decode_png
except ImportError:  # pragma: no cover - torchvision > 0.29 may drop them: Pillow decodes all
    ImageReadMode = decode_jpeg = decode_png = None  # type: ignore[assignment,misc]

__all__ = ["read_image", "read_label_png", "read_mat_array", "check_label_values",
           "map_label_values"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8"
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


def _sixteen_to_eight(array: np.ndarray) -> np.ndarray:
    # Round to nearest rather than truncate: 65535 -> 255, 32896 -> 128.
    return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _torchvision_decode(decoder: Callable[..., Tensor], data: bytes, mode: Any) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decoder(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)


def _pil_to_rgb(path: Path, data: bytes) -> Tensor:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(im)
                if array.min() < 0 or array.max() > 65535:
                    raise DataError(f"{path}: 32-bit image with values outside 0..65535")
                array = np.repeat(_sixteen_to_eight(array)[..., None], 3, axis=2)
            elif im.mode == "F":
                raise DataError(f"{path}: floating-point image; expected 8- or 16-bit")
            else:
                # Grayscale, palette, RGBA (alpha dropped), CMYK, YCbCr, LAB -> RGB.
                array = np.array(im.convert("RGB"))
    except DataError:
        raise
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        raise DataError(f"{path}: cannot decode image (not a format Pillow reads)") from None
    except Exception as e:  # Pillow raises many types for corrupt files
        raise DataError(f"{path}: cannot decode image ({e})") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def read_image(path: str | Path) -> Tensor:
    """Decode an image file into a uint8 3 x H x W RGB tensor.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images (scaled to 8 bit) are
    converted to RGB. The tensor may be channels-last in memory (as the JPEG decoder writes).
    """
    path = Path(path)
    data = _read_bytes(path, "image")
    if decode_jpeg is None:
        return _pil_to_rgb(path, data)
    try:
        if data[:2] == _JPEG_SIGNATURE:
            return _torchvision_decode(decode_jpeg, data, ImageReadMode.RGB)
        if data[:8] == _PNG_SIGNATURE and len(data) > 26:
            image = _torchvision_decode(decode_png, data, ImageReadMode.RGB)
            if image.dtype == torch.uint16:
                return torch.from_numpy(_sixteen_to_eight(image.numpy()))
            return image
    except RuntimeError as e:
        raise DataError(f"{path}: cannot decode image ({_short(e)})") from None
    return _pil_to_rgb(path, data)


def _short(error: Exception) -> str:
    # torchvision prefixes its messages with a C++ source location; keep the last part.
    return str(error).rsplit(", ", 1)[-1].strip()


def read_label_png(path: str | Path) -> np.ndarray:
    """Decode a label PNG into a uint8 H x W array of class indices.

    Accepted: 8-bit single-channel PNGs (the value is the class index) and palette PNGs (the
    palette index is the class index, as in VOC's SegmentationClass). RGB, 16-bit and
    grayscale+alpha labels are errors: their values are not class indices.
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
    try:
        if bit_depth == 8 and decode_png is not None:
            return _torchvision_decode(decode_png, data, ImageReadMode.UNCHANGED)[0].numpy()
        # Palette PNGs with 1/2/4-bit indices: libpng would expand them, Pillow keeps indices.
        with Image.open(io.BytesIO(data)) as im:
            return np.array(im, dtype=np.uint8)
    except Exception as e:
        raise DataError(f"{path}: cannot decode label PNG ({_short(e)})") from None


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
