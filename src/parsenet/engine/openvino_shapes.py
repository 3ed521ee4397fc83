"""Fixed-shape compiles of an OpenVINO model, for the input shapes that come again.

At a fixed input shape OpenVINO folds the export's shape arithmetic (the trunk's
input-dependent padding, the crop back to the input's size). Measured on an Intel Xeon with
AMX, 2 threads, one process, interleaved: camvid's whole-graph bf16 pass took 18.2 ms instead
of 22.6, siftflow's 60.5 instead of 70.6; siftflow's split (``openvino-bf16-split``), with
the labels taken, 118 ms instead of 134. A compile takes ~0.3 s, so only a shape that comes
again (a folder of one camera's images, the scales of an eval) gets one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["STATIC_SHAPES", "FixedShapes"]

# Input shapes compiled at a fixed size per predictor: enough for one image size at an eval's
# scales, with and without flip.
STATIC_SHAPES = 4
_FORGET_AFTER = 4096  # shapes seen once: a stream of ever new sizes is forgotten past this

Compiled = TypeVar("Compiled")


class FixedShapes(Generic[Compiled]):
    """What runs each input shape: ``dynamic`` the first time a shape comes, then what
    ``compile_at(shape)`` made for it (up to :data:`STATIC_SHAPES` shapes). Thread-safe: serve
    calls from several threads, and each shape is compiled once."""

    def __init__(self, compile_at: Callable[[tuple[int, ...]], Compiled]) -> None:
        self.compile_at = compile_at
        self.static: dict[tuple[int, ...], Compiled] = {}
        self._seen: set[tuple[int, ...]] = set()
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...], dynamic: Compiled) -> Compiled:
        with self._lock:
            static = self.static.get(shape)
            if static is not None:
                return static
            if shape not in self._seen or len(self.static) >= STATIC_SHAPES:
                if len(self._seen) >= _FORGET_AFTER:
                    self._seen.clear()
                self._seen.add(shape)
                return dynamic
            self.static[shape] = static = self.compile_at(shape)
            return static
