"""One run per ``train.out_dir``: a pid lock, no silent reuse, and what a resume may change.

``out_dir/run.lock`` holds the pid and host of the run training into the directory. A second
run refuses while that process lives; a lock whose process is gone (a SIGKILL, a power cut)
is taken over with a warning. Under torchrun only rank 0 takes it, since the ranks of one
run share the directory.

A directory that already holds a run (config.yaml, log.jsonl, metrics.json or a checkpoint)
is continued with ``resume`` or replaced with ``overwrite``; anything else is refused, so
that a typo in ``out_dir`` never empties an earlier run's log or deletes its best.pt.

On resume the new config is compared with the one stored in the checkpoint (see
:data:`APPLIED_ON_RESUME`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from parsenet.disk_full import naming_full_disk
from parsenet.errors import ConfigError, ParseNetError, UsageError
from parsenet.output_paths import make_folder

__all__ = ["RunLock", "claim_out_dir", "check_out_dir", "clear_run", "resume_changes",
           "APPLIED_ON_RESUME", "RUN_FILES"]

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
# What the trainer writes into out_dir; what --overwrite removes.
RUN_FILES = ("config.yaml", "log.jsonl", "metrics.json", "checkpoints/last.pt",
             "checkpoints/best.pt")

# Settings a resume takes from the new config. They change how long the run goes, how
# often it reports and where it reads data from, not the state it continues: iterations
# re-targets the poly schedule (documented in train()), the loader yields the same samples
# for any number of workers. Every other train.* or data.* change is refused, since the
# optimizer, scheduler, sampler and RNG states restored from the checkpoint belong to the
# old values (a changed lr would be silently ignored by the restored scheduler). model.*
# changes are refused by checkpoint.check_resumable; eval.* is free.
APPLIED_ON_RESUME = ("train.iterations", "train.checkpoint_every", "train.val_every",
                     "train.log_every", "train.max_val_images", "train.progress",
                     "train.device", "train.out_dir", "train.frozen_prefix.cache", "data.root",
                     "data.workers")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``out_dir/run.lock``, created exclusively; :meth:`release` removes it."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        make_folder(self.path.parent, "train.out_dir")
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        # The lock appears with its content (a hard link of a written file), so another run
        # never reads a half-written lock and takes it for a stale one.
        mine = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
        try:
            with naming_full_disk(self.path, "the run lock"):
                mine.write_text(json.dumps(me))
            for _ in range(3):  # create; or find it stale, move it aside, create again
                try:
                    os.link(mine, self.path)
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                self.held = True
                return self
        finally:
            mine.unlink(missing_ok=True)
        raise UsageError(f"{self.path}: cannot take the run lock (another run keeps taking "
                         f"it); choose another train.out_dir")

    def _take_over_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:  # released meanwhile: try again
            return
        except (json.JSONDecodeError, UnicodeDecodeError):
            holder = {}  # a lock cut by a crash while being written
        pid, host = holder.get("pid"), holder.get("host")
        if isinstance(pid, int) and (host != socket.gethostname() or _pid_alive(pid)):
            where = f"pid {pid}" + (f" on {host}" if host != socket.gethostname() else "")
            raise UsageError(f"{self.path.parent}: another run ({where}) is training into "
                             f"this directory; wait for it to end or choose another "
                             f"train.out_dir")
        # Renaming is atomic: of two runs finding the same stale lock, one moves it and
        # both then race on O_EXCL, which exactly one wins.
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)
        log.warning("%s: took over the lock of run pid %s, which is no longer running",
                    self.path, pid)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def check_out_dir(out_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run into a directory that holds an earlier one (see the module doc)."""
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise UsageError("resume and overwrite exclude each other: --resume continues the "
                         "run in train.out_dir, --overwrite replaces it")
    if resume or overwrite:
        return
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if found:
        raise UsageError(f"{out_dir}: holds an earlier run ({', '.join(found)}); continue it "
                         f"with --resume, replace it with --overwrite, or choose another "
                         f"train.out_dir")


def clear_run(out_dir: str | os.PathLike) -> list[str]:
    """Remove an earlier run's files from ``out_dir`` (``overwrite``); returns their names."""
    out_dir = Path(out_dir)
    removed = [name for name in RUN_FILES if (out_dir / name).is_file()]
    for name in removed:
        (out_dir / name).unlink()
    if (out_dir / "tensorboard").is_dir():  # its event files would mix the two runs
        shutil.rmtree(out_dir / "tensorboard")
        removed.append("tensorboard/")
    return removed


def _flat(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: values}


def resume_changes(stored: dict[str, Any], current: dict[str, Any], where: str
                   ) -> list[str]:
    """Compare the checkpoint's config with this run's (both full config dicts).

    Returns the applied changes as ``"key: old -> new"``; raises :class:`ConfigError`
    listing every change that a resume cannot apply. ``model.*`` is left to
    :func:`parsenet.engine.checkpoint.check_resumable`, ``eval.*`` and ``name`` are free.
    """
    old = {k: v for k, v in _flat(stored).items() if k.startswith(("train.", "data."))}
    new = {k: v for k, v in _flat(current).items() if k.startswith(("train.", "data."))}
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    refused = [c for c in changed if c.split(":", 1)[0] not in APPLIED_ON_RESUME]
    if refused:
        raise ConfigError(f"{where}: cannot resume with changed settings ({'; '.join(refused)})"
                          f"; a resume applies only {', '.join(APPLIED_ON_RESUME)}. Resume "
                          f"with the checkpoint's values, or start a new run (--overwrite or "
                          f"another train.out_dir)")
    return changed


def _remove_partial_checkpoints(directory: Path) -> None:
    """A save killed before its rename (SIGKILL, power loss) leaves its temporary file; with
    the lock held no other run is saving here, so each such file is stale."""
    from parsenet.engine.checkpoint import remove_partial_checkpoints

    removed = remove_partial_checkpoints(directory)
    if removed:
        log.warning("%s: removed %s, left by an interrupted checkpoint save", directory,
                    ", ".join(p.name for p in removed))


def claim_out_dir(out_dir: str | os.PathLike, ctx: Any, *, resume: bool, overwrite: bool
                  ) -> RunLock | None:
    """Rank 0 takes the lock and checks the directory; every rank raises its refusal.

    ``ctx`` is a :class:`parsenet.engine.distributed.DistContext`. Returns the held lock on
    rank 0 (release it when the run ends), None elsewhere.
    """
    lock, error = None, None
    if ctx.is_main:
        try:
            lock = RunLock(out_dir).acquire()
            check_out_dir(out_dir, resume=resume, overwrite=overwrite)
            if overwrite and (removed := clear_run(out_dir)):
                log.warning("%s: --overwrite removed the earlier run's %s", out_dir,
                            ", ".join(removed))
            _remove_partial_checkpoints(Path(out_dir) / "checkpoints")
        except ParseNetError as e:
            if lock is not None:
                lock.release()
            error = e
    if ctx.enabled:  # the other ranks would otherwise wait for rank 0 in a collective
        import torch.distributed

        box = [str(error) if error is not None else None]
        torch.distributed.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            raise UsageError(box[0])
    if error is not None:
        raise error
    return lock
