"""The built-in "context" dataset: scenes where only the whole image decides a label.

The situation of ParseNet's Fig. 1: a patch that looks like a bird is a cat because the
scene is indoors. Every image is generated from a seed by these rules:

* **Scene type.** ``indoor`` or ``outdoor``, each with probability 1/2.
* **Background.** Label ``background``. A smooth random colour field plus pixel noise,
  drawn from the same distribution in both scene types: the background says nothing
  about the scene.
* **Ambiguous objects.** One or two large objects (bounding square 96-128 px). Each is
  drawn by one of two renderers, chosen with probability 1/2 and independent of the
  scene: a striped ellipse, labelled ``cat`` indoors and ``bird`` outdoors, or a
  checkered rounded rectangle, labelled ``rug`` indoors and ``pond`` outdoors. The
  renderers do not know the scene, so given only its crop an object of class ``cat`` is
  pixel-identical in distribution to one of class ``bird`` (and ``rug`` to ``pond``):
  local appearance cannot tell them apart.
* **Scene cues.** Three to five small objects (32-44 px) that exist only to give the
  scene away: ``lamp`` (a yellow ringed disc) indoors, ``tree`` (a round green crown on a
  brown trunk) outdoors. Their positions and sizes do not depend on the scene, and each keeps
  at least ``cue_clearance`` pixels (default 64) between its bounding box and the
  bounding square of every ambiguous object: the centre of an ambiguous object is at
  least 48 + 64 = 112 px from any cue pixel. Nothing else in the image differs between
  the scene types.
* **Local objects.** One to three ``ball`` (red shaded disc) and ``box`` (blue rounded square,
  shaded) objects, 40-64 px, in both scene types alike: classes that local
  appearance decides, so the task is not only context.
* Objects never overlap. Their layout draws come from the random stream in the same order
  whatever the scene, so :func:`render_scene` with the same generator state and a forced
  scene type gives the same layout and byte-identical object pixels in both scenes; only
  the cue pixels and the ambiguous labels change.

Why 320 x 320, and why the cues keep their distance. The width-reduced DeepLab-LargeFOV
baseline has a theoretical receptive field of 419 px, more than the image: fc6 is a 3x3
convolution dilated by 12 on the stride-8 grid, so each output looks at nine windows 96 px
apart. What it effectively uses is measured by the gradient of one output pixel with
respect to the input (:mod:`parsenet.erf`, as the demo measures it): 90% of it lies within
134-140 px of the pixel on the two trained demo baselines (seeds 0, 1, 450 iterations),
most of it in the nine windows around the fc6 taps. A cue is a few hundred pixels somewhere
in that sparse field, at least 112 px from an object's centre (``min_cue_distance``): the
baseline could only learn to read it through the far taps, a different tap for every cue
position, and in the demo budget it does not (its mean IU on the four ambiguous classes
was 29 and 35 for seeds 0 and 1, near chance: it mostly names one class of each pair),
while pool6 averages fc7 over the whole image and sees every cue. The image must hold one
or two 96-128 px objects, their 64 px cue clearance and three to five cues, so 320 px is
about the smallest square that works; on smaller images (the paper's 256 x 256 SiftFlow)
every pixel's field covers most of the image and the paper found no gain from context
there. Larger images cost (H x W) more time per image.

Files: the common layout of :mod:`parsenet.data.folder` (``images/<split>/<id>.jpg``,
``labels/<split>/<id>.png``, ``classes.txt``, ``<split>.txt``) plus ``README.md``,
``scenes.txt`` (``<split> <id> <scene>`` per image) and ``synthetic.json`` (the parameters,
so :func:`ensure_dataset` regenerates when they change). Image ``i`` of a split depends
only on (seed, split, i), so a larger dataset extends a smaller one with the same images.
"""

from __future__ import annotations

import json
import os
import shutil
import typing
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import TypeAdapter, ValidationError
from tqdm import tqdm

