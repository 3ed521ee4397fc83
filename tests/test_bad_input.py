"""The bad-input catalogue: each user mistake, and the one line the CLI prints.

Cases 1-3, 4 (a directory as --config) and 12a-e are here; the runs and predict cases (4-11)
are in test_bad_input_runs.py, split off to keep each file under ~400 lines; outputs that must
not replace anything, bad values and errors naming the right file or key in
test_bad_input_outputs.py; a disk filling up, SIGTERM and a killed save in
test_bad_input_disk.py.

Every case runs ``parsenet.cli.main`` as a user would and asserts the exact line on stderr,
exit code 2 and no traceback. The data is tiny and written into tmp_path; training, where a
case needs it, is one iteration of a 1/16-width model on 32 x 32 crops.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from bad_input_data import CLASSES, write_dataset, write_tiny_checkpoint

from parsenet.cli import main
from parsenet.errors import DataError


def write_config(tmp_path: Path, data: Path, *, workers: int = 0, lr: str = "0.01") -> Path:
    """A one-iteration CPU training config; ``lr`` is written as given (a YAML spelling)."""
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "model: {name: parsenet_vgg16, args: {width: 0.0625}}\n"
        f"data: {{root: {data}, crop_size: 32, scale_range: [1.0, 1.0], workers: {workers}}}\n"
        f"train: {{iterations: 1, batch_size: 1, lr: {lr}, device: cpu, amp: off,\n"
        f"        progress: false, checkpoint_every: 1, log_every: 1,\n"
        f"        out_dir: {tmp_path / 'run'}}}\n")
    return config


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI; assert exit code 2 and exactly one line, no traceback; return the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture
def checkpoint(tmp_path: Path, data: Path) -> Path:
    """A checkpoint in the trainer's format for CLASSES, trained on nothing."""
    return write_tiny_checkpoint(tmp_path / "ckpt" / "last.pt", data)


# ---------------------------------------------------------------------------- case 1
def test_01_a_bad_training_file_behind_a_worker_names_the_file_and_the_worker(
        tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=1)
    bad = data / "images" / "train" / "im0.png"
    bad.write_bytes(b"not an image")  # read only when the worker loads the sample
    config = write_config(tmp_path, data, workers=1)
    line = error_line(capsys, ["train", "--config", str(config)])
    assert line == (f"parsenet: error: {bad}: cannot decode image (not a format Pillow reads) "
                    f"(in DataLoader worker process 0)")


