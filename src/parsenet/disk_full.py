"""A full disk while writing a file: one line naming the file, never a traceback.

``write(2)`` failing with ENOSPC reaches us in several shapes: an ``OSError`` without a file
name (a write has a descriptor, not a path), or, from torch's zip writer, a
``RuntimeError("... unexpected pos 459712 vs 459600")`` whose ``__context__`` is that
``OSError`` (older torch versions put "error code 28" in the text instead). :func:`is_disk_full`
recognises each; :func:`naming_full_disk` turns them into :class:`DiskFullError`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from parsenet.errors import ResourceError

__all__ = ["DiskFullError", "is_disk_full", "naming_full_disk", "DISK_FULL_ERRNOS"]

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(ResourceError):
    """No space (or no quota) left on the device that holds the named file."""


def _is_disk_full_alone(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in DISK_FULL_ERRNOS
    if isinstance(e, RuntimeError):
        text = str(e)
        return any(f"error code {n}" in text for n in DISK_FULL_ERRNOS) \
            or "No space left on device" in text
    return False


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e``, or an exception it was raised from or during, is a full disk."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        if _is_disk_full_alone(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def naming_full_disk(path: str | os.PathLike, what: str, then: str = "free space and try again"
                     ) -> Iterator[None]:
    """Re-raise a full disk inside the block as ``"<path>: cannot write <what>: no space left
    on the device; <then>"``; anything else passes unchanged."""
    try:
        yield
    except Exception as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(f"{path}: cannot write {what}: no space left on the device; "
                            f"{then}") from None
