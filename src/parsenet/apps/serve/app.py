"""The FastAPI app of ``parsenet serve``: the page, its static files and the prediction API.

    GET  /                      the page (static/index.html; no request leaves the machine)
    GET  /api/info              the model choices, limits, and the default choice's models
                                and examples
    GET  /api/choices/{key}     one choice's models and examples (loads them on first use)
    GET  /api/examples/{i}.png  an example image of ``?choice=KEY`` (default: the first)
    POST /api/predict           multipart field ``image`` -> JSON (see results.build_result);
                                ``?stream=true``: NDJSON progress lines, then the result;
                                ``?choice=KEY``: which models (default: the first choice)
    POST /api/predict.png       multipart field ``image`` -> label PNG of ``?model=0|1``
                                (of ``?choice=KEY``)

Bad uploads get a 4xx with ``{"detail": "<one line>"}``; a full queue a 503 (see
:mod:`parsenet.apps.serve.admission` for what is admitted, and how memory is bounded).
Uploads are decoded inside the bounded section, and a request whose client disconnects stops
at its next forward pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from parsenet.apps.serve.admission import Admission, Busy, ClientGone
from parsenet.apps.serve.models import ServedModel
from parsenet.apps.serve.registry import ModelRegistry
from parsenet.apps.serve.results import build_result, png_bytes
from parsenet.apps.serve.uploads import (
    UploadLimits,
    UploadRejected,
    decode_upload,
    too_many_bytes,
    upload_header,
)
from parsenet.engine.memory import DEFAULT_BUDGET_GB
from parsenet.errors import ParseNetError, UsageError
from parsenet.viz import label_image

__all__ = ["ServeSettings", "Segmenter", "create_app"]

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("parsenet.serve")
# Room for the multipart boundaries and headers around the file itself.
_MULTIPART_SLACK = 64 * 1024
# How often a request in work asks whether its client is still there.
_DISCONNECT_POLL_S = 0.1


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


class _Held:
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
              ) -> tuple[np.ndarray, _Held]:
        """For a queued request: check the header, wait for its turn, decode. The caller
        releases the place when done with the image (also on errors after this returns)."""
        try:
            header = upload_header(data, name, self.settings.limits)
        except BaseException:
            self.admission.leave()
            raise
        self.admission.turn(header.pixels, gone)
        held = _Held(self.admission, header.pixels)
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


def _choice_models(registry: ModelRegistry, key: str) -> list[ServedModel]:
    """The choice's models (loaded on first use), or the HTTP answer why not."""
    try:
        return registry.models(key)
    except UsageError as e:  # an unknown key
        raise UploadRejected(404, str(e)) from None
    except ParseNetError as e:  # a model that cannot be loaded: the other choices still work
        raise UploadRejected(500, f"model choice {key!r} cannot be loaded: {e}") from None


def _choice_info(registry: ModelRegistry, key: str) -> dict[str, Any]:
    """A choice's models and examples, loading them on first use."""
    models = _choice_models(registry, key)
    examples = registry.examples(key)
    return {
        "key": key, "title": registry.title(key),
        "models": [{"name": m.name, "checkpoint": str(m.checkpoint), "classes": m.classes,
                    "mode": m.mode} for m in models],
        "examples": [{"name": name, "url": f"/api/examples/{i}.png?choice={key}"}
                     for i, (name, _) in enumerate(examples.images)],
        "examples_source": examples.source,
    }


def _slide_above_pixels(model: ServedModel, settings: ServeSettings) -> int:
    """Pixels over which the model's images slide. With data.resize every image runs at that
    one size, so none slides (the pixel limit) or all do (0)."""
    inferencer = model.inferencer.with_options(budget_gb=settings.memory_budget_gb,
                                               mode="auto")
    if inferencer.options.resize:
        fits = inferencer.mode_for(*inferencer.options.resize) != "slide"
        return settings.limits.max_pixels if fits else 0
    return inferencer.largest_preferred_pixels()


def _info(registry: ModelRegistry, settings: ServeSettings) -> dict[str, Any]:
    limits = settings.limits
    default_models = _choice_models(registry, registry.default_key)
    return {
        **_choice_info(registry, registry.default_key),
        "choices": [{"key": c.key, "title": registry.title(c.key)} for c in registry.choices],
        "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                   "slide_above_pixels": min(_slide_above_pixels(m, settings)
                                             for m in default_models),
                   "max_concurrent": settings.max_concurrent,
                   "max_waiting": settings.max_waiting},
    }


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