from parsenet.config_messages import describe_validation_error
from parsenet.data.errors import DataError
from parsenet.data.synthetic_layout import place
from parsenet.data.synthetic_shapes import RENDERERS, background

__all__ = ["CLASSES", "SCENES", "AMBIGUOUS_PAIRS", "LOCAL_CLASSES", "PALETTE", "SyntheticParams",
           "PlacedObject", "Scene", "render_scene", "generate", "ensure_dataset",
           "min_cue_distance", "AMBIGUOUS_HALF_RANGE"]

CLASSES = ("background", "lamp", "tree", "ball", "box", "cat", "bird", "rug", "pond")
SCENES = ("indoor", "outdoor")
# renderer -> class in each scene type (indoor, outdoor)
AMBIGUOUS_PAIRS = {"striped_ellipse": ("cat", "bird"), "checkered_rectangle": ("rug", "pond")}
CUES = ("lamp", "tree")  # indoor, outdoor
AMBIGUOUS_HALF_RANGE = (48, 65)  # half the side of an ambiguous object's square, [low, high)
LOCAL_CLASSES = ("background", "lamp", "tree", "ball", "box")
PALETTE = np.array([[60, 60, 60], [250, 220, 40], [30, 150, 40], [220, 40, 40], [40, 80, 220],
                    [240, 140, 30], [120, 200, 250], [170, 60, 170], [40, 170, 170]], np.uint8)
STAMP = "synthetic.json"
# Part of the stamp: a change to the rules below must regenerate datasets made by older code.
GENERATOR_VERSION = 4
_SPLIT_CODES = {"train": 1, "test": 2, "val": 3}


@dataclass(frozen=True)
class SyntheticParams:
    """Generator parameters (the keys accepted by :func:`ensure_dataset`)."""

    seed: int = 0
    size: int = 320
    splits: dict[str, int] = field(default_factory=lambda: {"train": 600, "test": 100})
    cue_clearance: int = 64
    jpeg_quality: int = 95

    @classmethod
    def from_kwargs(cls, params: dict[str, Any]) -> SyntheticParams:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise DataError(f"synthetic data: unknown parameter(s) {unknown}; "
                            f"known: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        for name, value in params.items():  # strictly: a size of "320" or 2.5 is refused
            try:
                TypeAdapter(hints[name]).validate_python(value, strict=True)
            except ValidationError as e:
                raise DataError(describe_validation_error(
                    e, None, "", section=f"data.synthetic.{name}")) from None
        p = cls(**params)
        if p.size < 256:
            raise DataError(f"synthetic data: size must be >= 256 (got {p.size}): smaller "
                            "images cannot hold the objects and their cue clearance")
        bad = {k: v for k, v in p.splits.items() if k not in _SPLIT_CODES or int(v) < 1}
        if not p.splits or bad:
            raise DataError(f"synthetic data: splits must map names among "
                            f"{sorted(_SPLIT_CODES)} to positive counts (got {p.splits})")
        return p


@dataclass(frozen=True)
class PlacedObject:
    name: str  # class name
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive) bounding square
    renderer: str


@dataclass
class Scene:
    image: np.ndarray  # H x W x 3 uint8
    label: np.ndarray  # H x W uint8 class ids
    scene: str
    objects: list[PlacedObject]


def min_cue_distance(cue_clearance: int) -> int:
    """The least distance (px) from an ambiguous object's centre to any cue pixel."""
    return AMBIGUOUS_HALF_RANGE[0] + cue_clearance


