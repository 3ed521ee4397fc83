"""The benchmark package: its helpers, and a smoke run of ``--quick``.

The smoke test runs every section at toy sizes in a subprocess (about a minute on two idle
cores). It is marked ``slow``: deselect it with ``-m "not slow"``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parsenet.engine.export import ONNX_OPSET

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repository

from benchmarks.common import interleave, paired_ratio  # noqa: E402
from benchmarks.l2norm_bench import saved_bytes  # noqa: E402
from benchmarks.runtimes import static_onnx  # noqa: E402
from benchmarks.scaling import growth_exponent  # noqa: E402
from benchmarks.table import goal_summary, text_table  # noqa: E402

SECTIONS = ("roofline", "context", "l2norm", "precision", "pipeline", "inference", "peers",
            "scaling", "finetune_lite0", "released_camvid")


def test_interleave_rotates_the_order_and_respects_round_limits():
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = interleave(fns, min_rounds=3, max_rounds=3, budget_s=0.0, warmup=1)
    assert calls == list("abc" + "abc" + "acb" + "cab")  # warm-up, then rotated / reversed
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    assert paired_ratio([2.0, 3.0, 10.0], [1.0, 3.0, 2.0]) == 2.0


def test_growth_exponent_recovers_a_power_law():
    pixels = [256**2, 512**2, 1024**2]
    assert growth_exponent(pixels, [3e-6 * p for p in pixels]) == pytest.approx(1.0)
    assert growth_exponent(pixels, [p**1.5 for p in pixels]) == pytest.approx(1.5)


def test_saved_bytes_counts_distinct_storages_and_separates_the_input():
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    total, beyond = saved_bytes(lambda t: t * t, x)  # mul saves x twice: one storage
    assert (total, beyond) == (x.nbytes, 0)
    total, beyond = saved_bytes(lambda t: F.normalize(t, dim=1).exp(), x)
    assert total > x.nbytes and beyond == total - x.nbytes  # exp saves its own output


def test_static_onnx_writes_the_shared_opset_and_the_models_logits(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class DictOut(nn.Module):  # torchvision's segmentation models return {"out": logits}
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.conv(x)}

    torch.manual_seed(0)
    model = DictOut().eval()
    path = static_onnx(model, (9, 11), tmp_path / "m.onnx")
    opsets = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    assert opsets[""] == ONNX_OPSET
    x = torch.randn(1, 3, 9, 11)
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x)["out"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_quick_run_reports_every_section(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["meta"]["quick"] is True and len(results["meta"]["commit"]) == 40
    assert list(results["sections"]) == list(SECTIONS)
    for key, section in results["sections"].items():
        assert section["status"] in ("ok", "skipped"), (key, section["reason"])
        assert section["title"] in proc.stdout
        if section["status"] == "skipped":
            assert section["reason"], key
            continue
        assert section["rows"], key
        for row in section["rows"]:
            if isinstance(row["value"], float):
                assert math.isfinite(row["value"]), (key, row)
            if row["goal"] is not None:
                assert isinstance(row["met"], bool), (key, row)
    met, missed = goal_summary(results)
    assert len(met) + len(missed) >= 5  # the goals of sections 1-5 are all evaluated
    assert text_table(results).strip() in proc.stdout


def _fake_results() -> dict:
    row = {
        "metric": "ours / F.normalize time",
        "value": 0.75,
        "text": "0.750",
        "goal": "<= 0.6",
        "met": False,
        "note": "",
    }
    ok = {
        "metric": "loader / train",
        "value": 50.0,
        "text": "50",
        "goal": ">= 1",
        "met": True,
        "note": "x",
    }
    return {
        "meta": {
            "command": "python -m benchmarks",
            "commit": "a" * 40,
            "uncommitted_files": 0,
            "started_utc": "s",
            "finished_utc": "f",
            "seconds": 1.0,
            "quick": False,
            "cpu": "cpu",
            "cpus": 2,
            "torch": "t",
            "cpu_capability": "AVX2",
            "mkldnn": True,
            "threads": 2,
            "python": "3",
            "loadavg": {
                "start": [1.0, 1.0, 1.0],
                "after_each_section": {"l2norm": [2.0, 1.0, 1.0]},
            },
        },
        "sections": {
            "l2norm": {
                "title": "3. L2Norm",
                "status": "ok",
                "reason": "",
                "rows": [row, ok],
                "details": {},
            },
            "pipeline": {
                "title": "4. Data",
                "status": "skipped",
                "reason": "no module",
                "rows": [],
                "details": {},
            },
        },
    }


def test_the_page_has_one_goals_table_per_machine_kind_with_the_margin_of_each_miss(
        tmp_path):
    from benchmarks.report import render_page

    runs = []
    for kind, capability, cpu in (("AVX512-BF16", "AVX512", "xeon"), (None, "AVX2", "epyc"),
                                  ("AVX512-BF16", "AVX512", "xeon")):
        results = _fake_results()
        results["meta"].update(cpu_capability=capability, cpu=cpu)
        if kind:
            results["meta"]["cpu_kind"] = kind
        path = tmp_path / f"{capability}-{len(runs)}.json"
        path.write_text(json.dumps(results))
        runs.append(path)
    (tmp_path / "AVX2-1.reading.md").write_text("what was tried on the AVX2 run\n")
    # other tools' JSONs in the same folder (predict_folder, backend_accuracy) are left out
    for other in ({"model": "camvid", "seconds": {}}, {"meta": {"command": "x"}, "recipes": {}}):
        runs.append(tmp_path / f"other-{len(runs)}.json")
        runs[-1].write_text(json.dumps(other))
    page = render_page(runs)
    assert page.count("\n## AVX512-BF16: xeon") == 1 and page.count("\n## AVX2: epyc") == 1
    bf16_part, avx2_part = page.split("\n## AVX2: epyc")
    assert "trains under bf16 autocast here" in bf16_part
    # the runs do not record AMX (an AMD EPYC has none): the note names only what they do
    assert "native bf16 (AVX512-BF16)" in bf16_part and "AMX" not in bf16_part
    assert "stays in float32 here" in avx2_part
    assert "what was tried on the AVX2 run" in avx2_part
    # both runs of a kind in its one table; each miss says by how much
    assert bf16_part.count("| ours / F.normalize time | 0.750 | <= 0.6 | **missed**: 25.0% over "
                           "the target |") == 2
    assert "| loader / train | 50 | >= 1 | met |" in avx2_part
    assert "(benchmarks/AVX2-1.json)" in avx2_part


def test_the_kind_note_names_amx_where_a_run_of_that_cpu_recorded_its_bf16_units(tmp_path):
    from benchmarks.report import render_page

    runs = []
    for units in (None, "AVX512-BF16 + AMX"):  # a run from before the field, then one after
        results = _fake_results()
        results["meta"].update(cpu_capability="AVX512", cpu="xeon", cpu_kind="AVX512-BF16",
                               cpu_bf16_units=units)
        runs.append(tmp_path / f"run-{len(runs)}.json")
        runs[-1].write_text(json.dumps(results))
    page = render_page(runs)
    assert page.count("\n## AVX512-BF16: xeon") == 1
    assert "This CPU has native bf16 (AVX512-BF16 + AMX)" in page


def test_a_run_records_the_bf16_units_of_a_cpu_with_native_bf16(monkeypatch):
    from benchmarks import __main__ as bench
    from benchmarks.common import QUICK

    monkeypatch.setattr(bench, "cpu_kind", lambda: "AVX512-BF16")
    monkeypatch.setattr(bench, "cpu_bf16_units", lambda: "AVX512-BF16 + AMX")
    assert bench._meta(QUICK, [])["cpu_bf16_units"] == "AVX512-BF16 + AMX"
    monkeypatch.setattr(bench, "cpu_kind", lambda: "AVX2")
    assert bench._meta(QUICK, [])["cpu_bf16_units"] is None


def test_the_kind_note_of_runs_with_bf16_turned_off_says_float32(tmp_path):
    from benchmarks.report import render_page

    results = _fake_results()
    results["meta"].update(cpu_capability="AVX2", cpu="xeon",
                           cpu_kind="AVX512-BF16 (PARSENET_CPU_BF16=0)",
                           cpu_bf16_units="AVX512-BF16 + AMX")
    (tmp_path / "run.json").write_text(json.dumps(results))
    page = render_page([tmp_path / "run.json"])
    assert "turned off for these runs by PARSENET_CPU_BF16=0" in page
    assert "stays in float32 under it" in page and "bf16 autocast here" not in page
