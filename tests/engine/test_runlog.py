import json
import math

import numpy as np
import pytest
import torch

from parsenet.engine.runlog import RunLog, to_jsonable


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_json_lines_with_kind_iteration_and_values(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    log.log("train", 10, loss=0.5, lr=1e-3)
    log.log("val", 10, mean_iou=np.float64(0.25), per_class_iou=torch.tensor([0.5, 0.0]),
            confusion=np.eye(2, dtype=np.int64))
    log.close()
    train, val = read(tmp_path / "log.jsonl")
    assert train["kind"] == "train" and train["iteration"] == 10 and train["loss"] == 0.5
    assert val["mean_iou"] == 0.25 and val["per_class_iou"] == [0.5, 0.0]
    assert val["confusion"] == [[1, 0], [0, 1]]


def test_non_finite_values_become_null_so_the_file_stays_valid_json():
    assert to_jsonable({"loss": math.nan, "x": [math.inf, 1.0]}) == {"loss": None,
                                                                     "x": [None, 1.0]}


def test_resume_drops_records_written_after_the_checkpoint(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    for it in range(1, 7):
        log.log("train", it, loss=float(it))
    with (tmp_path / "log.jsonl").open("a") as f:
        f.write('{"kind": "train", "itera')  # a line cut by SIGKILL
    resumed = RunLog(tmp_path, resume_from=4, tensorboard=False)
    resumed.log("train", 5, loss=50.0)
    assert [(r["iteration"], r["loss"]) for r in read(tmp_path / "log.jsonl")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0)]
    RunLog(tmp_path, tensorboard=False)  # a fresh (not resumed) run starts a new log
    assert read(tmp_path / "log.jsonl") == []


def test_other_ranks_write_nothing(tmp_path):
    log = RunLog(tmp_path / "rank1", enabled=False)
    log.log("train", 1, loss=1.0)
    assert not (tmp_path / "rank1").exists()


def test_tensorboard_scalars_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLog(tmp_path)
    log.log("train", 1, loss=2.0, note="text is not a scalar")
    log.log("train", 2, loss=1.5)
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Tags()["scalars"] == ["train/loss"]
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.0), (2, 1.5)]