def render_scene(rng: np.random.Generator, size: int = 320, *, scene: str | None = None,
                 cue_clearance: int = 64) -> Scene:
    """One image and its label map, following the rules in the module docstring.

    ``scene`` forces the scene type; the scene draw is consumed either way, so the same
    generator state gives the same layout and object pixels for both scene types.
    """
    drawn = SCENES[int(rng.integers(2))]
    scene = drawn if scene is None else scene
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    s = SCENES.index(scene)
    class_id = {name: i for i, name in enumerate(CLASSES)}
    image = background(rng, size)
    label = np.zeros((size, size), np.uint8)
    objects: list[PlacedObject] = []
    taken: list[tuple[tuple[int, int, int, int], int]] = []

    def draw(renderer: str, name: str, box: tuple[int, int, int, int]) -> None:
        half = (box[2] - box[0]) // 2
        mask, colour = RENDERERS[renderer](rng, half)
        window = image[box[0]:box[2], box[1]:box[3]]
        window[mask] = np.broadcast_to(colour, window.shape)[mask]
        label[box[0]:box[2], box[1]:box[3]][mask] = class_id[name]
        objects.append(PlacedObject(name, box, renderer))

    n_ambiguous = int(rng.integers(1, 3))
    ambiguous_boxes = []
    for _ in range(n_ambiguous):
        renderer = list(AMBIGUOUS_PAIRS)[int(rng.integers(2))]
        half = int(rng.integers(*AMBIGUOUS_HALF_RANGE))
        box = place(rng, size, half, [(b, 8) for b, _ in taken])
        if box is None:
            continue
        draw(renderer, AMBIGUOUS_PAIRS[renderer][s], box)
        taken.append((box, 0))
        ambiguous_boxes.append(box)

    n_local = int(rng.integers(1, 4))
    for _ in range(n_local):
        renderer = ("ball", "box")[int(rng.integers(2))]
        half = int(rng.integers(20, 33))
        box = place(rng, size, half, [(b, 8) for b, _ in taken])
        if box is not None:
            draw(renderer, renderer, box)
            taken.append((box, 0))

    n_cues = int(rng.integers(3, 6))
    cue = CUES[s]
    for _ in range(n_cues):
        half = int(rng.integers(16, 23))
        others = [(b, cue_clearance if b in ambiguous_boxes else 8) for b, _ in taken]
        box = place(rng, size, half, others, tries=200)
        if box is not None:
            draw(cue, cue, box)
            taken.append((box, 0))
    # Pixel noise, uniform in [-4, 4]: integers are much cheaper to draw than normals.
    image += rng.integers(-4, 5, image.shape, dtype=np.int8)
    np.clip(image, 0, 255, out=image)
    return Scene(image.astype(np.uint8), label, scene, objects)


def render_dataset_image(params: SyntheticParams, split: str, index: int) -> Scene:
    """Image ``index`` of ``split``; retried with the next sub-stream if it has no cue."""
    for attempt in range(100):
        rng = np.random.default_rng([params.seed, _SPLIT_CODES[split], index, attempt])
        scene = render_scene(rng, params.size, cue_clearance=params.cue_clearance)
        if any(o.name in CUES for o in scene.objects):
            return scene
    raise RuntimeError(f"no scene cue fits in image {index} of {split}")  # pragma: no cover


# ---------------------------------------------------------------- files

def _readme(p: SyntheticParams) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in p.splits.items())
    return (f"# Synthetic context dataset (generated by parsenet.data.synthetic)\n\n"
            f"Seed {p.seed}, {p.size}x{p.size} images, splits: {counts}. Regenerate with\n"
            f"`parsenet.data.synthetic.generate(root, **params)`; the parameters are in "
            f"{STAMP}.\nThe generator's rules are in the docstring of "
            f"parsenet/data/synthetic.py.\n\nClasses: {', '.join(CLASSES)}. Ambiguous pairs "
            f"(identical look, the scene decides): cat/bird, rug/pond. Scene cues: lamp "
            f"(indoor), tree (outdoor). Labels: uint8 class ids; no ignore pixels.\n")


