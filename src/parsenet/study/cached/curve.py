"""The training-loss curve of a run, drawn from its log.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_curve"]


def plot_curve(log_file: str | Path, out: str | Path, title: str = "") -> Path:
    """Loss against iteration (the ``train`` records), with the final val mean IU in the
    title when the log has it; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the machines that run studies
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_file).read_text().splitlines() if line]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot([r["iteration"] for r in train], [r["loss"] for r in train], lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    if val:
        title += f"  (val mean IU {100 * val[-1]['mean_iou']:.1f})"
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
