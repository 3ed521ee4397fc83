"""Starting ``parsenet serve``: resolve the models, build the app, run uvicorn."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence

from parsenet.apps.serve.app import ServeSettings, create_app
from parsenet.apps.serve.models import default_model, load_served_models, named_checkpoints
from parsenet.errors import UsageError

__all__ = ["resolve_checkpoints", "serve"]


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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str | None = None, checkpoints: Sequence[str | os.PathLike] = (), *,
          host: str = "127.0.0.1", port: int = 7860, settings: ServeSettings | None = None,
          backend: str = "auto") -> None:
    """Load the models and serve the page until interrupted."""
    import uvicorn

    pairs = resolve_checkpoints(model, checkpoints)
    sock = _listen(host, port)  # a taken port fails before seconds of model loading
    budget = (settings or ServeSettings()).memory_budget_gb
    served = load_served_models(pairs, backend=backend, memory_budget_gb=budget)
    app = create_app(served, settings)
    names = ", ".join(f"{m.name} ({m.checkpoint})" for m in served)
    print(f"parsenet serve: {names}", flush=True)
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
