"""Bad-input catalogue, faults during a run: a disk that fills up during each file train
writes, SIGTERM, and what a SIGKILL leaves behind. Each case runs ``parsenet.cli.main`` (or
the CLI in a process, for signals) and checks the one line printed, the exit status and
that the previous checkpoint still loads."""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bad_input_data import write_dataset, write_train_yaml

from parsenet.cli import main
from parsenet.engine import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


def train_yaml(tmp_path: Path, data_root: Path, **train) -> Path:
    return write_train_yaml(tmp_path, data_root,
                            **{"iterations": 2, "batch_size": 2, "checkpoint_every": 1,
                               "log_every": 1, **train})

def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- disk full
class _Filling:
    """A file on a disk with ``room`` bytes left: write() stores what fits, then raises
    ENOSPC as write(2) does (torch's zip writer then raises its "unexpected pos" error)."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data):
        n = len(data) if isinstance(data, str) else memoryview(data).nbytes
        if n > self.room:
            self.file.write(data[:self.room] if isinstance(data, str)
                            else bytes(memoryview(data).cast("B")[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= n
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


class FullDisk:
    """Fills up during the ``nth`` opening for writing of the file called ``name``, after
    ``room`` more bytes. Text files are opened through ``Path.open`` (``write_text`` too);
    checkpoints through ``torch.save`` inside ``save_checkpoint``."""

    def __init__(self, monkeypatch, name: str, nth: int, room: int) -> None:
        self.name, self.nth, self.room, self.opened = name, nth, room, 0
        self.saving: list[str] = []
        real_open, real_save, real_checkpoint = pathlib.Path.open, torch.save, \
            ckpt.save_checkpoint

        def path_open(path, mode="r", *args, **kwargs):
            f = real_open(path, mode, *args, **kwargs)
            return self._maybe_filling(path.name, f) if set(mode) & set("wa") else f

        def save(obj, f, *args, **kwargs):
            return real_save(obj, self._maybe_filling(self.saving[-1], f), *args, **kwargs)

        def save_checkpoint(path, state):
            self.saving.append(Path(path).name)
            return real_checkpoint(path, state)

        monkeypatch.setattr(pathlib.Path, "open", path_open)
        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(ckpt, "save_checkpoint", save_checkpoint)

    def _maybe_filling(self, name: str, f):
        if not name.startswith(self.name):
            return f
        self.opened += 1
        return _Filling(f, self.room) if self.opened == self.nth else f


RESUME = "free space and continue with --resume (from the last checkpoint)"

# (file, which opening, bytes that fit, the message after "<run>/<file>: ", the iteration
# of the checkpoint that must still load, or None when none had been written yet).
# The trainer opens log.jsonl once to start it, then once per record: start, iteration 1,
# (last.pt 1), iteration 2, (last.pt 2; the final validation, best.pt), end, metrics.json.
DISK_FULL_CASES = [
    ("run.lock", 1, 0, "cannot write the run lock: no space left on the device; free space "
                       "and try again", None),
    ("config.yaml", 1, 100, "cannot write the run's config: no space left on the device; "
                            "free space and try again", None),
    ("log.jsonl", 2, 10, f"cannot write the run log: no space left on the device; {RESUME}",
     None),
    ("log.jsonl", 4, 10, f"cannot write the run log: no space left on the device; {RESUME}",
     1),
    ("last.pt", 1, 1000, "cannot write checkpoint: no space left on the device (nothing "
                         "written); free space and try again", None),
    ("last.pt", 2, 1000, "cannot write checkpoint: no space left on the device (the "
                         "previous checkpoint is kept); free space and resume", 1),
    ("last.pt", 2, 300_000, "cannot write checkpoint: no space left on the device (the "
                            "previous checkpoint is kept); free space and resume", 1),
    ("best.pt", 1, 1000, "cannot write checkpoint: no space left on the device (nothing "
                         "written); free space and try again", 2),
    ("metrics.json", 1, 10, "cannot write the run's results: no space left on the device; "
                            "free space; the run's weights are in {last}", 2),
]


@pytest.mark.parametrize("name, nth, room, message, survivor", DISK_FULL_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in DISK_FULL_CASES])
def test_case_5_the_disk_fills_during_a_write(data_root, tmp_path, capsys, monkeypatch,
                                              name, nth, room, message, survivor):
    config = train_yaml(tmp_path, data_root)
    disk = FullDisk(monkeypatch, name, nth, room)
    assert main(["train", "--config", str(config)]) == 2
    assert disk.opened >= nth  # the fault was reached
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    where = run / ("checkpoints" if name.endswith(".pt") else "") / name
    assert one_line(capsys) == f"parsenet: error: {where}: {message.format(last=last)}"
    monkeypatch.undo()
    if survivor is None:
        assert not last.exists()
    else:
        assert ckpt.load_checkpoint(last)["iteration"] == survivor
    left = sorted(p.name for p in (run / "checkpoints").glob("*")) if last.parent.exists() \
        else []
    assert not [n for n in left if n.endswith(".tmp")] and not (run / "run.lock").exists()


def test_case_5_a_run_resumes_after_the_disk_filled(data_root, tmp_path, capsys, monkeypatch):
    config = train_yaml(tmp_path, data_root, iterations=3)
    FullDisk(monkeypatch, "last.pt", 2, 5000)
    assert main(["train", "--config", str(config)]) == 2
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--resume"]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert ckpt.load_checkpoint(last)["iteration"] == 3


# ---------------------------------------------------------------- SIGTERM, SIGKILL
def test_case_9_sigterm_says_where_it_saved_and_how_to_resume(data_root, tmp_path):
    config = train_yaml(tmp_path, data_root, iterations=10_000, val_every=0)
    log = tmp_path / "run" / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "parsenet.cli", "train", "--config",
                             str(config), "--set", "train.seed=3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and '"kind": "train"' in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert proc.returncode == 143, err
    assert err.strip() == (f"parsenet: stopped by SIGTERM; saved {last}; resume with parsenet "
                           f"train --config {config} --set train.seed=3 --resume")
    assert out == ""
    assert ckpt.load_checkpoint(last)["iteration"] >= 1


def test_case_9_resume_removes_only_the_files_a_killed_save_left(data_root, tmp_path,
                                                                  caplog):
    config = train_yaml(tmp_path, data_root)
    assert main(["train", "--config", str(config)]) == 0
    folder = tmp_path / "run" / "checkpoints"
    # What a SIGKILL during save_checkpoint leaves: mkstemp's name, possibly 0 bytes.
    (folder / ".last.pt.k3x_9q2a.tmp").write_bytes(b"")
    (folder / ".best.pt.0a1b2c3d.tmp").write_bytes(b"PK\x03\x04partial")
    others = [".last.pt.tmp", "notes.tmp", ".mine.txt.abcdefgh.tmp", ".last.pt.toolong99.tmp"]
    for name in others:  # not our pattern: the user's, never touched
        (folder / name).write_text("mine")
    assert main(["train", "--config", str(config), "--resume", "--set",
                 "train.iterations=3"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(["last.pt", "best.pt", *others])
    assert f"{folder}: removed .best.pt.0a1b2c3d.tmp, .last.pt.k3x_9q2a.tmp, left by an " \
           f"interrupted checkpoint save" in caplog.messages
