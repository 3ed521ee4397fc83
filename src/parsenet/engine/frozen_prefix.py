"""A frozen backbone prefix (``train.frozen_prefix``), and its output cached on disk.

Frozen. The backbone stages up to ``upto`` (by the names of ``model.freeze``; ``"all"``: every
stage, the whole trunk) get ``requires_grad=False`` and their BatchNorm layers keep their
running statistics (eval mode): mmsegmentation's ``frozen_stages``. Autograd records nothing
before the first trainable stage, so the backward stops there by itself.

Cached. A frozen prefix computes the same map for an image each time it sees it, so with
``cache`` its outputs are computed once per training image, per scale of
``frozen_prefix.scales`` and per flip (with ``data.flip``), on the whole scaled (and flipped)
image, and stored in ``<cache>/<key>/`` (one safetensors file per image, fp32; the key hashes
the prefix's weights, the images, the scales, the flip and the preprocessing). A training
sample is then a crop of those maps: its offset and size are multiples of the coarsest
stride involved (the backbone's output stride), so the crop of each map covers exactly the
label crop. The rest of the network runs on the crop (:class:`PrefixRest`).

What a cached crop is. The prefix saw the whole image, so a crop's border cells carry real
context where a pixel crop fed through the prefix would see padding: for the same crop of
the prefix's output, cached and live give the same loss and gradients (tested, fp32), and the
same logits as the model's own forward when the crop is the whole image. A crop hanging over
the image's edge (an image smaller than the crop) is padded with zero features and ignore
labels, and the validity mask keeps the padding out of pool6.

What is cached: the output of the last prefix stage, and of every prefix stage a tap is read
from (``backbone.tap_stages()``); the other prefix stages are not run at all in training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

from parsenet.data.transforms import Warp
from parsenet.errors import ConfigError
from parsenet.labels import IGNORE_INDEX
from parsenet.preprocessing import Preprocessing

__all__ = ["ALL_STAGES", "prefix_stages", "freeze_prefix", "prefix_to_eval", "cached_stages",
           "run_prefix", "PrefixRest", "PrefixCache", "build_prefix_cache", "CachedCrops",
           "cached_training_set"]

ALL_STAGES = "all"


def prefix_stages(model: nn.Module, upto: str) -> list[str]:
    """The backbone's stage names from the first to ``upto`` (``"all"``: every stage)."""
    names = list(model.backbone.named_stages())
    if upto == ALL_STAGES:
        return names
    if upto not in names:
        raise ConfigError(f"train.frozen_prefix.upto: {upto!r} is not a stage of the "
                          f"{type(model.backbone).__name__} (stages: {', '.join(names)}, "
                          f"or {ALL_STAGES})")
    return names[:names.index(upto) + 1]


def freeze_prefix(model: nn.Module, upto: str) -> list[str]:
    """Freeze the stages up to ``upto`` (no gradient); returns their names."""
    stages = prefix_stages(model, upto)
    named = model.backbone.named_stages()
    for name in stages:
        named[name].requires_grad_(False)
    return stages


def prefix_to_eval(model: nn.Module, stages: Sequence[str]) -> None:
    """The prefix's BatchNorm layers on their running statistics (call after ``train()``)."""
    named = model.backbone.named_stages()
    for name in stages:
        named[name].eval()


def cached_stages(model: nn.Module, stages: Sequence[str]) -> list[str]:
    """The prefix stages whose outputs the rest reads: the last, and those taps come from."""
    tap_stages = getattr(model.backbone, "tap_stages", None)
    if tap_stages is None:
        raise ConfigError(f"train.frozen_prefix.cache: the {type(model.backbone).__name__} "
                          f"does not say where its taps are read (no tap_stages())")
    read = set(tap_stages().values()) | {stages[-1]}
    return [s for s in stages if s in read]


class _PrefixDone(Exception):
    """Raised by the hook on the last prefix stage: nothing after it is needed."""