# ---------------------------------------------------------------------------- case 2
def test_02_numbers_in_any_yaml_spelling_train(tmp_path, data, capsys):
    config = write_config(tmp_path, data, lr="1e-3")  # YAML 1.1 would read a string
    assert main(["train", "--config", str(config), "--set", "train.momentum=.5",
                 "--set", "train.weight_decay=1E-4"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert (saved["lr"], saved["momentum"], saved["weight_decay"]) == (1e-3, 0.5, 1e-4)


@pytest.mark.parametrize("override, line", [
    ("train.iterations=abc",
     "--set train.iterations: 'abc' is not an integer (expected an integer >= 1)"),
    ("train.iterations=2.5",
     "--set train.iterations: 2.5 is not an integer (expected an integer >= 1)"),
    ("model.args=foo",
     "--set model.args: 'foo' is not a mapping (expected a mapping of name: value)"),
    ("train.progress=maybe",
     "--set train.progress: 'maybe' is not a boolean (expected true or false)"),
    ("train.lr=abc", "--set train.lr: 'abc' is not a number (expected a number > 0)"),
])
def test_02_a_bad_value_names_the_key_the_value_and_what_is_allowed(
        tmp_path, data, capsys, override, line):
    config = write_config(tmp_path, data)
    assert error_line(capsys, ["train", "--config", str(config), "--set", override]) == \
        f"parsenet: error: {line}"
    assert not (tmp_path / "run").exists()  # refused at load, before anything was written


def test_02_a_bad_value_in_the_file_names_the_file(tmp_path, data, capsys):
    config = write_config(tmp_path, data, lr="1e-3")
    config.write_text(config.read_text().replace("iterations: 1", "iterations: abc"))
    assert error_line(capsys, ["train", "--config", str(config)]) == (
        f"parsenet: error: {config}: train.iterations: 'abc' is not an integer "
        f"(expected an integer >= 1)")


# ---------------------------------------------------------------------------- case 3
def test_03_classes_txt_not_utf8_names_the_file(tmp_path, data, capsys):
    (data / "classes.txt").write_bytes(b"sky\nground\nth\xffng\n")
    config = write_config(tmp_path, data)
    assert error_line(capsys, ["train", "--config", str(config)]) == (
        f"parsenet: error: {data / 'classes.txt'}: class list is not UTF-8 text (byte 0xff "
        f"on line 3); save it as UTF-8")


# ---------------------------------------------------------------------------- case 4
def test_04_train_config_a_directory(tmp_path, capsys):
    assert error_line(capsys, ["train", "--config", str(tmp_path)]) == (
        f"parsenet: error: {tmp_path}: is a directory, not a config file (give a .yaml file)")


# ---------------------------------------------------------------------------- case 12
def test_12a_a_blank_line_in_classes_txt_is_refused_with_its_line(tmp_path, data, capsys):
    # Skipping it would give "ground" and "thing" the ids 1 and 2 that line 3 and 4 mean.
    (data / "classes.txt").write_text("sky\n\nground\nthing\n\n")
    config = write_config(tmp_path, data)
    assert error_line(capsys, ["train", "--config", str(config)]) == (
        f"parsenet: error: {data / 'classes.txt'}: line 2 is blank (each line names one "
        f"class, in id order: remove the line or name the class)")


def test_12a_blank_lines_at_the_end_shift_nothing_and_are_allowed(data):
    from parsenet.data.folder import read_classes

    (data / "classes.txt").write_text("sky\nground\nthing\n\n  \n")
    assert read_classes(data / "classes.txt") == CLASSES


def test_12b_malformed_yaml_keeps_its_line_and_column(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("train:\n  lr: 0.1\n   iterations: 3\n")
    assert error_line(capsys, ["train", "--config", str(config)]) == (
        f"parsenet: error: {config}:3:14: not valid YAML: mapping values are not allowed here")


def test_12c_an_unknown_eval_mode_fails_at_load_not_after_training(tmp_path, data, capsys):
    config = write_config(tmp_path, data)
    assert error_line(capsys, ["train", "--config", str(config), "--set", "eval.mode=foo"]) \
        == ("parsenet: error: --set eval.mode: 'foo' is not allowed (expected one of "
            "'whole', 'slide', 'multiscale')")
    assert not (tmp_path / "run").exists()


def test_12d_a_split_with_other_class_names_is_refused(tmp_path, checkpoint, capsys):
    other = write_dataset(tmp_path / "other", classes=["sky", "grass", "thing"])
    line = error_line(capsys, ["eval", "--checkpoint", str(checkpoint), "--no-progress",
                               "--set", f"data.root={other}"])
    assert line == (f"parsenet: error: {checkpoint}: the model's classes differ from those of "
                    f"the val split of {other}: class 1 is 'ground' in the checkpoint but "
                    f"'grass' in the dataset (1 of 3 differ)")


class _Unpickled:
    """Unpickling this runs code: it writes the file ``_Unpickled.mark``."""

    mark = ""

    def __reduce__(self):
        return exec, (f"open({self.mark!r}, 'w').write('unpickled')",)


def test_12e_an_unsafe_pickle_is_refused_without_torchs_advice(tmp_path, capsys):
    mark = tmp_path / "unpickled.txt"
    _Unpickled.mark = str(mark)
    bad = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": _Unpickled()}, bad)
    line = error_line(capsys, ["eval", "--checkpoint", str(bad)])
    assert line == (f"parsenet: error: {bad}: not a parsenet checkpoint: it holds Python "
                    f"objects (exec) that only unpickling could rebuild, and parsenet "
                    f"does not unpickle files (that can run arbitrary code)")
    assert "weights_only" not in line and not mark.exists()


def test_12c_an_override_of_a_checkpoints_config_is_reported_as_set(checkpoint, capsys):
    assert error_line(capsys, ["eval", "--checkpoint", str(checkpoint), "--set",
                               "eval.window=0"]) == (
        "parsenet: error: --set eval.window: 0 is not allowed (expected an integer >= 1)")


# ---------------------------------------------------------------------------- case 1, parts
class _Failing(torch.utils.data.Dataset):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise self.error


def _from_worker(error: Exception) -> Exception:
    loader = torch.utils.data.DataLoader(_Failing(error), num_workers=1)
    with pytest.raises(type(error)) as info:
        next(iter(loader))
    return info.value


@pytest.mark.parametrize("error, message", [
    (DataError("a.png: broken\nsecond line"),
     "a.png: broken\nsecond line (in DataLoader worker process 0)"),
    (PermissionError("b.png: permission denied"),
     "b.png: permission denied (in DataLoader worker process 0)"),
])
def test_a_workers_error_is_its_own_message_and_the_worker(error, message):
    from parsenet.errors import worker_message

    assert worker_message(_from_worker(error)) == message
    assert worker_message(error) is None  # not from a worker: shown as it is


def test_a_bug_in_a_worker_is_not_a_user_error():
    from parsenet.cli import _is_user_error

    bug = _from_worker(ZeroDivisionError("division by zero"))
    assert not _is_user_error(bug)  # so the CLI re-raises it with its traceback
