"""Trainer tests that need real processes: SIGKILL and SIGTERM followed by a resume, and a
two-process gloo DistributedDataParallel run under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from trainer_fixtures import final_weights, tiny_config, tiny_factory, write_tiny_dataset

from parsenet.config import save_config
from parsenet.engine.checkpoint import load_checkpoint
from parsenet.engine.trainer import train

ENTRY = Path(__file__).resolve().parent / "train_entry.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same arithmetic as the in-process runs


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def resume_config(data_root, out):
    # Dropout on and one loader worker: the resumed run must restore the dropout stream and
    # not depend on which worker loaded (and augmented) which sample.
    config = tiny_config(data_root, out, iterations=12, checkpoint_every=2)
    config.model.args.update(dropout=0.5, context_dropout=0.3)
    config.data.workers = 1
    return config


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """The uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    train(resume_config(data_root, out), dataset_factory=tiny_factory())
    return final_weights(out)


def start(config, tmp_path, *args):
    path = tmp_path / f"config{len(list(tmp_path.glob('config*.yaml')))}.yaml"
    save_config(config, path)
    log = open(tmp_path / f"{path.stem}.log", "w")
    return subprocess.Popen([sys.executable, str(ENTRY), str(path), *args], env=ENV,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_for_checkpoint(proc, path, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_same_weights(data_root, tmp_path, reference, sig):
    out = tmp_path / "run"
    config = resume_config(data_root, out)
    last = out / "checkpoints" / "last.pt"
    proc = start(config, tmp_path, "--delay", "0.05")  # ~0.1 s per iteration
    wait_for_checkpoint(proc, last)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    stopped_at = load_checkpoint(last)["iteration"]
    assert 2 <= stopped_at < 12, "the signal must arrive mid-run"
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:  # SIGTERM: checkpoint at the end of the current iteration, exit status 143
        assert code == 128 + signal.SIGTERM, (tmp_path / "config0.log").read_text()
        events = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
        assert events[-1]["event"] == "sigterm" and events[-1]["iteration"] == stopped_at

    resumed = start(config, tmp_path, "--resume")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "config1.log").read_text()
    assert load_checkpoint(last)["iteration"] == 12
    assert_same_weights(final_weights(out), reference)


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_on_the_same_global_batch(data_root, tmp_path):
    # No dropout (masks are drawn per process, so they depend on the split of the batch) and
    # no BatchNorm (per-process statistics); augmentation is seeded per sample position, so
    # it is identical. 2 ranks x batch 2 vs 1 process x batch 4.
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    config = tiny_config(data_root, ddp_out, iterations=3, batch_size=2, checkpoint_every=3)
    path = tmp_path / "ddp.yaml"
    save_config(config, path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ENTRY), str(path)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    single = tiny_config(data_root, single_out, iterations=3, batch_size=4, checkpoint_every=3)
    train(single, dataset_factory=tiny_factory())

    start_event = json.loads((ddp_out / "log.jsonl").read_text().splitlines()[0])
    assert start_event["world_size"] == 2 and start_event["images_per_iteration"] == 4
    ddp, one = final_weights(ddp_out), final_weights(single_out)
    init = load_checkpoint(ddp_out / "checkpoints" / "last.pt")
    assert init["sampler"]["world_size"] == 2 and init["sampler"]["consumed"] == 6
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], rtol=1e-5, atol=1e-5, msg=k)
