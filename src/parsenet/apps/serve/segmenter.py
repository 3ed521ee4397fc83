"""The work behind ``parsenet serve``'s prediction routes: the server's settings, the places
an upload holds while it is decoded and segmented, and the :class:`Segmenter` that runs every
served model of a choice on an admitted image (see :mod:`parsenet.apps.serve.admission`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from parsenet.apps.serve.admission import Admission, ClientGone
from parsenet.apps.serve.models import ServedModel
from parsenet.apps.serve.results import build_result, png_bytes
from parsenet.apps.serve.uploads import UploadLimits, decode_upload, upload_header
from parsenet.engine.memory import DEFAULT_BUDGET_GB
from parsenet.viz import label_image

__all__ = ["ServeSettings", "Segmenter", "Held", "new_admission"]


@dataclass(frozen=True)
class ServeSettings:
    limits: UploadLimits = UploadLimits()
    # An image whose estimated inference memory exceeds this goes through sliding windows
    # (the checkpoint's window and stride), the rule predict uses (parsenet.engine.inferencer).
    memory_budget_gb: float = DEFAULT_BUDGET_GB
    # Predictions running at once; more requests wait. Two 40 MP images already need GBs.
    max_concurrent: int = 2
    # Requests waiting for their turn (each holding its upload, <= limits.max_bytes); more
    # are answered 503.
    max_waiting: int = 8
    # Pixels decoded and segmented at once; None: limits.max_pixels (one image at the limit,
    # or several smaller ones). An image alone always runs.
    pixel_budget: int | None = None
    alpha: float = 0.5


def new_admission(settings: ServeSettings) -> Admission:
    return Admission(max_concurrent=settings.max_concurrent, max_waiting=settings.max_waiting,
                     pixel_budget=settings.pixel_budget or settings.limits.max_pixels)


class Held:
    """An admitted image's place, given back once by whoever finishes with it last."""

    def __init__(self, admission: Admission, pixels: int) -> None:
        self._admission, self._pixels = admission, pixels
        self._lock, self._released = threading.Lock(), False

    def release(self) -> None:
        with self._lock:
            if not self._released:
                self._released = True
                self._admission.done(self._pixels)


class Segmenter:
    """Runs every served model on an image, for the requests :class:`Admission` lets in."""

    def __init__(self, models: Sequence[ServedModel], settings: ServeSettings,
                 admission: Admission | None = None) -> None:
        # Copies with this server's memory budget: the caller's models stay as they were.
        self.models = [replace(m, inferencer=m.inferencer.with_options(
            budget_gb=settings.memory_budget_gb)) for m in models]
        self.settings = settings
        # One admission for every choice of the picker: the limits are the machine's.
        self.admission = admission or new_admission(settings)

    def admit(self, data: bytes, name: str, gone: threading.Event
              ) -> tuple[np.ndarray, Held]:
        """For a queued request: check the header, wait for its turn, decode. The caller
        releases the place when done with the image (also on errors after this returns)."""
        try:
            header = upload_header(data, name, self.settings.limits)
        except BaseException:
            self.admission.leave()
            raise
        self.admission.turn(header.pixels, gone)
        held = Held(self.admission, header.pixels)
        try:
            return decode_upload(data, name, self.settings.limits), held
        except BaseException:
            held.release()
            raise

    def segment(self, data: bytes, name: str, gone: threading.Event,
                job: Callable[[np.ndarray], Any]) -> Any:
        """``job(rgb)`` for a queued upload, within its turn."""
        rgb, held = self.admit(data, name, gone)
        try:
            return job(rgb)
        finally:
            held.release()

    def mode_for(self, model: ServedModel, height: int, width: int) -> str:
        """The mode of an image of this size: decided at the size it runs at (a
        checkpoint's data.resize, else its own), as predict decides it."""
        return model.inferencer.mode_for(*model.inferencer.run_size(height, width))

    def run(self, rgb: np.ndarray, *, images: bool = True,
            progress: Callable[[int, int], None] = lambda done, total: None,
            gone: threading.Event | None = None) -> dict[str, Any]:
        h, w = rgb.shape[:2]
        modes = [self.mode_for(m, h, w) for m in self.models]
        total = sum(m.inferencer.passes(*m.inferencer.run_size(h, w), mode)
                    for m, mode in zip(self.models, modes, strict=True))
        done = 0

        def on_pass() -> None:
            nonlocal done
            done += 1
            progress(min(done, total), total)
            if gone is not None and gone.is_set():
                raise ClientGone()

        image = torch.from_numpy(rgb).permute(2, 0, 1)
        start = time.perf_counter()
        labels = [m.predict(image, mode, on_pass)
                  for m, mode in zip(self.models, modes, strict=True)]
        seconds = time.perf_counter() - start
        return build_result(rgb, self.models, labels, mode=", ".join(sorted(set(modes))),
                            seconds=seconds, alpha=self.settings.alpha, images=images)

    def label_png(self, rgb: np.ndarray, index: int, gone: threading.Event | None = None
                  ) -> bytes:
        model = self.models[index]
        image = torch.from_numpy(rgb).permute(2, 0, 1)

        def on_pass() -> None:
            if gone is not None and gone.is_set():
                raise ClientGone()

        labels = model.predict(image, self.mode_for(model, *rgb.shape[:2]), on_pass)
        return png_bytes(label_image(labels, model.palette))
