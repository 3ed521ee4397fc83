"""The ONNX export cache of the onnx and openvino backends: keyed on the checkpoint's
content, and an entry is used only once it is shown to be that checkpoint's model.

    <cache dir>/<checkpoint stem>.<sha256[:16] of the checkpoint>.g<EXPORT_REVISION>.onnx
    <cache dir>/<checkpoint stem>.<sha256[:16] of the checkpoint>.g<EXPORT_REVISION>.onnx.sha256
    <cache dir>/openvino/<OpenVINO's hash>.blob      (:func:`compiled_cache_dir`)

:data:`EXPORT_REVISION` counts changes to the graph the same checkpoint exports to (the
same logits computed by other ops, e.g. one crop instead of two): an export from an older
revision is not reused, so the faster graph reaches caches made before it.

The export records the checkpoint's full SHA-256 in its metadata (``parsenet.checkpoint``),
and the ``.sha256`` file holds the SHA-256 of the ``.onnx`` file, written only after the
export was checked against the eager model. On reuse all three must agree, and the file must
still give the eager model's logits on a small image: an entry whose ``.onnx`` and
``.sha256`` were both replaced by another model's fails that, and a truncated, overwritten
or unloadable one fails earlier. Such an entry is exported again, with a warning.

OpenVINO's compiled models are cached too, in the ``openvino`` subfolder (OpenVINO's own
model cache, ``CACHE_DIR``), so that a second process imports them instead of compiling
again. That cache needs no check of ours: OpenVINO names each blob by a hash of the graph it
was compiled from (weights included) and of the compile options, and that graph is read from
an export that passed the checks above in this process; a blob from another OpenVINO
version, or one that does not load (truncated, corrupt), is removed by OpenVINO and the
graph compiled again.

The cache folder is the caller's (``--export-cache``), else ``$PARSENET_CACHE_DIR``, else
``$XDG_CACHE_HOME/parsenet`` (``~/.cache/parsenet``), as torch.hub keeps its downloads;
nothing is written beside the checkpoint. Without a checkpoint to key it, an export lives in
a temporary folder for one run only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from parsenet.engine import export

__all__ = ["with_verified_export", "record_digest", "digest_matches", "default_cache_dir",
           "cache_path", "compiled_cache_dir", "CHECKPOINT_KEY", "CACHE_DIR_ENV", "EXPORT_REVISION",
           "file_sha256"]

CHECKPOINT_KEY = "parsenet.checkpoint"  # ONNX metadata: SHA-256 of the exported checkpoint
CACHE_DIR_ENV = "PARSENET_CACHE_DIR"
EXPORT_REVISION = 2  # raise when the same checkpoint exports to another graph
_SPOT_SIZE = (45, 67)  # small and odd: a quick check that the file is this model
T = TypeVar("T")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "parsenet"


def cache_path(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike | None = None
               ) -> Path:
    """Where ``checkpoint``'s export is cached: named by its content's SHA-256."""
    checkpoint = Path(checkpoint)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{checkpoint.stem}.{file_sha256(checkpoint)[:16]}.g{EXPORT_REVISION}.onnx"


def compiled_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where OpenVINO caches the models it compiles from the exports in ``cache_dir``
    (default :func:`default_cache_dir`): a subfolder, as OpenVINO names its files itself."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / "openvino"


def _digest_path(onnx: Path) -> Path:
    return onnx.with_name(onnx.name + ".sha256")


def record_digest(onnx: str | os.PathLike) -> Path:
    """Write ``<onnx>.sha256``: marks a checked export as a valid cache entry."""
    onnx = Path(onnx)
    path = _digest_path(onnx)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(file_sha256(onnx) + "\n")
    os.replace(tmp, path)
    return path


def digest_matches(onnx: str | os.PathLike) -> bool:
    """Whether ``onnx`` exists and hashes to its recorded digest."""
    onnx = Path(onnx)
    digest = _digest_path(onnx)
    if not (onnx.is_file() and digest.is_file()):
        return False
    return digest.read_text().strip() == file_sha256(onnx)


def _export_checked(model: nn.Module, path: Path, checkpoint_sha: str | None,
                    exporter: str = "auto") -> None:
    export.export_onnx(model, path, exporter=exporter)
    try:  # at sizes other than the export's sample: shapes must really be dynamic
        export.check_export(path, model, sizes=export.CHECK_SIZES)
    except export.ExportCheckError:
        path.unlink(missing_ok=True)
        raise
    if checkpoint_sha is not None:
        export.record_onnx_metadata(path, {CHECKPOINT_KEY: checkpoint_sha})


def _why_unusable(model: nn.Module, cache: Path, checkpoint_sha: str) -> str | None:
    """None when ``cache`` is a verified export of ``model``; else why not."""
    if not digest_matches(cache):
        return "does not match its recorded hash (corrupt, changed or unfinished)"
    try:
        # One ONNX Runtime session gives the recorded checkpoint and runs the spot check:
        # reading the metadata with the onnx package would import it (and ml_dtypes) into
        # every predict for that alone, and parse the file a second time.
        run = export.OnnxPredictor(cache)
        if run.metadata().get(CHECKPOINT_KEY, "") != checkpoint_sha:
            return "was exported from another checkpoint"
        export.check_export(cache, model, sizes=(_SPOT_SIZE,), atol=1e-3, predictor=run)
    except export.ExportCheckError as e:
        return f"is not this checkpoint's model ({e})"
    except Exception as e:  # onnxruntime's InvalidProtobuf, ...
        return f"does not load ({type(e).__name__})"
    return None


def with_verified_export(model: nn.Module, checkpoint: str | os.PathLike | None,
                         cache_dir: str | os.PathLike | None,
                         build: Callable[[Path], T], *, exporter: str = "auto") -> T:
    """``build(path)`` on an ONNX export of ``model`` checked against it: the cached one of
    ``checkpoint`` when it verifies, else a fresh export (cached for ``checkpoint``, or
    temporary without one). An ``exporter`` other than ``auto`` always exports afresh, into
    a temporary file: the cache holds ``auto``'s export."""
    model = model.to("cpu").eval()
    if checkpoint is None or exporter != "auto":
        with tempfile.TemporaryDirectory(prefix="parsenet-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            _export_checked(model, path, None, exporter)
            return build(path)
    checkpoint_sha = file_sha256(checkpoint)
    cache = cache_path(checkpoint, cache_dir)
    if cache.exists():
        with torch.inference_mode(False):
            why = _why_unusable(model, cache, checkpoint_sha)
        if why is None:
            return build(cache)
        warnings.warn(f"{cache}: cached ONNX export {why}; exporting it again", stacklevel=3)
    _digest_path(cache).unlink(missing_ok=True)
    _export_checked(model, cache, checkpoint_sha)
    record_digest(cache)
    return build(cache)
