import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parsenet.apps.summary import model_summary
from parsenet.cli import build_parser, main
from parsenet.config import Config, config_to_dict
from parsenet.models import parsenet_vgg16

CLASSES = ["sky", "ground", "thing"]
COMMANDS = ("models", "train", "train-head", "eval", "predict", "export", "convert", "summary",
            "demo", "study", "serve")


def _write_dataset(root: Path, n: int = 2) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            h, w = 40 + 8 * i, 56
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                root / "images" / split / f"im{i}.png")
            label = rng.integers(0, len(CLASSES), (h, w)).astype(np.uint8)
            label[:3] = 255
            Image.fromarray(label).save(root / "labels" / split / f"im{i}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint in the trainer's format, written by its save_checkpoint."""
    ckpt = pytest.importorskip("parsenet.engine.checkpoint")
    base = tmp_path_factory.mktemp("run")
    _write_dataset(base / "data")
    config = Config()
    config.model.args = {"width": 0.0625}
    config.data.root = str(base / "data")
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=len(CLASSES), width=0.0625)
    state = {"format": ckpt.CHECKPOINT_FORMAT, "iteration": 7, "model": model.state_dict(),
             "config": config_to_dict(config), "classes": CLASSES,
             "palette": [[0, 0, 255], [0, 255, 0], [255, 0, 0]],
             "preprocessing": model.preprocessing.to_dict()}
    return ckpt.save_checkpoint(base / "checkpoints" / "last.pt", state)


def test_help_of_every_command(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"parsenet {command}" in capsys.readouterr().out
    parser = build_parser()
    assert set(parser._subparsers._group_actions[0].choices) == set(COMMANDS)


def test_the_parser_loads_without_torch():
    """The commands import the library when they run (parsenet.commands): --help and a
    mistyped option need neither torch nor pydantic."""
    code = ("import sys; from parsenet.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pydantic', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "parsenet.cli", "summary", "--size", "64"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ParseNet: pool6 + fc7, late" in out.stdout


def test_summary_table_matches_model_summary(capsys):
    assert main(["summary", "--size", "96", "--num-classes", "5"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("FCN", "DeepLab", "ParseNet"))]
    assert len(rows) == 4
    model = parsenet_vgg16(num_classes=5, context=False, normalize=False)
    expected = model_summary(model, 96)
    deeplab = next(r for r in rows if r.startswith("DeepLab")).split()
    assert float(deeplab[-2]) == pytest.approx(expected["params"] / 1e6, abs=0.01)
    assert float(deeplab[-1]) == pytest.approx(expected["gflops"], abs=0.1)
    assert "multiply-add = 2 FLOPs" in out


def test_model_summary_counts_a_conv_by_hand():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    info = model_summary(conv, (10, 12))
    assert info["params"] == 3 * 8 * 9 + 8
    assert info["flops"] == 2 * 3 * 8 * 9 * 10 * 12


def test_eval_writes_json_and_table(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["eval", "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and all(name in printed for name in CLASSES)
    result = json.loads(out.read_text())
    assert result["iteration"] == 7 and result["classes"] == CLASSES
    labels = [np.asarray(Image.open(p)) for p in
              sorted((Path(result["data_root"]) / "labels" / "val").glob("*.png"))]
    assert sum(map(sum, result["metrics"]["confusion"])) == sum(int((l != 255).sum())
                                                                for l in labels)
    # Default output goes next to the checkpoint.
    assert main(["eval", "--checkpoint", str(checkpoint), "--no-progress",
                 "--mode", "slide", "--max-images", "1"]) == 0
    assert (checkpoint.parent / "last.eval-val-slide.json").is_file()


def test_the_eval_json_records_the_settings_that_scored_it(checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress",
                 "--mode", "multiscale", "--max-images", "1", "--set", "eval.flip=true",
                 "--set", "eval.scales=[1.0,1.5]"]) == 0
    recorded = json.loads(out.read_text())["eval"]
    assert (recorded["mode"], recorded["scales"], recorded["flip"]) == ("multiscale",
                                                                       [1.0, 1.5], True)


def test_predict_writes_labels_and_overlays(checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name, (h, w) in {"a.jpg": (50, 70), "b.png": (33, 90)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / name)
    out = tmp_path / "pred"
    code = main(["predict", str(images), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--backend", "eager", "--no-progress"])
    assert code == 0
    assert "backend eager" in capsys.readouterr().out
    with Image.open(out / "b.png") as label:
        assert label.mode == "P" and label.size == (90, 33)
        assert np.asarray(label).max() < len(CLASSES)
    with Image.open(out / "a_overlay.jpg") as panel:
        assert panel.size[0] >= 3 * 70
    # The labels are the model's argmax.
    from parsenet.data.decode import read_image
    from parsenet.engine.checkpoint import load_model

    model = load_model(checkpoint).model
    with torch.no_grad():
        x = model.preprocessing(read_image(images / "b.png")).unsqueeze(0)
        expected = model(x).argmax(1)[0].numpy()
    assert (np.asarray(Image.open(out / "b.png")) == expected).mean() > 0.999


@pytest.mark.parametrize("argv, fragment", [
    (["eval", "--checkpoint", "/nonexistent/last.pt"], "no such checkpoint"),
    (["predict", "/nonexistent/dir", "--checkpoint", "x.pt", "--out", "o"], "no such image"),
    (["train", "--config", "/nonexistent/config.yaml"], "no such config"),
])
def test_user_errors_are_one_line_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("parsenet: error:") and fragment in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_override_and_corrupt_checkpoint(checkpoint, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(checkpoint), "--set", "data.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(bad), "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_export_torchscript_command(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.ts"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max abs diff vs eager" in printed


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "x.jpg", "--checkpoint", "c.pt", "--out", "o", "--backend", "trt"])
    assert exit_info.value.code == 2


def test_train_then_eval_end_to_end(tmp_path, capsys):
    pytest.importorskip("parsenet.engine.trainer")
    _write_dataset(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {name: parsenet_vgg16, args: {width: 0.0625}}\n"
        f"data: {{root: {tmp_path / 'data'}, crop_size: 32, scale_range: [1.0, 1.0]}}\n"
        "train: {iterations: 2, batch_size: 2, device: cpu, amp: 'off', progress: false,\n"
        f"        checkpoint_every: 2, log_every: 1, out_dir: {tmp_path / 'run'}}}\n")
    assert main(["train", "--config", str(config), "--set", "train.lr=0.001"]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    assert checkpoint.is_file() and "2 iterations" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(checkpoint), "--no-progress"]) == 0
    result = json.loads((checkpoint.parent / "last.eval-val-whole.json").read_text())
    assert result["iteration"] == 2 and 0.0 <= result["metrics"]["pixel_acc"] <= 1.0


def test_missing_optional_command_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "parsenet.apps.study", None)  # as if not installed
    assert main(["study", "--paper", "--table", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "parsenet: error: the study is not available (parsenet.apps.study is missing)"


# ---------------------------------------------------------------------------- study
def test_study_argument_errors_are_one_line(capsys):
    assert main(["study"]) == 2
    assert "give --table N" in capsys.readouterr().err
    assert main(["study", "--table", "3"]) == 2  # which table 3: the paper's, or a spec's
    err = capsys.readouterr().err.strip()
    assert err.startswith("parsenet: error: study: --table 3: give --paper")
    assert len(err.splitlines()) == 1
