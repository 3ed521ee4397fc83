import json
import os
import socket
import subprocess
import sys

import pytest

from parsenet.config import Config, config_to_dict
from parsenet.engine.rundir import (
    APPLIED_ON_RESUME,
    RunLock,
    check_out_dir,
    clear_run,
    resume_changes,
)
from parsenet.errors import ConfigError, UsageError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_names_the_pid_and_is_removed_on_release(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    held = json.loads((tmp_path / "run" / "run.lock").read_text())
    assert held == {"pid": os.getpid(), "host": socket.gethostname()}
    with pytest.raises(UsageError, match=rf"another run \(pid {os.getpid()}\)"):
        RunLock(tmp_path / "run").acquire()
    lock.release()
    assert not (tmp_path / "run" / "run.lock").exists()
    RunLock(tmp_path / "run").acquire().release()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / "run.lock").write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere"}))
    with pytest.raises(UsageError, match="on elsewhere"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("content", ["{pid", ""])
def test_a_cut_or_stale_lock_is_taken_over(tmp_path, content, caplog):
    (tmp_path / "run.lock").write_text(content)
    lock = RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert "took over the lock" in caplog.text
    lock.release()
    pid = dead_pid()
    (tmp_path / "run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    RunLock(tmp_path).acquire().release()
    assert f"pid {pid}, which is no longer running" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing set aside is left


def test_a_used_out_dir_needs_resume_or_overwrite(tmp_path):
    check_out_dir(tmp_path / "new", resume=False, overwrite=False)  # nothing there: fine
    (tmp_path / "run.lock").write_text("{}")  # a lock alone is no earlier run
    check_out_dir(tmp_path, resume=False, overwrite=False)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"holds an earlier run \(checkpoints/best.pt\)"):
        check_out_dir(tmp_path, resume=False, overwrite=False)
    check_out_dir(tmp_path, resume=True, overwrite=False)
    check_out_dir(tmp_path, resume=False, overwrite=True)
    with pytest.raises(UsageError, match="exclude each other"):
        check_out_dir(tmp_path, resume=True, overwrite=True)


def test_overwrite_removes_the_run_files_only(tmp_path):
    for name in ("config.yaml", "log.jsonl", "checkpoints/last.pt", "tensorboard/ev",
                 "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert clear_run(tmp_path) == ["config.yaml", "log.jsonl", "checkpoints/last.pt",
                                   "tensorboard/"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "checkpoints", "notes.txt"]


def test_resume_applies_some_changes_and_refuses_the_others():
    old = config_to_dict(Config())
    new = config_to_dict(Config())
    assert resume_changes(old, new, "last.pt") == []
    new["train"]["iterations"] = 2000
    new["data"]["workers"] = 4
    new["eval"]["mode"] = "slide"  # free: not part of the training state
    assert resume_changes(old, new, "last.pt") == ["data.workers: 1 -> 4",
                                                   "train.iterations: 1000 -> 2000"]
    new["train"]["lr"] = 0.1
    new["train"]["seed"] = 3
    with pytest.raises(ConfigError) as refused:
        resume_changes(old, new, "last.pt")
    assert str(refused.value).startswith("last.pt: cannot resume with changed settings "
                                         "(train.lr: 0.001 -> 0.1; train.seed: 0 -> 3); ")
    assert "train.iterations" in APPLIED_ON_RESUME and "train.lr" not in APPLIED_ON_RESUME
