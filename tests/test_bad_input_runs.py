"""Bad-input catalogue, runs and predict half (cases 4-11): each case as a user
meets it through ``parsenet.cli.main``, with the exact line it prints (exit status 2, no
traceback) or the behaviour that protects the user's files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input_data import CLASSES, write_dataset, write_tiny_checkpoint, write_train_yaml
from PIL import Image

from parsenet.cli import main
from parsenet.engine import checkpoint as ckpt
from parsenet.engine.rundir import APPLIED_ON_RESUME
from parsenet.models import parsenet_vgg16

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


def train_yaml(tmp_path: Path, data_root: Path, batch_norm: bool = False, **train) -> Path:
    return write_train_yaml(tmp_path, data_root, {"batch_norm": batch_norm},
                            **{"iterations": 2, "batch_size": 2, "checkpoint_every": 1,
                               "log_every": 1, **train})

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_root) -> Path:
    base = tmp_path_factory.mktemp("ckpt")
    return write_tiny_checkpoint(base / "checkpoints" / "last.pt", data_root)

def photo(path: Path, size: tuple[int, int] = (40, 56), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- case 4: OS errors
def test_case_4_predict_out_naming_an_existing_file(checkpoint, tmp_path, capsys):
    image, out = photo(tmp_path / "x.jpg"), tmp_path / "taken.txt"
    out.write_text("mine")
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--no-progress"]) == 2
    assert error_line(capsys) == (f"parsenet: error: {out}: is a file, not a folder; --out "
                                  f"names the folder that predict writes label PNGs and "
                                  f"overlays into")
    assert out.read_text() == "mine"


def test_case_4_export_out_naming_a_directory(checkpoint, tmp_path, capsys):
    adir = tmp_path / "adir"
    adir.mkdir()
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx",
                 "--out", str(adir)]) == 2
    assert error_line(capsys) == (f"parsenet: error: {adir}: is a directory; name the file "
                                  f"to export to, e.g. {adir / 'model.onnx'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]  # no adir.tmp


# ---------------------------------------------------------------- case 5: disk full
def test_case_5_full_disk_while_checkpointing(data_root, tmp_path, capsys, monkeypatch):
    saves, real_save = [], torch.save

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # what torch's zip writer raises for ENOSPC
            f.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "4096 vs 2048: file write failed, error code 28")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save_until_the_disk_fills)
    config = train_yaml(tmp_path, data_root, iterations=3)
    assert main(["train", "--config", str(config)]) == 2
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert error_line(capsys) == (f"parsenet: error: {last}: cannot write checkpoint: no "
                                  f"space left on the device (the previous checkpoint is "
                                  f"kept); free space and resume")
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert ckpt.load_checkpoint(last)["iteration"] == 1
    assert [p.name for p in last.parent.iterdir()] == ["last.pt"]  # no .tmp left


# ---------------------------------------------------------------- case 6: large images
def test_case_6_large_image_slides_by_the_memory_estimate(checkpoint, tmp_path, capsys):
    from parsenet.data.decode import read_image
    from parsenet.engine.checkpoint import load_model
    from parsenet.engine.inference import predict_logits

    image = photo(tmp_path / "big.png", size=(300, 420))
    out = tmp_path / "pred"
    # 1 MB: the tiny model's whole-image estimate for 300 x 420 is above it.
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--backend", "eager", "--memory-budget", "0.001", "--window", "128",
                 "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == (f"1 image(s), backend eager, mode auto "
                                               f"(slide 1): labels and overlays in {out}")
    model = load_model(checkpoint).model
    with torch.no_grad():
        x = model.preprocessing(read_image(image)).unsqueeze(0)
        expected = predict_logits(model, x, "slide", window=128, stride=128).argmax(1)[0]
    got = np.asarray(Image.open(out / "big.png"))
    assert (got == expected.numpy()).mean() > 0.999  # channels_last vs NCHW float order


def test_case_6_out_of_memory_is_one_line_with_the_size_that_fits(checkpoint, tmp_path,
                                                                  capsys, monkeypatch):
    import parsenet.engine.inference as inference
    from parsenet.engine.checkpoint import load_model
    from parsenet.engine.memory import InferenceMemory

    def allocation_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                           "not enough memory: you tried to allocate 14745600000 bytes.")

    monkeypatch.setattr(inference, "predict_labels", allocation_fails)
    image = photo(tmp_path / "huge.jpg", size=(64, 80))
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "o"), "--backend", "eager", "--mode", "whole",
                 "--no-progress"]) == 2
    memory = InferenceMemory.of(load_model(checkpoint).model, len(CLASSES))
    side = memory.largest_whole_side(2e9)
    assert error_line(capsys) == (
        f"parsenet: error: {image}: out of memory predicting this 64x80 image whole "
        f"(estimated {memory.whole(64, 80) / 1e9:.1f} GB); images up to about {side}x{side} "
        f"fit whole in 2.0 GB, larger ones need --mode slide (or auto)")


# ---------------------------------------------------------------- case 7: divergence
def test_case_7_nonfinite_batchnorm_statistics_are_never_checkpointed(data_root, tmp_path,
                                                                     capsys, monkeypatch):
    from parsenet.engine import trainer

    real_step, steps = trainer._Training._step, []

    def step_then_overflow_running_var(self, batches, stop):
        result = real_step(self, batches, stop)
        steps.append(1)
        if len(steps) == 3:  # the loss stays finite; only the statistics overflow
            for module in self.model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_var.fill_(float("inf"))
        return result

    monkeypatch.setattr(trainer._Training, "_step", step_then_overflow_running_var)
    config = train_yaml(tmp_path, data_root, batch_norm=True, iterations=5)
    assert main(["train", "--config", str(config)]) == 2
    model = parsenet_vgg16(num_classes=3, width=0.0625, batch_norm=True)
    bad = [n for n, _ in model.named_buffers() if n.endswith("running_var")]
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert error_line(capsys) == (
        f"parsenet: error: weights are NaN or infinite after iteration 3 ({', '.join(bad[:3])}"
        f" and {len(bad) - 3} more); stopped without saving {last}. The last good checkpoint "
        f"is {last} (iteration 2); lower train.lr or check the data")
    state = ckpt.load_checkpoint(last)
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


# ---------------------------------------------------------------- case 8: resume changes
def test_case_8_resume_with_a_changed_lr_says_what_changed(data_root, tmp_path, capsys,
                                                           caplog):
    config = train_yaml(tmp_path, data_root)
    assert main(["train", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--resume", "--set", "train.lr=0.001"]) == 2
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert error_line(capsys) == (
        f"parsenet: error: {last}: cannot resume with changed settings (train.lr: 0.01 -> "
        f"0.001); a resume applies only {', '.join(APPLIED_ON_RESUME)}. Resume with the "
        f"checkpoint's values, or start a new run (--overwrite or another train.out_dir)")
    # A change a resume applies: said, and applied.
    with caplog.at_level(logging.WARNING, logger="parsenet.engine.trainer"):
        assert main(["train", "--config", str(config), "--resume",
                     "--set", "train.iterations=3"]) == 0
    assert f"{last}: resuming with changed settings (applied): train.iterations: 2 -> 3" \
        in caplog.messages
    assert ckpt.load_checkpoint(last)["iteration"] == 3


# ---------------------------------------------------------------- case 9: one run per dir
def test_case_9_a_fresh_run_into_a_used_out_dir_is_refused(data_root, tmp_path, capsys):
    config = train_yaml(tmp_path, data_root)
    assert main(["train", "--config", str(config)]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    log_before = (run / "log.jsonl").read_text()
    assert main(["train", "--config", str(config)]) == 2
    assert error_line(capsys) == (
        f"parsenet: error: {run}: holds an earlier run (config.yaml, log.jsonl, metrics.json, "
        f"checkpoints/last.pt, checkpoints/best.pt); continue it with --resume, replace it "
        f"with --overwrite, or choose another train.out_dir")
    assert (run / "log.jsonl").read_text() == log_before
    assert (run / "checkpoints" / "best.pt").is_file()
    assert main(["train", "--config", str(config), "--overwrite"]) == 0
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 2


def test_case_9_a_second_concurrent_run_is_refused(data_root, tmp_path, capsys, caplog):
    config = train_yaml(tmp_path, data_root)
    run = tmp_path / "run"
    run.mkdir()
    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "run.lock").write_text(json.dumps({"pid": living.pid,
                                                  "host": os.uname().nodename}))
        assert main(["train", "--config", str(config)]) == 2
        assert error_line(capsys) == (
            f"parsenet: error: {run}: another run (pid {living.pid}) is training into this "
            f"directory; wait for it to end or choose another train.out_dir")
        assert not (run / "log.jsonl").exists()
    finally:
        living.kill()
        living.wait()
    # Its process gone (a SIGKILL), the lock is stale: taken over, and said so.
    with caplog.at_level(logging.WARNING, logger="parsenet.engine.rundir"):
        assert main(["train", "--config", str(config)]) == 0
    assert (f"{run / 'run.lock'}: took over the lock of run pid {living.pid}, which is no "
            f"longer running") in caplog.messages
    assert not (run / "run.lock").exists()  # released at the end


# ---------------------------------------------------------------- case 10: same stems
def test_case_10_inputs_with_the_same_stem_are_refused(checkpoint, tmp_path, capsys):
    a, b = photo(tmp_path / "a" / "x.jpg"), photo(tmp_path / "b" / "x.jpg", seed=1)
    out = tmp_path / "pred"
    assert main(["predict", str(a), str(b), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--no-progress"]) == 2
    assert error_line(capsys) == (f"parsenet: error: {a} and {b} would both be written as "
                                  f"x.png; predict them into separate --out folders or "
                                  f"rename one")
    assert not out.exists()


def test_skip_errors_reports_the_bad_files_at_the_end(checkpoint, tmp_path, capsys):
    from parsenet.data.decode import read_image
    from parsenet.errors import DataError

    folder = tmp_path / "photos"
    photo(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    photo(folder / "c.png", seed=2)
    with pytest.raises(DataError) as bad:
        read_image(folder / "b.jpg")
    assert str(bad.value) == f"{folder / 'b.jpg'}: cannot decode image (not a format Pillow reads)"
    out = tmp_path / "pred"
    argv = ["predict", str(folder), "--checkpoint", str(checkpoint), "--out", str(out),
            "--backend", "eager", "--no-progress"]
    assert main(argv) == 2  # without --skip-errors: the first bad file stops
    assert error_line(capsys) == f"parsenet: error: {bad.value}"
    assert main([*argv, "--skip-errors", "--overwrite"]) == 2  # a.png is there from above
    printed = capsys.readouterr()
    assert printed.out.startswith("2 image(s), backend eager")
    assert printed.err.splitlines() == ["parsenet: skipped 1 of 3 image(s):",
                                        f"  {bad.value}"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]


# ---------------------------------------------------------------- case 11: ONNX cache
def test_case_11_the_export_cache_is_keyed_verified_and_rebuilt_when_corrupt(
        checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from parsenet.engine.onnx_cache import cache_path, digest_matches

    image, cache = photo(tmp_path / "x.png"), tmp_path / "cache"
    argv = ["predict", str(image), "--checkpoint", str(checkpoint), "--out",
            str(tmp_path / "pred"), "--no-progress", "--backend", "onnx",
            "--overwrite"]  # each run replaces the predictions of the one before
    assert main([*argv, "--export-cache", str(cache)]) == 0
    assert "backend onnx" in capsys.readouterr().out
    assert not list(checkpoint.parent.glob("*.onnx"))  # nothing written beside it
    cached = cache_path(checkpoint, cache)
    assert digest_matches(cached)
    cached.write_bytes(b"\x08garbage that is no protobuf")
    with pytest.warns(UserWarning, match="does not match its recorded hash"):
        assert main([*argv, "--export-cache", str(cache)]) == 0
    assert "backend onnx" in capsys.readouterr().out and digest_matches(cached)


def test_the_split_bf16_backend_refuses_in_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    """No native bf16, or (with it) a model whose split point was never measured: one line,
    before anything is exported."""
    from parsenet.engine.backends import openvino_available

    image = photo(tmp_path / "x.png")
    argv = ["predict", str(image), "--checkpoint", str(checkpoint), "--out",
            str(tmp_path / "pred"), "--no-progress", "--backend", "openvino-bf16-split",
            "--export-cache", str(tmp_path / "cache")]
    monkeypatch.setenv("PARSENET_CPU_BF16", "0")
    assert main(argv) == 2
    assert error_line(capsys) == (
        "parsenet: error: --backend openvino-bf16-split needs a CPU with native bf16 "
        "(AVX512-BF16 or AMX); on this one bf16 is emulated and slower than float32: use "
        "--backend openvino")
    if not openvino_available():
        return
    monkeypatch.setenv("PARSENET_CPU_BF16", "1")  # only the refusal runs: no bf16 is computed
    assert main(argv) == 2
    assert error_line(capsys) == (
        "parsenet: error: --backend openvino-bf16-split: no split point was measured for "
        "ParseNet on VGGBackbone (only for the released EfficientNet-Lite0/Lite2 models); "
        "use --backend openvino or openvino-bf16")
    assert not list((tmp_path / "cache").glob("*.onnx"))  # refused before exporting
