"""Where a command writes: nothing the user did not ask to replace is replaced.

An output that is one of the command's own inputs (the checkpoint ``export`` or ``eval``
reads, an image ``predict`` reads) is always refused, even with ``--overwrite``: the
command would destroy what it was given. Paths are compared as files, after resolving
(``os.path.samefile``), so a symlink, a relative spelling or a hard link of the input is
the input. Any other existing file an output would replace needs ``--overwrite``, as a
fresh ``train`` into a used ``train.out_dir`` does.

Folders are created here too, so that a folder that cannot be made (below a file, on a
read-only file system, without permission) is one line naming the option and the reason.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from parsenet.errors import UsageError

__all__ = ["same_file", "refuse_replacing", "refuse_overwrite", "refuse_overwrite_in",
           "make_folder", "make_parent"]


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one existing file (any spelling, symlink or hard link)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one missing or unreadable: not the same existing file
        return False


def refuse_replacing(out: Path, inputs: Iterable[tuple[str | os.PathLike, str]],
                     flag: str = "--out") -> None:
    """Raise :class:`UsageError` if ``out`` is one of ``inputs`` ((path, what it is) pairs)."""
    for path, what in inputs:
        if same_file(out, path):
            spelled = "" if str(path) == str(out) else f" ({path})"
            raise UsageError(f"{flag} {out}: is {what}{spelled}; writing there would "
                             f"replace it: choose another {flag} (an input is never replaced, "
                             f"even with --overwrite)")


def refuse_overwrite(out: Path, inputs: Iterable[tuple[str | os.PathLike, str]], *,
                     overwrite: bool, flag: str = "--out") -> None:
    """Refuse writing the file ``out`` over an input, or over any existing file unless
    ``overwrite``; a directory (or a path below a file) is left to the writer's check."""
    refuse_replacing(out, inputs, flag)
    if out.is_file() and not overwrite:
        raise UsageError(f"{flag} {out}: exists; replace it with --overwrite, or choose "
                         f"another {flag}")


def refuse_overwrite_in(out_dir: Path, outputs: Sequence[tuple[Path, Path]],
                        inputs: Sequence[Path], *, overwrite: bool,
                        command: str = "predict") -> None:
    """``outputs``: (file to write, the input it is written for). Refuse writing any of them
    over one of ``inputs``, or over existing files unless ``overwrite``."""
    for written, source in outputs:
        for path in inputs:
            if same_file(written, path):
                raise UsageError(f"{path}: {command} would replace this input with what it "
                                 f"writes for {source} ({written.name}); choose another --out "
                                 f"(an input is never replaced, even with --overwrite)")
    if overwrite:
        return
    existing = [written.name for written, _ in outputs if written.exists()]
    if existing:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more"
                                           if len(existing) > 3 else "")
        raise UsageError(f"--out {out_dir}: already holds {shown}, which {command} would "
                         f"replace; add --overwrite to replace them, or choose another --out")


def _reason(e: OSError, path: Path) -> str:
    if e.errno == errno.EROFS:
        return "the file system is read-only"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        below = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if below is not None:
            return f"{below} is a file, not a folder"
    if e.errno == errno.ENOENT:  # e.g. below /proc, where no folder can be made
        return "no folder can be created there"
    return e.strerror or str(e)


def make_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the folder ``path`` (and its parents); one line naming ``flag`` if it cannot."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a folder")
    try:
        _writable_folder(path)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write there: {_reason(e, path)}") from None
    return path


def _writable_folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):  # an existing folder on a read-only mount, or locked
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        raise OSError(errno.EROFS if read_only else errno.EACCES, "", str(path))


def make_parent(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the folder that will hold the file ``path``; one line naming ``flag`` if not."""
    path = Path(path)
    try:
        _writable_folder(path.parent)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write there: {_reason(e, path.parent)}"
                         ) from None
    return path
