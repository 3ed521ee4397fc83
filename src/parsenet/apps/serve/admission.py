"""Which requests serve works on: a few at once within a pixel budget, a bounded queue behind
them (more get 503), and none for a client that has left.

Memory is bounded by what is admitted: at most ``max_waiting`` uploads wait, each at most
``max_bytes``, and the images being decoded and segmented together hold at most
``pixel_budget`` pixels (one image at the upload limit, or several smaller ones), each in at
most ``max_concurrent`` slots. A request whose client disconnects stops at its next forward
pass (between sliding windows or scales) or while it waits, and frees its place.
"""

from __future__ import annotations

import threading

__all__ = ["Admission", "Busy", "ClientGone"]


class Busy(Exception):
    """The queue is full: answered 503 with this one-line message."""


class ClientGone(Exception):
    """The client disconnected: its work stopped, and nobody reads the answer."""


class Admission:
    """At most ``max_concurrent`` requests work at once on at most ``pixel_budget`` pixels
    together; at most ``max_waiting`` wait for their turn; more are refused (:class:`Busy`).

    Use: ``queue()`` when a request arrives, then ``turn(pixels, gone)`` (blocks), then
    ``done(pixels)``; ``leave()`` for a queued request that will not take its turn."""

    def __init__(self, *, max_concurrent: int, max_waiting: int, pixel_budget: int) -> None:
        self.max_concurrent, self.max_waiting = max_concurrent, max_waiting
        self.pixel_budget = pixel_budget
        self._changed = threading.Condition()
        self._waiting = self._working = self._pixels = 0

    def queue(self) -> None:
        with self._changed:
            # Arrivals wait here until they take their turn, also those a free slot takes
            # at once; only those beyond the free slots count against max_waiting.
            free = max(0, self.max_concurrent - self._working)
            if self._waiting >= self.max_waiting + free:
                raise Busy(f"the server is busy: {self._working} image(s) in work and "
                           f"{self._waiting} waiting, the most it queues; try again shortly")
            self._waiting += 1

    def leave(self) -> None:
        with self._changed:
            self._waiting -= 1
            self._changed.notify_all()

    def _fits(self, pixels: int) -> bool:
        if self._working >= self.max_concurrent:
            return False
        # An image alone always fits: the upload limit already bounds it.
        return self._working == 0 or self._pixels + pixels <= self.pixel_budget

    def turn(self, pixels: int, gone: threading.Event) -> None:
        """Wait until ``pixels`` more fit (then the caller works and calls ``done``), or
        raise :class:`ClientGone` when ``gone`` is set first. Leaves the queue either way."""
        with self._changed:
            try:
                while not self._fits(pixels):
                    if gone.is_set():
                        raise ClientGone()
                    self._changed.wait(timeout=0.1)  # wakes on done/leave; polls ``gone``
                if gone.is_set():
                    raise ClientGone()
                self._working += 1
                self._pixels += pixels
            finally:
                self._waiting -= 1
                self._changed.notify_all()

    def done(self, pixels: int) -> None:
        with self._changed:
            self._working -= 1
            self._pixels -= pixels
            self._changed.notify_all()

    def snapshot(self) -> dict[str, int]:
        with self._changed:
            return {"working": self._working, "waiting": self._waiting, "pixels": self._pixels}
