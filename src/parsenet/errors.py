"""The parsenet error family: the only exceptions the CLI shows as one line.

Every error that means "this input (file, config key, checkpoint, weights) cannot be used"
derives from :class:`ParseNetError`, and its message names the file or key and the problem.
Anything else that escapes is a bug and keeps its traceback.

Members that are also ``ValueError``/``RuntimeError`` subclasses stay so, so code that
catches them by those names works.
"""

from __future__ import annotations

import re

__all__ = ["ParseNetError", "ConfigError", "DataError", "WeightsError", "CheckpointError",
           "ExportError", "TrainingDivergedError", "UsageError", "ResourceError",
           "worker_message"]


class ParseNetError(Exception):
    """Base of every user-facing parsenet error; the message names the file/key and problem."""


class ConfigError(ParseNetError, ValueError):
    """A config file or override that cannot be used."""


class DataError(ParseNetError, ValueError):
    """A dataset file or folder that cannot be used; the message names the file and the problem."""


class WeightsError(ParseNetError, ValueError):
    """Weights that cannot be read or do not fit the model."""


class CheckpointError(ParseNetError, ValueError):
    """A checkpoint file that is missing, truncated, corrupt or does not fit."""


class ExportError(ParseNetError, RuntimeError):
    """An exported model that cannot be written or whose outputs differ from the eager model's."""


class TrainingDivergedError(ParseNetError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


class UsageError(ParseNetError, ValueError):
    """Arguments that do not go together, or an input that is not what a command takes."""


class ResourceError(ParseNetError, RuntimeError):
    """Not enough memory for the work asked; the message names the input and what would fit."""


# torch re-raises a DataLoader worker's exception in the main process as the same type with
# a new message: "Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...",
# the worker's whole traceback, which ends with "<qualified type name>: <original message>".
_WORKER_HEADER = re.compile(r"Caught (\w+) (in DataLoader worker process \d+)\.\nOriginal ")


def worker_message(error: BaseException) -> str | None:
    """``"<original message> (in DataLoader worker process N)"`` for an exception a
    DataLoader worker raised and torch re-raised, else None."""
    text = str(error)
    header = _WORKER_HEADER.match(text)
    if header is None:
        return None
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    start = text.rfind(f"\n{name}: ")
    original = text[start + len(name) + 3:].strip() if start >= 0 else ""
    return f"{original or name} ({header.group(2)})"
