"""``predict``'s file side: images are decoded ahead and results written behind, in threads,
while the :class:`~parsenet.engine.inferencer.Inferencer` labels the current image.

Per image it writes ``<stem>.png`` (pixel values are class ids: a palette PNG, a 16-bit
greyscale one for more than 256 classes, :func:`~parsenet.viz.label_image`) and
``<stem>_overlay.jpg`` (image | overlay | prediction). Decoding (libjpeg, zlib) and encoding
release the GIL, so on a CPU they overlap the model's forward pass instead of adding to it;
at most :data:`AHEAD` images are held decoded and :data:`BEHIND` results waiting to be
written, so memory stays bounded on large folders.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from parsenet.data.image_safety import DEFAULT_MAX_PIXELS
from parsenet.engine.inferencer import Inferencer
from parsenet.errors import ParseNetError

__all__ = ["PredictionWriter", "predict_files", "OVERLAY_MAX_SIDE", "AHEAD", "BEHIND"]

# The overlay is for looking at: a 6000 x 6000 photo's three panels at full size would be an
# 18000-pixel-wide JPEG and cost more memory than the prediction. The label PNG keeps the
# full size.
OVERLAY_MAX_SIDE = 2048
AHEAD, BEHIND = 2, 2  # images decoded ahead of the model, results queued for writing


def _shrunk(rgb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape
    scale = OVERLAY_MAX_SIDE / max(h, w)
    if scale >= 1:
        return rgb, labels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)),
            np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST)))


@dataclass
class PredictionWriter:
    """Writes one image's label PNG and overlay."""

    classes: list[str]
    palette: Any  # K x 3; None: the VOC palette
    alpha: float = 0.5
    _palette: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from parsenet.viz import voc_palette

        palette = self.palette if self.palette is not None else voc_palette(len(self.classes))
        self._palette = np.asarray(palette, dtype=np.uint8)

    def write(self, image: Tensor, labels: np.ndarray, out_stem: Path) -> tuple[Path, Path]:
        from parsenet.viz import (
            colorize,
            legend_entries,
            overlay,
            save_label_png,
            side_by_side,
            with_legend,
        )

        label_png = out_stem.with_name(out_stem.name + ".png")
        save_label_png(labels, self._palette, label_png)
        legend = legend_entries(labels, self.classes, self._palette)  # shares at full size
        rgb, small = _shrunk(image.permute(1, 2, 0).contiguous().numpy(), labels)
        panels = [("image", rgb), ("overlay", overlay(rgb, small, self._palette, self.alpha)),
                  ("prediction", colorize(small, self._palette))]
        overlay_path = out_stem.with_name(out_stem.name + "_overlay.jpg")
        with_legend(side_by_side(panels), legend).save(overlay_path, quality=92)
        return label_png, overlay_path


def _read(path: Path, max_pixels: int) -> Tensor:
    from parsenet.data.decode import read_image

    return read_image(path, max_pixels=max_pixels)


def _decoded_ahead(pool: ThreadPoolExecutor, paths: Sequence[Path], max_pixels: int
                   ) -> Iterator[tuple[Path, Future]]:
    """(path, future of its decoded image), keeping :data:`AHEAD` decodes in flight."""
    pending: deque[tuple[Path, Future]] = deque()
    items = iter(paths)
    for path in items:
        pending.append((path, pool.submit(_read, path, max_pixels)))
        if len(pending) > AHEAD:
            yield pending.popleft()
    yield from pending


def predict_files(inferencer: Inferencer, writer: PredictionWriter,
                  named: Sequence[tuple[Path, str]], out_dir: Path, *,
                  skip_errors: bool = False, on_done: Callable[[], None] = lambda: None,
                  max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> tuple[list[tuple[Path, Path]], list[str], list[tuple[str, str]]]:
    """Label and write every (image, output name) of ``named`` into ``out_dir``.

    Returns (written (label PNG, overlay) pairs, the mode of each, skipped (path, message)).
    An unreadable or unpredictable image (ParseNetError, OSError) raises, or with
    ``skip_errors`` is skipped and listed. Images over ``max_pixels`` are refused from their
    header, before decoding.
    """
    outputs: list[tuple[Path, Path]] = []
    modes: list[str] = []
    skipped: list[tuple[str, str]] = []
    writes: deque[tuple[Path, str, Future]] = deque()

    def settle(keep: int) -> None:  # wait for the oldest writes until ``keep`` remain
        while len(writes) > keep:
            path, mode, future = writes.popleft()
            try:
                outputs.append(future.result())
                modes.append(mode)
            except (ParseNetError, OSError) as e:
                if not skip_errors:
                    raise
                skipped.append((str(path), " ".join(str(e).split())))

    with ThreadPoolExecutor(1, "parsenet-read") as reader, \
            ThreadPoolExecutor(1, "parsenet-write") as writer_pool:
        names = dict(named)
        try:
            for path, decoded in _decoded_ahead(reader, [p for p, _ in named], max_pixels):
                try:
                    image = decoded.result()
                    labels, mode = inferencer.label_image(image, name=str(path))
                except (ParseNetError, OSError) as e:
                    if not skip_errors:
                        raise
                    skipped.append((str(path), " ".join(str(e).split())))
                    on_done()
                    continue
                future = writer_pool.submit(writer.write, image, labels.numpy(),
                                            out_dir / names[path])
                writes.append((path, mode, future))
                settle(BEHIND)
                on_done()
            settle(0)
        except BaseException:
            for _, _, future in writes:
                future.cancel()
            raise
    return outputs, modes, skipped