def _progress_stream(segmenter: Segmenter, rgb: np.ndarray, held: _Held,
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


async def _watched(request: Request, work: Callable[[threading.Event], Any]) -> Any:
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


async def _queued_upload(image: UploadFile, segmenter: Segmenter) -> tuple[bytes, str]:
    """The upload's bytes and name, once it has a place in the queue (503 if none)."""
    limits = segmenter.settings.limits
    name = image.filename or "upload"
    segmenter.admission.queue()
    try:
        data = await image.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise too_many_bytes(name, image.size or len(data), limits)
    except BaseException:
        segmenter.admission.leave()
        raise
    return data, name


class _BodyLimit:
    """Refuses a POST without a Content-Length, or over the upload limit, before its body is
    read (the multipart parser would spool all of it). A plain ASGI middleware: starlette's
    BaseHTTPMiddleware would hide the client's disconnect from request.is_disconnected()."""

    def __init__(self, app: Any, limits: UploadLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
            refusal = None
            if not length.isdigit():
                refusal = JSONResponse({"detail": "uploads need a Content-Length header"}, 411)
            elif int(length) > self.limits.max_bytes + _MULTIPART_SLACK:
                refusal = JSONResponse({"detail": too_many_bytes("upload", int(length),
                                                                 self.limits).message}, 413)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _add_guards(app: FastAPI, limits: UploadLimits) -> None:
    app.add_middleware(_BodyLimit, limits=limits)

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, e: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=e.status)

    @app.exception_handler(Busy)
    async def busy(request: Request, e: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(ClientGone)
    async def gone(request: Request, e: ClientGone) -> JSONResponse:
        # Nobody reads this: nginx's "client closed request", for the access log.
        return JSONResponse({"detail": "the client disconnected"}, status_code=499)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'][1:])) or 'request'}: {err['msg']}"
                             for err in e.errors())
        return JSONResponse({"detail": f"bad request ({problems}); send the image as the "
                                       f"multipart form field 'image'"}, status_code=400)


def create_app(models: Sequence[ServedModel] | ModelRegistry,
               settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``models``: one or two :class:`ServedModel`, or a
    :class:`ModelRegistry` whose choices the page's picker offers."""
    settings = settings or ServeSettings()
    registry = models if isinstance(models, ModelRegistry) else ModelRegistry.of_models(models)
    admission = new_admission(settings)
    segmenters: dict[str, Segmenter] = {}

    def segmenter_for(choice: str | None) -> Segmenter:
        key = registry.default_key if choice is None else choice
        if key not in segmenters:
            segmenters[key] = Segmenter(_choice_models(registry, key), settings, admission)
        return segmenters[key]

    # No interactive docs: their pages load scripts from a CDN.
    app = FastAPI(title="parsenet serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.registry = registry
    # The first choice is loaded already (serve loads it to fail early on a bad checkpoint).
    app.state.segmenter = segmenter_for(None)
    _add_guards(app, settings.limits)
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return _info(registry, settings)

    @app.get("/api/choices/{key}")
    def choice_info(key: str) -> dict[str, Any]:
        return _choice_info(registry, key)

    @app.get("/api/examples/{index}.png")
    def example(index: int, choice: str | None = None) -> Response:
        key = choice or registry.default_key
        _choice_models(registry, key)  # an unknown choice: 404
        examples = registry.examples(key).images
        if not 0 <= index < len(examples):
            return JSONResponse({"detail": f"no example {index} (there are "
                                           f"{len(examples)})"}, status_code=404)
        return Response(examples[index][1], media_type="image/png")

    @app.post("/api/predict")
    async def predict(request: Request, image: Annotated[UploadFile, File()],
                      stream: bool = False, images: bool = True, choice: str | None = None
                      ) -> Any:
        segmenter = await run_in_threadpool(segmenter_for, choice)  # may load the models
        data, name = await _queued_upload(image, segmenter)
        if stream:  # bad uploads still get their 4xx: decoded before the stream starts
            rgb, held = await _watched(request, lambda gone: segmenter.admit(data, name, gone))
            return _progress_stream(segmenter, rgb, held, threading.Event())
        return await _watched(request, lambda gone: segmenter.segment(
            data, name, gone, lambda rgb: segmenter.run(rgb, images=images, gone=gone)))

    @app.post("/api/predict.png")
    async def predict_png(request: Request, image: Annotated[UploadFile, File()],
                          model: int = 0, choice: str | None = None) -> Response:
        segmenter = await run_in_threadpool(segmenter_for, choice)
        if not 0 <= model < len(segmenter.models):
            raise UploadRejected(400, f"model={model}: this server has models 0.."
                                      f"{len(segmenter.models) - 1}")
        upload, name = await _queued_upload(image, segmenter)
        data = await _watched(request, lambda gone: segmenter.segment(
            upload, name, gone, lambda rgb: segmenter.label_png(rgb, model, gone)))
        # Only safe characters in a header: the name is the user's.
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(image.filename or "upload").stem)[:64]
        return Response(data, media_type="image/png", headers={
            "Content-Disposition": f'attachment; filename="{stem}_labels.png"'})

    return app
