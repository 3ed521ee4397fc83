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

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from parsenet.apps.serve.guards import add_guards, queued_upload
from parsenet.apps.serve.models import ServedModel
from parsenet.apps.serve.registry import ModelRegistry
from parsenet.apps.serve.segmenter import Segmenter, ServeSettings, new_admission
from parsenet.apps.serve.streaming import progress_stream, watched
from parsenet.apps.serve.uploads import UploadRejected
from parsenet.errors import ParseNetError, UsageError

__all__ = ["ServeSettings", "Segmenter", "create_app"]

STATIC = Path(__file__).with_name("static")


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


def _add_page(app: FastAPI) -> None:
    """The page and its static files."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page


def _add_info_routes(app: FastAPI, registry: ModelRegistry, settings: ServeSettings) -> None:
    """What the page asks before an upload: the choices, their models, limits and examples."""

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


def _add_predict_routes(app: FastAPI,
                        segmenter_for: Callable[[str | None], Segmenter]) -> None:
    """The uploads: ``segmenter_for(choice)`` gives the choice's segmenter (None: the
    default), loading its models on first use."""

    @app.post("/api/predict")
    async def predict(request: Request, image: Annotated[UploadFile, File()],
                      stream: bool = False, images: bool = True, choice: str | None = None
                      ) -> Any:
        segmenter = await run_in_threadpool(segmenter_for, choice)  # may load the models
        data, name = await queued_upload(image, segmenter)
        if stream:  # bad uploads still get their 4xx: decoded before the stream starts
            rgb, held = await watched(request, lambda gone: segmenter.admit(data, name, gone))
            return progress_stream(segmenter, rgb, held, threading.Event())
        return await watched(request, lambda gone: segmenter.segment(
            data, name, gone, lambda rgb: segmenter.run(rgb, images=images, gone=gone)))

    @app.post("/api/predict.png")
    async def predict_png(request: Request, image: Annotated[UploadFile, File()],
                          model: int = 0, choice: str | None = None) -> Response:
        segmenter = await run_in_threadpool(segmenter_for, choice)
        if not 0 <= model < len(segmenter.models):
            raise UploadRejected(400, f"model={model}: this server has models 0.."
                                      f"{len(segmenter.models) - 1}")
        upload, name = await queued_upload(image, segmenter)
        data = await watched(request, lambda gone: segmenter.segment(
            upload, name, gone, lambda rgb: segmenter.label_png(rgb, model, gone)))
        # Only safe characters in a header: the name is the user's.
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(image.filename or "upload").stem)[:64]
        return Response(data, media_type="image/png", headers={
            "Content-Disposition": f'attachment; filename="{stem}_labels.png"'})


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
    add_guards(app, settings.limits)
    _add_page(app)
    _add_info_routes(app, registry, settings)
    _add_predict_routes(app, segmenter_for)
    return app