def _write_images(work: Path, p: SyntheticParams, split: str, start: int, stop: int
                  ) -> list[str]:
    """Render and save images ``start`` .. ``stop - 1`` of ``split``; their scene lines."""
    lines = []
    for i in range(start, stop):
        scene = render_dataset_image(p, split, i)
        Image.fromarray(scene.image).save(work / "images" / split / f"{i:05d}.jpg",
                                          quality=p.jpeg_quality, subsampling=0)
        Image.fromarray(scene.label).save(work / "labels" / split / f"{i:05d}.png")
        lines.append(f"{split} {i:05d} {scene.scene}")
    return lines


def generate(root: str | PathLike, *, progress: bool = True, workers: int | None = None,
             **params: Any) -> Path:
    """Write the dataset into ``root`` (which must not exist) and return it.

    ``workers`` threads render in parallel (default: the CPU count, at most 4, for 200+
    images); the files do not depend on it.
    """
    p = SyntheticParams.from_kwargs(params)
    root = Path(root)
    if root.exists():
        raise DataError(f"{root}: already exists; generate() writes only into a new folder")
    # A private work folder renamed at the end: an interrupted run leaves no half dataset,
    # and two processes generating the same data at once do not write into each other.
    work = root.with_name(f"{root.name}.partial-{os.getpid()}")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    total = sum(int(n) for n in p.splits.values())
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if total >= 200 else 1
    step = max(1, min(25, total // (4 * workers)))
    chunks = []
    for split, count in p.splits.items():
        (work / "images" / split).mkdir(parents=True)
        (work / "labels" / split).mkdir(parents=True)
        (work / f"{split}.txt").write_text("".join(f"{i:05d}\n" for i in range(int(count))))
        chunks += [(split, a, min(a + step, int(count))) for a in range(0, int(count), step)]
    bar = tqdm(total=total, desc=f"generating {root}", unit="img",
               disable=not progress)
    results: dict[tuple[str, int, int], list[str]] = {}
    # Threads, not processes: numpy and PIL release the GIL in the heavy parts, and a new
    # process would re-import the package (torch included) before drawing a pixel.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(_write_images, work, p, *c): c for c in chunks}
        for future in as_completed(futures):
            chunk = futures[future]
            results[chunk] = future.result()
            bar.update(chunk[2] - chunk[1])
    bar.close()
    (work / "scenes.txt").write_text("".join(line + "\n" for c in chunks for line in results[c]))
    (work / "README.md").write_text(_readme(p))
    (work / STAMP).write_text(json.dumps(_stamp(p), indent=1) + "\n")
    try:
        work.rename(root)
    except OSError:  # another process finished the same dataset first
        if not _matches(root, p):
            raise
        shutil.rmtree(work)
    return root


def _stamp(p: SyntheticParams) -> dict[str, Any]:
    return {**asdict(p), "generator_version": GENERATOR_VERSION}


def _matches(root: Path, p: SyntheticParams) -> bool:
    try:
        return json.loads((root / STAMP).read_text()) == _stamp(p)
    except (OSError, json.JSONDecodeError):
        return False


def ensure_dataset(root: str | PathLike, *, progress: bool = True, workers: int | None = None,
                   **params: Any) -> Path:
    """Generate the dataset into ``root`` unless it is already there with these parameters.

    A folder generated with other parameters is replaced; a folder that this module did
    not generate (no ``synthetic.json``) is never touched: that is a ``DataError``.
    """
    p = SyntheticParams.from_kwargs(params)
    root = Path(root)
    stamp = root / STAMP
    if root.exists() and any(root.iterdir()):
        if not stamp.is_file():
            raise DataError(f"{root}: exists and is not a generated synthetic dataset (no "
                            f"{STAMP}); choose another data.root or remove the folder")
        try:
            stored = json.loads(stamp.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{stamp}: unreadable ({e})") from None
        if stored == _stamp(p):
            return root
        shutil.rmtree(root)
    elif root.exists():
        root.rmdir()
    return generate(root, progress=progress, workers=workers, **asdict(p))
