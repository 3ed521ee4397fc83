"""``benchmarks.predict_folder``'s arguments reach every predict it runs, and its JSON records
them: no predict runs here (``_run`` and the release probe are stood in for), no timing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repository

import benchmarks.predict_folder as predict_folder  # noqa: E402

OURS = {"mode": "multiscale", "scales": [1.0, 1.25, 1.5], "flip": True}
THEIRS = {"mode": "whole", "scales": [0.75, 1.0, 1.25], "flip": False}


@pytest.fixture
def fake_predict(tmp_path, monkeypatch):
    calls: list[tuple[Path, list[str]]] = []

    def run(src, folder, model, out, extra):
        calls.append((Path(src), list(extra)))
        return 1.0

    monkeypatch.setattr(predict_folder, "_run", run)
    monkeypatch.setattr(predict_folder, "_agreement", lambda a, b: 1.0)
    monkeypatch.setattr(predict_folder, "_protocol",
                        lambda src, model: OURS if Path(src) == REPO / "src" else THEIRS,
                        raising=False)
    # the baseline runs an older checkout, whose predict has no --no-flip
    monkeypatch.setattr(predict_folder, "_has_no_flip",
                        lambda src: Path(src) == REPO / "src", raising=False)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"not read: only copied")
    return folder, calls


def test_mode_reaches_every_predict_and_the_json_records_the_protocols(tmp_path, fake_predict):
    folder, calls = fake_predict
    out, baseline = tmp_path / "result.json", tmp_path / "old" / "src"
    assert predict_folder.main([str(folder), "--model", "camvid", "--rounds", "1", "--mode",
                                "whole", "--baseline-src", str(baseline), "--out",
                                str(out)]) == 0
    # the warm-up, then each variant once; the baseline is given the same protocol, but not
    # --no-flip, which its predict lacks (and its release does not flip)
    whole = ["--mode", "whole", "--no-flip"]
    assert calls == [(REPO / "src", whole), (REPO / "src", whole),
                     (REPO / "src", ["--backend", "eager", *whole]),
                     (baseline, ["--mode", "whole"])]
    meta = json.loads(out.read_text())["meta"]
    assert meta["mode"] == "whole"
    assert meta["predict_args"]["baseline checkout, default"] == ["--mode", "whole"]
    assert meta["release_eval"]["this checkout, default (auto)"] == OURS
    assert meta["predict_has_no_flip"] == {"this checkout, default (auto)": True,
                                           "this checkout, --backend eager": True,
                                           "baseline checkout, default": False}
    # like for like: one pass an image on both sides, our release's flip turned off
    assert meta["passes_per_image"] == {"this checkout, default (auto)": 1,
                                        "this checkout, --backend eager": 1,
                                        "baseline checkout, default": 1}


def test_a_baseline_whose_predict_has_no_flip_gets_it(tmp_path, fake_predict, monkeypatch):
    folder, calls = fake_predict
    monkeypatch.setattr(predict_folder, "_has_no_flip", lambda src: True)
    baseline = tmp_path / "newer" / "src"
    predict_folder.main([str(folder), "--rounds", "1", "--mode", "whole", "--baseline-src",
                         str(baseline), "--out", str(tmp_path / "result.json")])
    assert calls[-1] == (baseline, ["--mode", "whole", "--no-flip"])


def test_the_flip_probe_asks_each_sides_own_parser(tmp_path):
    assert predict_folder._has_no_flip(REPO / "src")
    old = tmp_path / "src" / "parsenet"  # an older checkout's predict: no --no-flip
    old.mkdir(parents=True)
    (old / "__init__.py").write_text("")
    (old / "cli.py").write_text(
        "import argparse\n"
        "def build_parser():\n"
        "    p = argparse.ArgumentParser()\n"
        "    sub = p.add_subparsers(dest='command')\n"
        "    predict = sub.add_parser('predict')\n"
        "    predict.add_argument('inputs', nargs='+')\n"
        "    predict.add_argument('--model')\n"
        "    return p\n")
    assert not predict_folder._has_no_flip(tmp_path / "src")


def test_without_mode_each_side_runs_its_own_default(tmp_path, fake_predict):
    folder, calls = fake_predict
    out = tmp_path / "result.json"
    predict_folder.main([str(folder), "--rounds", "1", "--out", str(out)])
    assert [extra for _, extra in calls] == [[], [], ["--backend", "eager"]]  # flip: own
    meta = json.loads(out.read_text())["meta"]
    assert meta["mode"].startswith("each side's default")
    assert meta["passes_per_image"]["this checkout, default (auto)"] == 6  # 3 scales x flip


def test_passes_per_image_follow_the_mode():
    assert predict_folder._passes(OURS, "multiscale") == 6
    assert predict_folder._passes(OURS, "auto") == 6
    assert predict_folder._passes(THEIRS, None) == 1
    assert predict_folder._passes(OURS, "slide") is None  # windows depend on the size
    assert predict_folder._passes({"error": ["no such release"]}, "whole") is None
    assert predict_folder._passes(OURS, "whole", flip=False) == 1  # predict --no-flip
    assert predict_folder._passes(OURS, "multiscale", flip=False) == 3
