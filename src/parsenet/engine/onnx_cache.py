"""The ONNX export cache of ``predict``: where it lives is the caller's choice, and a cached
file is used only if its hash matches the one recorded when it was written and checked.

    <cache dir>/<checkpoint stem>.<sha256[:16] of the checkpoint>.onnx
    <cache dir>/<checkpoint stem>.<sha256[:16] of the checkpoint>.onnx.sha256

The ``.sha256`` file holds the full SHA-256 of the ``.onnx`` file; it is written only after
the export has been checked against the eager model. A cache file that is truncated,
overwritten, lacks its digest or does not load in ONNX Runtime is exported again (with a
warning) instead of failing every later predict with an ``InvalidProtobuf`` traceback.

Without a cache directory, an ONNX export lives in a temporary directory for one run only:
ONNX Runtime reads the whole file when the session is made.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

from torch import nn

from parsenet.engine import export

__all__ = ["cached_onnx_predictor", "temporary_onnx_predictor", "record_digest",
           "digest_matches"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest_path(onnx: Path) -> Path:
    return onnx.with_name(onnx.name + ".sha256")


def record_digest(onnx: str | os.PathLike) -> Path:
    """Write ``<onnx>.sha256``: marks a checked export as a valid cache entry."""
    onnx = Path(onnx)
    path = _digest_path(onnx)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_sha256(onnx) + "\n")
    os.replace(tmp, path)
    return path


def digest_matches(onnx: str | os.PathLike) -> bool:
    """Whether ``onnx`` exists and hashes to its recorded digest."""
    onnx = Path(onnx)
    digest = _digest_path(onnx)
    if not (onnx.is_file() and digest.is_file()):
        return False
    return digest.read_text().strip() == _sha256(onnx)


def _export_checked(model: nn.Module, path: Path) -> None:
    export.export_onnx(model, path)
    try:  # at sizes other than the export's sample: shapes must really be dynamic
        export.check_export(path, model, sizes=export.CHECK_SIZES)
    except export.ExportCheckError:
        path.unlink(missing_ok=True)
        raise


def cached_onnx_predictor(model: nn.Module, cache: Path):
    """An :class:`~parsenet.engine.export.OnnxPredictor` of ``cache``, exporting ``model``
    there first unless a verified export is already there."""
    model = model.to("cpu").eval()
    if cache.exists() and not digest_matches(cache):
        warnings.warn(f"{cache}: cached ONNX export does not match its recorded hash "
                      f"(corrupt, changed or unfinished); exporting it again", stacklevel=3)
    elif cache.exists():
        try:
            return export.OnnxPredictor(cache)
        except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, ...: not ours to show
            warnings.warn(f"{cache}: cached ONNX export does not load ({type(e).__name__}); "
                          f"exporting it again", stacklevel=3)
    _digest_path(cache).unlink(missing_ok=True)
    _export_checked(model, cache)
    record_digest(cache)
    return export.OnnxPredictor(cache)


def temporary_onnx_predictor(model: nn.Module):
    """An ONNX Runtime predictor of ``model`` whose export is deleted once loaded."""
    model = model.to("cpu").eval()
    with tempfile.TemporaryDirectory(prefix="parsenet-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        _export_checked(model, path)
        return export.OnnxPredictor(path)
