"""The one exception type of the data package."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset file or folder that cannot be used; the message names the file and the problem."""
