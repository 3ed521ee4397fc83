"""The FastAPI app of ``parsenet serve``: the page, its static files and the prediction API.

    GET  /                      the page (static/index.html; no request leaves the machine)
    GET  /api/info              models, classes, limits, examples
    GET  /api/examples/{i}.png  a bundled example image
    POST /api/predict           multipart field ``image`` -> JSON (see results.build_result);
                                ``?stream=true``: NDJSON progress lines, then the result
    POST /api/predict.png       multipart field ``image`` -> label PNG of ``?model=0|1``

Bad uploads get a 4xx with ``{"detail": "<one line>"}``.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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

from parsenet.apps.serve.examples import example_pngs
from parsenet.apps.serve.models import ServedModel
from parsenet.apps.serve.results import build_result, png_bytes
from parsenet.apps.serve.uploads import UploadLimits, UploadRejected, decode_upload, too_many_bytes
from parsenet.engine.memory import DEFAULT_BUDGET_GB
from parsenet.viz import label_image

__all__ = ["ServeSettings", "Segmenter", "create_app"]

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("parsenet.serve")
# Room for the multipart boundaries and headers around the file itself.
_MULTIPART_SLACK = 64 * 1024


@dataclass(frozen=True)
class ServeSettings:
    limits: UploadLimits = UploadLimits()
    # An image whose estimated inference memory exceeds this goes through sliding windows
    # (the checkpoint's window and stride), the rule predict uses (parsenet.engine.inferencer).
    memory_budget_gb: float = DEFAULT_BUDGET_GB
    # Predictions running at once; more requests wait. Two 40 MP images already need GBs.
    max_concurrent: int = 2
    alpha: float = 0.5


class Segmenter:
    """Runs every served model on an image, at most ``max_concurrent`` images at a time."""

    def __init__(self, models: Sequence[ServedModel], settings: ServeSettings) -> None:
        # Copies with this server's memory budget: the caller's models stay as they were.
        self.models = [replace(m, inferencer=m.inferencer.with_options(
            budget_gb=settings.memory_budget_gb)) for m in models]
        self.settings = settings
        self._slots = threading.BoundedSemaphore(settings.max_concurrent)

    def mode_for(self, model: ServedModel, height: int, width: int) -> str:
        return model.inferencer.mode_for(height, width)

    def run(self, rgb: np.ndarray, *, images: bool = True,
            progress: Callable[[int, int], None] = lambda done, total: None
            ) -> dict[str, Any]:
        h, w = rgb.shape[:2]
        modes = [self.mode_for(m, h, w) for m in self.models]
        total = sum(m.inferencer.passes(h, w, mode)
                    for m, mode in zip(self.models, modes, strict=True))
        done = 0

        def on_pass() -> None:
            nonlocal done
            done += 1
            progress(min(done, total), total)

        image = torch.from_numpy(rgb).permute(2, 0, 1)
        with self._slots:
            start = time.perf_counter()
            labels = [m.predict(image, mode, on_pass)
                      for m, mode in zip(self.models, modes, strict=True)]
            seconds = time.perf_counter() - start
        return build_result(rgb, self.models, labels, mode=", ".join(sorted(set(modes))),
                            seconds=seconds, alpha=self.settings.alpha, images=images)

    def label_png(self, rgb: np.ndarray, index: int) -> bytes:
        model = self.models[index]
        image = torch.from_numpy(rgb).permute(2, 0, 1)
        with self._slots:
            labels = model.predict(image, self.mode_for(model, *rgb.shape[:2]))
        return png_bytes(label_image(labels, model.palette))


def _info(segmenter: Segmenter) -> dict[str, Any]:
    limits = segmenter.settings.limits
    return {
        "models": [{"name": m.name, "checkpoint": str(m.checkpoint), "classes": m.classes,
                    "mode": m.mode} for m in segmenter.models],
        "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                   "slide_above_pixels": min(m.inferencer.largest_preferred_pixels()
                                             for m in segmenter.models)},
        "examples": [{"name": name, "url": f"/api/examples/{i}.png"}
                     for i, (name, _) in enumerate(example_pngs())],
    }


def _progress_stream(segmenter: Segmenter, rgb: np.ndarray) -> Iterator[str]:
    """NDJSON: ``{"progress": done, "total": n}`` per forward pass, then ``{"result": ..}``
    (or ``{"error": ..}``). The work runs in its own thread so progress can be sent while
    it runs."""
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def work() -> None:
        try:
            result = segmenter.run(rgb, progress=lambda d, t: events.put(
                {"progress": d, "total": t}))
            events.put({"result": result})
        except Exception:  # a bug: logged with its traceback, the page gets one line
            log.exception("prediction failed")
            events.put({"error": "the prediction failed on the server (see its log)"})
        finally:
            events.put(None)

    threading.Thread(target=work, name="parsenet-serve-predict", daemon=True).start()
    while (event := events.get()) is not None:
        yield json.dumps(event) + "\n"


async def _read_upload(image: UploadFile, limits: UploadLimits) -> np.ndarray:
    name = image.filename or "upload"
    data = await image.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise too_many_bytes(name, image.size or len(data), limits)
    return await run_in_threadpool(decode_upload, data, name, limits)


def _add_guards(app: FastAPI, limits: UploadLimits) -> None:
    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        # Refuse before the body is read: the multipart parser would spool all of it.
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "uploads need a Content-Length header"}, 411)
            if int(length) > limits.max_bytes + _MULTIPART_SLACK:
                return JSONResponse({"detail": too_many_bytes("upload", int(length),
                                                              limits).message}, 413)
        return await call_next(request)

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, e: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'][1:])) or 'request'}: {err['msg']}"
                             for err in e.errors())
        return JSONResponse({"detail": f"bad request ({problems}); send the image as the "
                                       f"multipart form field 'image'"}, status_code=400)


def create_app(models: Sequence[ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``models`` (one or two :class:`ServedModel`)."""
    settings = settings or ServeSettings()
    segmenter = Segmenter(models, settings)
    # No interactive docs: their pages load scripts from a CDN.
    app = FastAPI(title="parsenet serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.segmenter = segmenter
    _add_guards(app, settings.limits)
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return _info(segmenter)

    @app.get("/api/examples/{index}.png")
    def example(index: int) -> Response:
        examples = example_pngs()
        if not 0 <= index < len(examples):
            return JSONResponse({"detail": f"no example {index} (there are "
                                           f"{len(examples)})"}, status_code=404)
        return Response(examples[index][1], media_type="image/png")

    @app.post("/api/predict")
    async def predict(image: Annotated[UploadFile, File()], stream: bool = False,
                      images: bool = True) -> Any:
        rgb = await _read_upload(image, settings.limits)
        if stream:
            return StreamingResponse(_progress_stream(segmenter, rgb),
                                     media_type="application/x-ndjson")
        return await run_in_threadpool(segmenter.run, rgb, images=images)

    @app.post("/api/predict.png")
    async def predict_png(image: Annotated[UploadFile, File()], model: int = 0) -> Response:
        if not 0 <= model < len(segmenter.models):
            raise UploadRejected(400, f"model={model}: this server has models 0.."
                                      f"{len(segmenter.models) - 1}")
        rgb = await _read_upload(image, settings.limits)
        data = await run_in_threadpool(segmenter.label_png, rgb, model)
        # Only safe characters in a header: the name is the user's.
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(image.filename or "upload").stem)[:64]
        return Response(data, media_type="image/png", headers={
            "Content-Disposition": f'attachment; filename="{stem}_labels.png"'})

    return app
