"""The GPU check's CPU dry run: every step runs and is recorded (no GPU is needed)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu",
                           "--tiny", "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["tiny"] is True
    assert summary["cuda tests"]["returncode"] == 0  # collected, skipped without a GPU
    assert "skipped" in (tmp_path / "cuda_tests.log").read_text()
    latency = summary["latency_ms"]["toy"]
    assert set(latency) == {"eager fp32", "bf16"} and all(v > 0 for v in latency.values())
    assert summary["study"]["returncode"] == 0
    assert "--dry-run" in summary["study"]["command"]
    assert "--table 3" in summary["study"]["command"]