@torch.no_grad()
def run_prefix(model: nn.Module, images: Tensor, stages: Sequence[str]) -> dict[str, Tensor]:
    """The outputs of :func:`cached_stages` on ``images``, the backbone stopped after the
    prefix. The caller sets eval mode (the prefix is frozen: BatchNorm on running stats)."""
    named = model.backbone.named_stages()
    wanted, out = cached_stages(model, stages), {}

    def capture(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            out[name] = output
            if name == stages[-1]:
                raise _PrefixDone
        return hook

    hooks = [named[s].register_forward_hook(capture(s)) for s in wanted]
    try:
        model.backbone(images)
    except _PrefixDone:
        pass
    finally:
        for h in hooks:
            h.remove()
    return out


@contextlib.contextmanager
def _injected(named: dict[str, nn.Module], stages: Sequence[str], values: dict[str, Tensor],
              batch: int) -> Iterator[None]:
    """Each prefix stage returns its given output (or a 1 x 1 placeholder that nothing
    reads) instead of computing: the backbone's own forward then runs only the rest. An
    instance attribute shadows the class's ``forward``; deleting it restores the stage."""
    placeholder = next(iter(values.values())).new_zeros(batch, 1, 1, 1)
    try:
        for name in stages:
            value = values.get(name, placeholder)
            named[name].forward = lambda *args, _value=value, **kwargs: _value
        yield
    finally:
        for name in stages:
            named[name].__dict__.pop("forward", None)


class PrefixRest(nn.Module):
    """``model`` from its frozen prefix's outputs: ``forward(features, valid)`` takes the
    cached maps (by stage name, a crop of N x C x h x w each) and the crop's validity mask
    (N x H x W, which also gives the crop's pixel size) and returns N x K x H x W logits,
    through the model's own forward with the prefix stages answering from ``features``
    (``pixels``: as the model's, the loss's sample only)."""

    samples_pixels = True

    def __init__(self, model: nn.Module, stages: Sequence[str]) -> None:
        super().__init__()
        self.model, self.stages = model, tuple(stages)

    def forward(self, features: dict[str, Tensor], valid: Tensor,
                pixels: tuple[int, int] | None = None) -> Tensor:
        n, (h, w) = valid.shape[0], valid.shape[-2:]
        first = next(iter(features.values()))
        image = first.new_zeros(()).expand(n, 3, h, w)  # its size only is read
        sample = {"pixels": pixels} if pixels is not None else {}
        with _injected(self.model.backbone.named_stages(), self.stages, features, n):
            return self.model(image, valid=valid, **sample)


# ---------------------------------------------------------------------------- the cache
def _digest(model: nn.Module, stages: Sequence[str]) -> str:
    named, digest = model.backbone.named_stages(), hashlib.sha256()
    for stage in stages:
        for key, tensor in sorted(named[stage].state_dict().items()):
            digest.update(f"{stage}.{key}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _scaled(image: Tensor, mask: Tensor, scale: float, flip: bool,
            resize: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """As the training transforms: the warp to ``resize`` (data.resize), the resize of
    :class:`parsenet.data.transforms.RandomScale`, then the flip."""
    if resize:
        warp = Warp(resize)
        image, mask = warp(tv_tensors.Image(image), tv_tensors.Mask(mask))
        image, mask = image.as_subclass(Tensor), mask.as_subclass(Tensor)
    h, w = image.shape[-2:]
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    if size != [h, w]:
        image = TF.resize(image, size, interpolation=v2.InterpolationMode.BILINEAR,
                          antialias=True)
        mask = TF.resize(mask[None], size,
                         interpolation=v2.InterpolationMode.NEAREST_EXACT)[0]
    if flip:
        image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
    return image, mask


class PrefixCache:
    """A finished cache directory: ``meta.json`` and ``<index>.safetensors`` per image,
    holding ``<scale>.<flip>.<stage>`` maps and ``<scale>.<flip>.label``."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta
        self.strides: dict[str, int] = meta["strides"]
        self.scales: list[float] = meta["scales"]
        self.flips: list[int] = [0, 1] if meta["flip"] else [0]
        self.resize: list[int] | None = meta.get("resize")

    def __len__(self) -> int:
        return int(self.meta["count"])

    def file(self, index: int) -> Path:
        return self.path / f"{index:06d}.safetensors"

    def read(self, index: int, scale: int, flip: int) -> tuple[dict[str, Tensor], Tensor]:
        with safe_open(str(self.file(index)), framework="pt") as fh:
            maps = {s: fh.get_tensor(f"{scale}.{flip}.{s}") for s in self.strides}
            return maps, fh.get_tensor(f"{scale}.{flip}.label")


def build_prefix_cache(model: nn.Module, stages: Sequence[str], dataset: Any, *,
                       root: str | os.PathLike, scales: Sequence[float], flip: bool,
                       preprocessing: Preprocessing, progress: bool = False,
                       resize: Sequence[int] | None = None) -> PrefixCache:
    """Compute (or finish) the cache of ``model``'s prefix ``stages`` over ``dataset``
    (whose ``load(i)`` gives the raw uint8 image and label), each image first warped to
    ``resize`` (h, w) if given. Each image's file is written atomically, so an interrupted
    build resumes at the first missing file."""
    ids = "\n".join(str(dataset.image_path(i).resolve()) for i in range(len(dataset)))
    # The stages cached: models with other taps on the same prefix keep other maps.
    ingredients = {"prefix": _digest(model, stages), "stages": list(stages),
                   "cached": cached_stages(model, stages),
                   "images": hashlib.sha256(ids.encode()).hexdigest()[:24],
                   "count": len(dataset), "scales": [float(s) for s in scales],
                   "flip": bool(flip), "preprocessing": preprocessing.to_dict(),
                   **({"resize": [int(v) for v in resize]} if resize else {})}
    key = hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(root) / key
    path.mkdir(parents=True, exist_ok=True)
    modes = {m: m.training for m in model.modules()}  # restored as they were, module by module
    model.eval()
    probe_size = 64 * model.backbone.output_stride
    probe = run_prefix(model, torch.zeros(1, 3, probe_size, probe_size,
                                          device=next(model.parameters()).device), stages)
    meta = {"ingredients": ingredients, "count": len(dataset), "scales": list(scales),
            "flip": bool(flip), "resize": ingredients.get("resize"),
            "strides": {s: probe_size // v.shape[-1] for s, v in probe.items()}}
    (path / "meta.json").write_text(json.dumps(meta, indent=1))
    cache = PrefixCache(path, meta)
    missing = [i for i in range(len(dataset)) if not cache.file(i).is_file()]
    for i in tqdm(missing, desc="frozen prefix cache", disable=not progress):
        _cache_image(model, stages, dataset, i, cache, preprocessing)
    for module, mode in modes.items():
        module.training = mode
    return cache


def _cache_image(model: nn.Module, stages: Sequence[str], dataset: Any, index: int,
                 cache: PrefixCache, preprocessing: Preprocessing) -> None:
    image, mask = dataset.load(index)
    image, mask = image.as_subclass(Tensor), mask.as_subclass(Tensor)
    device = next(model.parameters()).device
    entry: dict[str, Tensor] = {}
    for si, scale in enumerate(cache.scales):
        for flip in cache.flips:
            scaled, label = _scaled(image, mask, scale, bool(flip), cache.resize)
            maps = run_prefix(model, preprocessing(scaled)[None].to(device), stages)
            for stage, value in maps.items():
                entry[f"{si}.{flip}.{stage}"] = value[0].float().cpu().contiguous()
            entry[f"{si}.{flip}.label"] = label.to(torch.uint8).contiguous()
    tmp = cache.file(index).with_suffix(f".{os.getpid()}.tmp")  # ranks may build at once
    save_file(entry, str(tmp))
    os.replace(tmp, cache.file(index))


class CachedCrops(Dataset):
    """Training samples from a :class:`PrefixCache`: a random scale and flip among the
    cached ones, a random stride-aligned ``crop`` (h, w); items are ``(maps, label, valid)``
    (maps by stage name). ``classes``, ``palette`` and ``read_label`` are ``dataset``'s."""

    def __init__(self, cache: PrefixCache, dataset: Any, crop: tuple[int, int], align: int
                 ) -> None:
        align = max(align, *cache.strides.values())
        if crop[0] % align or crop[1] % align:
            raise ConfigError(f"data.crop_size: {crop[0]} x {crop[1]} is not a multiple of "
                              f"{align}, the stride its cached crops are aligned to")
        self.cache, self.dataset, self.crop_size, self.align = cache, dataset, crop, align
        self.classes, self.palette = dataset.classes, dataset.palette

    def __len__(self) -> int:
        return len(self.cache)

    def read_label(self, index: int) -> Any:
        return self.dataset.read_label(index)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        scale = int(torch.randint(len(self.cache.scales), ()))
        flip = int(torch.rand(()) < 0.5) if len(self.cache.flips) == 2 else 0
        maps, label = self.cache.read(index, scale, flip)
        top, left = (self.align * int(torch.randint(
            math.ceil(max(size - crop, 0) / self.align) + 1, ()))
            for size, crop in zip(label.shape, self.crop_size, strict=True))
        return crop_sample(maps, label, self.cache.strides, top, left, self.crop_size)


def crop_sample(maps: dict[str, Tensor], label: Tensor, strides: dict[str, int], top: int,
                left: int, crop: tuple[int, int]) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """The crop at pixel (top, left) of size ``crop`` of each map (its cells ``top /
    stride`` on) and of the label; past the edges, zero features and ignored labels."""
    out = {s: _window(m, top // strides[s], left // strides[s], crop[0] // strides[s],
                      crop[1] // strides[s], 0.0) for s, m in maps.items()}
    target = _window(label.long(), top, left, crop[0], crop[1], IGNORE_INDEX)
    valid = _window(torch.ones_like(label, dtype=torch.bool), top, left, crop[0], crop[1],
                    False)
    return out, target, valid


def _window(x: Tensor, top: int, left: int, h: int, w: int, fill: float) -> Tensor:
    part = x[..., top:top + h, left:left + w]
    pad_h, pad_w = h - part.shape[-2], w - part.shape[-1]
    if pad_h or pad_w:
        part = F.pad(part, (0, pad_w, 0, pad_h), value=fill)
    return part.contiguous()


def cached_training_set(model: nn.Module, stages: Sequence[str], train_set: Any, data: Any,
                        prefix: Any, preprocessing: Preprocessing, *, progress: bool = False
                        ) -> CachedCrops:
    """The training samples of ``train.frozen_prefix.cache``: the cache of ``train_set``'s
    images built (or finished) under ``prefix.cache``, read as crops of
    ``data.crop_size``. ``data`` and ``prefix`` are the config's sections."""
    if not hasattr(train_set, "load"):
        raise ConfigError("train.frozen_prefix.cache: the training set gives no raw images "
                          "(load(i)) to cache the prefix's output of")
    stride = model.backbone.output_stride
    if data.crop_size % stride:  # before the cache is built, not after
        raise ConfigError(f"data.crop_size: {data.crop_size} is not a multiple of {stride}, "
                          f"the output stride its cached crops are aligned to")
    with torch.random.fork_rng(devices=[]):  # building draws nothing, but be sure
        cache = build_prefix_cache(model, stages, train_set, root=prefix.cache,
                                   scales=prefix.scales, flip=data.flip,
                                   preprocessing=preprocessing, progress=progress,
                                   resize=data.resize)
    return CachedCrops(cache, train_set, (data.crop_size, data.crop_size), stride)
