"""How a prediction request's work runs: in a worker thread that stops at its next forward
pass once the client has gone (:func:`watched`), or streaming NDJSON progress while it runs
(:func:`progress_stream`); either way the admitted image's place is given back once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from parsenet.apps.serve.admission import ClientGone
from parsenet.apps.serve.segmenter import Held, Segmenter

__all__ = ["progress_stream", "watched"]

log = logging.getLogger("parsenet.serve")
# How often a request in work asks whether its client is still there.
_DISCONNECT_POLL_S = 0.1


class _HeldStream(StreamingResponse):
    """The NDJSON stream of an admitted image: however it ends (finished, client gone, never
    started), its work is told to stop and its place is given back."""

    def __init__(self, content: AsyncIterator[str], gone: threading.Event,
                 finish: Callable[[], None]) -> None:
        super().__init__(content, media_type="application/x-ndjson")
        self._gone, self._finish = gone, finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._gone.set()
            self._finish()


def progress_stream(segmenter: Segmenter, rgb: np.ndarray, held: Held,
                    gone: threading.Event) -> _HeldStream:
    """NDJSON: ``{"progress": done, "total": n}`` per forward pass, then ``{"result": ..}``
    (or ``{"error": ..}``). The work runs in its own thread so progress can be sent while
    it runs; the thread gives the place back when it ends, or the response does if the
    thread never started."""
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    started = threading.Event()

    def work() -> None:
        try:
            result = segmenter.run(rgb, gone=gone, progress=lambda d, t: events.put(
                {"progress": d, "total": t}))
            events.put({"result": result})
        except ClientGone:
            pass
        except Exception:  # a bug: logged with its traceback, the page gets one line
            log.exception("prediction failed")
            events.put({"error": "the prediction failed on the server (see its log)"})
        finally:
            held.release()
            events.put(None)

    async def lines() -> AsyncIterator[str]:
        started.set()
        threading.Thread(target=work, name="parsenet-serve-predict", daemon=True).start()
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.02)
                continue
            if event is None:
                return
            yield json.dumps(event) + "\n"

    def finish() -> None:
        if not started.is_set():
            held.release()

    return _HeldStream(lines(), gone, finish)


async def watched(request: Request, work: Callable[[threading.Event], Any]) -> Any:
    """``work(gone)`` in a worker thread; ``gone`` is set when the client disconnects, and
    the work checks it between forward passes."""
    gone = threading.Event()

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(_DISCONNECT_POLL_S)
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        return await run_in_threadpool(work, gone)
    except asyncio.CancelledError:  # the server stops: so does the work (at its next pass)
        gone.set()
        raise
    finally:
        watcher.cancel()
