"""The source checkout the package runs from: configs/ and benchmarks/ live there, not in
the installed package, so the commands that read them look here."""

from __future__ import annotations

from pathlib import Path

import parsenet

__all__ = ["repo_root"]


def repo_root() -> Path:
    """The folder that holds ``src/parsenet`` (an editable or in-place install). Installed
    from a wheel this is some other folder, without configs/ or benchmarks/: callers check
    that what they look for is there."""
    return Path(parsenet.__file__).resolve().parents[2]
