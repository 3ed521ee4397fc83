"""The lab beside the package: the CPU claims harness, the generators of docs/RESULTS.md and
the maintainers' tools. It runs from a source checkout (``python -m lab.study ...`` from the
repository root) and uses only parsenet's public API; nothing in ``parsenet`` imports it."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the checkout the lab lives in
