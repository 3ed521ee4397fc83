"""The source checkout the package runs from: configs/ and benchmarks/ live there, not in
the installed package, so the commands that read them look here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import parsenet

__all__ = ["repo_root", "git_commit"]


def repo_root() -> Path:
    """The folder that holds ``src/parsenet`` (an editable or in-place install). Installed
    from a wheel this is some other folder, without configs/ or benchmarks/: callers check
    that what they look for is there."""
    return Path(parsenet.__file__).resolve().parents[2]


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_commit() -> str:
    """The short commit of the checkout the command runs in (its working folder), or
    "unknown"."""
    return _run("git", "rev-parse", "--short", "HEAD")
