"""Bad-input catalogue, outputs and values: nothing the user did not ask to replace is
replaced (export, eval, predict), bad values and devices refused in one line, and errors that
name the right file or key. Each case runs ``parsenet.cli.main`` as a user would and checks
the one line printed on stderr, exit status 2, no traceback, and the files left."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input_data import write_dataset, write_tiny_checkpoint, write_train_yaml
from PIL import Image

from parsenet.cli import main
from parsenet.models import parsenet_vgg16

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py

NEVER = "(an input is never replaced, even with --overwrite)"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def checkpoint(tmp_path, data_root) -> Path:
    return write_tiny_checkpoint(tmp_path / "x.pt", data_root)

def photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def train_yaml(tmp_path: Path, data_root: Path, **train) -> Path:
    return write_train_yaml(tmp_path, data_root, **{"iterations": 1, "batch_size": 1, **train})

def error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.removeprefix("parsenet: error: ")


# ---------------------------------------------------------------- 3: nothing replaced
@pytest.mark.parametrize("fmt, spelling", [("torchscript", "same"), ("onnx", "relative"),
                                           ("onnx", "symlink"), ("torchscript", "hardlink")])
def test_export_never_replaces_the_checkpoint_it_reads(checkpoint, capsys, monkeypatch, fmt,
                                                        spelling):
    before = checkpoint.read_bytes()
    monkeypatch.chdir(checkpoint.parent)
    out = {"same": str(checkpoint), "relative": f"./{checkpoint.name}",
           "symlink": "link.pt", "hardlink": "hard.pt"}[spelling]
    if spelling == "symlink":
        os.symlink(checkpoint, out)
    if spelling == "hardlink":
        os.link(checkpoint, out)
    argv = ["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", out,
            "--no-check", "--overwrite"]
    shown = "" if out == str(checkpoint) else f" ({checkpoint})"
    assert error_line(capsys, argv) == (f"--out {Path(out)}: is the checkpoint this command reads"
                                        f"{shown}; writing there would replace it: choose "
                                        f"another --out {NEVER}")
    assert checkpoint.read_bytes() == before


def test_export_replaces_an_existing_file_only_with_overwrite(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.ts"
    out.write_text("mine")
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out",
            str(out), "--no-check"]
    assert error_line(capsys, argv) == (f"--out {out}: exists; replace it with --overwrite, "
                                        f"or choose another --out")
    assert out.read_text() == "mine"
    assert main([*argv, "--overwrite"]) == 0
    assert zipfile.is_zipfile(out)  # TorchScript's archive, where "mine" was


def test_eval_never_writes_its_json_over_the_checkpoint(checkpoint, capsys):
    hard = checkpoint.with_name("same.pt")
    os.link(checkpoint, hard)
    before = checkpoint.read_bytes()
    assert error_line(capsys, ["eval", "--checkpoint", str(checkpoint), "--out", str(hard),
                               "--no-progress", "--overwrite"]) == (
        f"--out {hard}: is the checkpoint this command reads ({checkpoint}); writing there "
        f"would replace it: choose another --out {NEVER}")
    assert checkpoint.read_bytes() == before


def test_predict_replaces_files_already_in_out_only_with_overwrite(checkpoint, tmp_path,
                                                                   capsys):
    image, out = photo(tmp_path / "in" / "dog.jpg"), tmp_path / "out"
    out.mkdir()
    (out / "dog.png").write_text("the user's own dog.png")
    argv = ["predict", str(image), "--checkpoint", str(checkpoint), "--out", str(out),
            "--backend", "eager", "--no-progress"]
    assert error_line(capsys, argv) == (f"--out {out}: already holds dog.png, which predict "
                                        f"would replace; add --overwrite to replace them, or "
                                        f"choose another --out")
    assert (out / "dog.png").read_text() == "the user's own dog.png"
    assert sorted(p.name for p in out.iterdir()) == ["dog.png"]
    assert main([*argv, "--overwrite"]) == 0
    with Image.open(out / "dog.png") as labels:
        assert labels.mode == "P"  # replaced by the label PNG


def test_predict_never_replaces_an_input_with_another_inputs_overlay(checkpoint, tmp_path,
                                                                     capsys):
    out = tmp_path / "out"
    a, overlay = photo(out / "a.jpg"), photo(out / "a_overlay.jpg", seed=1)
    before = overlay.read_bytes()
    assert error_line(capsys, ["predict", str(a), str(overlay), "--checkpoint",
                               str(checkpoint), "--out", str(out), "--no-progress",
                               "--overwrite"]) == (
        f"{overlay}: predict would replace this input with what it writes for {a} "
        f"(a_overlay.jpg); choose another --out {NEVER}")
    assert overlay.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a_overlay.jpg"]


# ---------------------------------------------------------------- 6: bad values
@pytest.mark.parametrize("options, line", [
    (["--window", "-5"], "--window -5: give at least 32 (the smallest input the model takes; "
                         "a smaller window is padded to 32 at every one of its positions)"),
    (["--mode", "slide", "--window", "1"],
     "--window 1: give at least 32 (the smallest input the model takes; a smaller window is "
     "padded to 32 at every one of its positions)"),
    (["--window", "0"], "--window 0: give at least 32 (the smallest input the model takes; "
                        "a smaller window is padded to 32 at every one of its positions)"),
    (["--memory-budget", "-1"], "--memory-budget -1.0: give a number of GB > 0"),
    (["--memory-budget", "nan"], "--memory-budget nan: give a number of GB > 0"),
    (["--device", "bogus"], "--device must be auto, cpu, cuda or cuda:N, got 'bogus'"),
])
def test_predict_refuses_bad_values(checkpoint, tmp_path, capsys, options, line):
    image, out = photo(tmp_path / "a.jpg"), tmp_path / "out"
    assert error_line(capsys, ["predict", str(image), "--checkpoint", str(checkpoint),
                               "--out", str(out), "--no-progress", *options]) == line
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_cuda_without_a_gpu_is_one_line(checkpoint, tmp_path, capsys, command):
    argv = ([command, str(photo(tmp_path / "a.jpg")), "--out", str(tmp_path / "o")]
            if command == "predict" else [command])
    assert error_line(capsys, [*argv, "--checkpoint", str(checkpoint), "--device", "cuda",
                               "--no-progress"]) == \
        "--device='cuda' but CUDA is not available"


def test_a_crop_beyond_the_devices_memory_is_refused_by_the_estimate(data_root, tmp_path,
                                                                     capsys, monkeypatch):
    from parsenet.engine import crop_memory
    from parsenet.engine.memory import InferenceMemory

    monkeypatch.setattr(crop_memory, "device_memory", lambda device: 16e9)
    config = train_yaml(tmp_path, data_root)
    memory = InferenceMemory.of(parsenet_vgg16(num_classes=3, width=0.0625), 3)
    need = memory.whole(100_000, 100_000)
    assert error_line(capsys, ["train", "--config", str(config), "--set",
                               "data.crop_size=100000"]) == (
        f"data.crop_size 100000: a batch of 1 crop(s) of 100000x100000 needs more than "
        f"{need / 1e9:.0f} GB on cpu, which has 16 GB; give a data.crop_size well below "
        f"{memory.largest_whole_side(16e9)} (or a smaller train.batch_size)")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_lr_beyond_float32_is_refused_at_load(data_root, tmp_path, capsys):
    config = train_yaml(tmp_path, data_root)
    assert error_line(capsys, ["train", "--config", str(config), "--set",
                               "train.lr=1e300"]) == (
        "--set train.lr: 1e+300 is not allowed (times the largest rate multiplier it is "
        "1e+301, beyond float32's 3.4e+38 that the optimizer steps in)")


# ---------------------------------------------------------------- 6, 7: where to write
def test_predict_out_below_a_file_names_the_file(checkpoint, tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    assert error_line(capsys, ["predict", str(image), "--checkpoint", str(checkpoint),
                               "--out", str(image / "out"), "--no-progress"]) == (
        f"--out {image / 'out'}: cannot write there: {image} is a file, not a folder")


@pytest.mark.parametrize("flag", ["--out", "--export-cache"])
def test_predict_where_no_folder_can_be_made(checkpoint, tmp_path, capsys, flag):
    # /proc: no folder can be made there, even by root (whom a chmod'ed folder would not stop).
    image, target = photo(tmp_path / "a.jpg"), "/proc/parsenet-test"
    argv = ["predict", str(image), "--checkpoint", str(checkpoint), "--out",
            str(tmp_path / "o"), "--no-progress", flag, target]
    assert error_line(capsys, argv) == f"{flag} {target}: cannot write there: no folder can " \
                                       f"be created there"


def test_export_out_below_a_file_names_the_file(checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a.txt"
    blocker.write_text("mine")
    out = blocker / "model.onnx"
    assert error_line(capsys, ["export", "--checkpoint", str(checkpoint), "--format", "onnx",
                               "--out", str(out), "--no-check"]) == (
        f"--out {out}: cannot write there: {blocker} is a file, not a folder")


def test_a_read_only_folder_is_named_as_such(tmp_path, monkeypatch):
    from parsenet.errors import UsageError
    from parsenet.output_paths import make_folder

    (tmp_path / "ro").mkdir()

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(UsageError) as info:
        make_folder(tmp_path / "ro", "--onnx-cache")
    assert str(info.value) == (f"--onnx-cache {tmp_path / 'ro'}: cannot write there: the "
                               f"file system is read-only")


@pytest.mark.parametrize("out_dir, reason", [
    ("file", "is a file, not a folder"),
    ("file/run", "cannot write there: {file} is a file, not a folder"),
])
def test_train_out_dir_that_is_or_is_below_a_file(data_root, tmp_path, capsys, out_dir,
                                                  reason):
    file = tmp_path / "file"
    file.write_text("mine")
    config = train_yaml(tmp_path, data_root, out_dir=str(tmp_path / out_dir))
    assert error_line(capsys, ["train", "--config", str(config)]) == \
        f"train.out_dir {tmp_path / out_dir}: {reason.format(file=file)}"
    assert file.read_text() == "mine"


# ---------------------------------------------------------------- 7: naming the right thing
def test_weights_of_another_architecture_name_their_file(data_root, tmp_path, capsys):
    import torchvision
    from safetensors.torch import save_file

    weights = tmp_path / "resnet18.safetensors"
    save_file(torchvision.models.resnet18().state_dict(), str(weights))
    config = train_yaml(tmp_path, data_root)
    line = error_line(capsys, ["train", "--config", str(config), "--set",
                               "model.args.width=1.0", "--set",
                               f"model.args.weights={weights}"])
    assert line == (f"{weights}: cannot load as VGG16Weights weights: expected the 13 convs of "
                    f"VGG-16 under 'features.', found 0")


def test_an_unknown_section_made_by_set_is_blamed_on_set(data_root, tmp_path, capsys):
    config = train_yaml(tmp_path, data_root)
    assert error_line(capsys, ["train", "--config", str(config), "--set",
                               "trian.iterations=3"]) == (
        "--set trian.iterations: trian: unknown key (known: name, model, data, train, eval)")


@pytest.mark.parametrize("text, where", [
    ("train:\n  lr: 0.01\n  lr: 0.5\n", "3:3: not valid YAML: duplicate key 'lr' (first "
                                        "given on line 2)"),
    ("train: {lr: 0.01, lr: 0.5}\n", "1:19: not valid YAML: duplicate key 'lr' (first given "
                                     "on line 1)"),
    ("train: {}\ntrain: {lr: 0.5}\n", "2:1: not valid YAML: duplicate key 'train' (first "
                                      "given on line 1)"),
])
def test_a_duplicate_yaml_key_names_the_key_and_the_file(tmp_path, capsys, text, where):
    config = tmp_path / "dup.yaml"
    config.write_text(text)
    assert error_line(capsys, ["train", "--config", str(config)]) == f"{config}:{where}"


def test_yaml_merge_keys_are_not_duplicates():
    from parsenet.config import load_yaml

    assert load_yaml("a: &base {lr: 1, x: 2}\nb: {<<: *base, lr: 3}\n")["b"] == {"lr": 3, "x": 2}
