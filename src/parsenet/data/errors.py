"""The one exception type of the data package (a member of parsenet.errors)."""

from __future__ import annotations

from parsenet.errors import DataError

__all__ = ["DataError"]
