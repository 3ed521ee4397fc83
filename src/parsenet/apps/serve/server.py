"""Starting ``parsenet serve``: resolve the models, build the app, run uvicorn."""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from collections.abc import Sequence

from parsenet.apps.serve.app import create_app
from parsenet.apps.serve.models import (
    DEMO_DIR,
    default_model,
    known_models,
    load_served_models,
    named_checkpoints,
)
from parsenet.apps.serve.registry import ModelChoice, ModelRegistry
from parsenet.apps.serve.segmenter import ServeSettings
from parsenet.errors import UsageError

__all__ = ["resolve_checkpoints", "model_choices", "serve"]


def resolve_checkpoints(model: str | None, checkpoints: Sequence[str | os.PathLike]
                        ) -> list[tuple[str | None, str | os.PathLike]]:
    """(title, path) pairs from ``--model NAME`` or ``--checkpoint PATH`` (one or two);
    neither means :func:`default_model` (the released pair where it ships, else the demo)."""
    if model and checkpoints:
        raise UsageError("give --model NAME or --checkpoint PATH, not both")
    if checkpoints:
        if len(checkpoints) > 2:
            raise UsageError(f"serve compares at most two models, got {len(checkpoints)} "
                             f"--checkpoint options")
        return [(None, path) for path in checkpoints]
    return list(named_checkpoints(model or default_model()))


def model_choices(model: str | None, checkpoints: Sequence[str | os.PathLike], *,
                  demo_dir: str | os.PathLike = DEMO_DIR) -> list[ModelChoice]:
    """The picker's choices: first what ``--model``/``--checkpoint`` asked for (see
    :func:`resolve_checkpoints`), then every released model (each beside its baseline) and
    the demo's pair when ``make demo`` has left it in ``demo_dir``."""
    first_key = "checkpoints" if checkpoints else (model or default_model())
    choices = [ModelChoice(first_key, tuple(resolve_checkpoints(model, checkpoints)))]
    for name in known_models():
        if name == first_key or name.endswith("_baseline") and name[:-9] in known_models():
            continue  # a baseline is shown beside its ParseNet
        try:
            choices.append(ModelChoice(name, tuple(named_checkpoints(name, demo_dir=demo_dir))))
        except UsageError:  # the demo's models are not there: not offered
            continue
    return choices


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str | None = None, checkpoints: Sequence[str | os.PathLike] = (), *,
          host: str = "127.0.0.1", port: int = 7860, settings: ServeSettings | None = None,
          backend: str = "auto", flip: bool | None = None) -> None:
    """Load the models and serve the page until interrupted; ``flip`` (test-time flip of
    every model; None: each model's own eval.flip)."""
    import uvicorn

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: a TCP port is 0..65535 (0: any free port)")
    budget = (settings or ServeSettings()).memory_budget_gb
    registry = ModelRegistry(model_choices(model, checkpoints), loader=functools.partial(
        load_served_models, backend=backend, memory_budget_gb=budget, flip=flip))
    sock = _listen(host, port)  # a taken port fails before seconds of model loading
    port = sock.getsockname()[1]  # the one bound: --port 0 asks the system for a free one
    served = registry.models()  # the first choice now: a bad checkpoint fails here
    app = create_app(registry, settings)
    names = ", ".join(f"{m.name} ({m.checkpoint})" for m in served)
    others = ", ".join(c.key for c in registry.choices[1:])
    print(f"parsenet serve: {names}" + (f"; the page can switch to {others}" if others else ""),
          flush=True)
    if not _is_loopback(host):
        print(f"parsenet serve: listening on {host}: the page is reachable from other "
              f"machines, and it has no authentication")
    shown = f"[{host}]" if ":" in host else host
    print(f"open http://{shown}:{port}/  (Ctrl+C stops)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, so a taken port is one clear line before the URL is
    printed (uvicorn would log it after)."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose "
                         f"another --port or --host") from None
    return sock
