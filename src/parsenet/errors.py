"""The parsenet error family: the only exceptions the CLI shows as one line.

Every error that means "this input (file, config key, checkpoint, weights) cannot be used"
derives from :class:`ParseNetError`, and its message names the file or key and the problem.
Anything else that escapes is a bug and keeps its traceback.

Members that used to be ``ValueError``/``RuntimeError`` still are, so code that caught them
by those names keeps working.
"""

from __future__ import annotations

__all__ = ["ParseNetError", "ConfigError", "DataError", "WeightsError", "CheckpointError",
           "ExportError", "TrainingDivergedError", "UsageError", "ResourceError"]


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
