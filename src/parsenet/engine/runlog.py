"""The record of a run: ``log.jsonl`` (one JSON object per line) and TensorBoard scalars.

Every record has ``kind`` ("train", "val" or "event"), ``iteration`` and ``time`` (seconds
since the run started, wall clock), plus its values. TensorBoard is used when the
``tensorboard`` package is importable (``pip install parsenet[log]``); the JSONL file is
always written and is what ``parsenet summary`` and the plots read.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from parsenet.disk_full import naming_full_disk

__all__ = ["RunLog", "to_jsonable"]

# A line cut by a full disk is dropped on resume, like one cut by a kill.
_RESUME = "free space and continue with --resume (from the last checkpoint)"


def to_jsonable(value: Any) -> Any:
    """Tensors and numpy arrays to (nested) lists and numbers; non-finite floats to None."""
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or numpy scalar
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Append-only run log. With ``enabled=False`` (ranks other than 0) it does nothing.

    ``resume_from``: iteration a resumed run restarts at; records written after it by the
    interrupted process are dropped, so the log reads as one uninterrupted run.
    """

    def __init__(self, out_dir: str | os.PathLike, *, enabled: bool = True,
                 resume_from: int | None = None, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / "log.jsonl"
        self._start = time.perf_counter()
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with naming_full_disk(self.path, "the run log"):
            if resume_from is None:
                self.path.write_text("")
            else:
                self._truncate_after(resume_from)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def _truncate_after(self, iteration: int) -> None:
        if not self.path.exists():
            self.path.write_text("")
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if record.get("iteration", 0) <= iteration:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, kind: str, iteration: int, **values: Any) -> dict[str, Any]:
        record = {"kind": kind, "iteration": iteration,
                  "time": round(time.perf_counter() - self._start, 3), **to_jsonable(values)}
        if not self.enabled:
            return record
        with naming_full_disk(self.path, "the run log", _RESUME), self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{kind}/{key}", value, iteration)
            self._writer.flush()
        return record

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
