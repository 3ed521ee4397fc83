"""``torch.load`` with ``weights_only=True``, its failures as one parsenet error each.

A file that holds Python objects other than tensors and plain containers cannot be read
without unpickling, and unpickling an untrusted file can run any code. torch's message then
advises ``weights_only=False`` ("will likely succeed"); for a file from elsewhere that is
the wrong advice, so the message here says what the file is and that it stays unread.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch

from parsenet.errors import ParseNetError

__all__ = ["load_weights_only"]


def load_weights_only(path: str | os.PathLike, error: type[ParseNetError], what: str) -> Any:
    """The contents of a torch file, loaded on the CPU without unpickling arbitrary objects.

    Raises ``error`` (a :class:`ParseNetError` class) naming ``path``: for a file that needs
    unpickling (``what``, e.g. "parsenet checkpoint", names what it is not), and for a
    truncated or corrupt one.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found or "weights_only" in str(e):
            holds = f" ({found.group(1)})" if found else ""
            raise error(f"{path}: not a {what}: it holds Python objects{holds} that only "
                        f"unpickling could rebuild, and parsenet does not unpickle files "
                        f"(that can run arbitrary code)") from None
        raise error(_unreadable(path, what, e)) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for a damaged file
        raise error(_unreadable(path, what, e)) from None


def _unreadable(path: str | os.PathLike, what: str, e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{path}: cannot read {what} (truncated or corrupt file?): {type(e).__name__}: {first}"
