"""What answers a request before any work: the body-size gate (before the body is read), the
queue place an upload takes while it is read, and the exception handlers that turn refusals
into one-line HTTP answers (4xx, 503, 499).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from parsenet.apps.serve.admission import Busy, ClientGone
from parsenet.apps.serve.segmenter import Segmenter
from parsenet.apps.serve.uploads import UploadLimits, UploadRejected, too_many_bytes

__all__ = ["add_guards", "queued_upload"]

# Room for the multipart boundaries and headers around the file itself.
_MULTIPART_SLACK = 64 * 1024


async def queued_upload(image: UploadFile, segmenter: Segmenter) -> tuple[bytes, str]:
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


def add_guards(app: FastAPI, limits: UploadLimits) -> None:
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
