"""Trainer tests that need real processes: SIGTERM and SIGKILL followed by resumes, and a
two-process gloo DistributedDataParallel run.

The processes come from multiprocessing's forkserver with the trainer preloaded, rather than
from new interpreters (on 2 shared cores an import of torch + torchvision costs more than
these training runs) or from forking the test process (autograd refuses to run in a child
forked after the parent used it). The DDP ranks get torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), as ``torchrun --nproc_per_node=2`` would
give them.
"""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_fixtures import final_weights, run_training, tiny_config

from parsenet.engine.checkpoint import load_checkpoint
from parsenet.engine.sampler import seed_everything
from parsenet.engine.trainer import train
from parsenet.models import parsenet_vgg16

PROCESSES = multiprocessing.get_context("forkserver")
# Importable by the server without the tests directory on its path (trainer_fixtures is
# then imported by each child, cheaply: its dependencies are loaded).
PROCESSES.set_forkserver_preload(["parsenet.engine.trainer", "parsenet.models",
                                  "parsenet.data.build"])


pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: conftest.py


def resume_config(data_root, out):
    # Dropout on, one loader worker, the data package's random scale/crop/flip: the resumed
    # run must restore the dropout stream, and augmentation must not depend on which worker
    # loaded which sample nor on where the run was cut.
    config = tiny_config(data_root, out, iterations=12, checkpoint_every=2)
    config.model.args.update(dropout=0.5, context_dropout=0.3)
    config.data.workers = 1
    return config


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """The uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    train(resume_config(data_root, out))
    return final_weights(out)


STARTED = []


@pytest.fixture(autouse=True)
def no_leftover_children():
    """A failing test must not leave its training processes running."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.is_alive():
            proc.kill()
        proc.join(30)


def start(config, tmp_path, resume=False, delay=0.0, env=None):
    """Train ``config`` in a child process; its output goes to tmp_path/child<N>.log."""
    log = tmp_path / f"child{len(list(tmp_path.glob('child*.log')))}.log"
    proc = PROCESSES.Process(target=run_training,
                             args=(config, resume, delay, str(log), env or {}))
    proc.start()
    proc.log = log
    STARTED.append(proc)
    return proc


def finish(proc, timeout=300):
    proc.join(timeout)
    assert proc.exitcode is not None, "the run did not end in time"
    return proc.exitcode


def wait_for_checkpoint(proc, path, after=-1, timeout=180.0):
    """Poll until ``path`` holds a checkpoint of an iteration > ``after`` (reading while the
    trainer replaces the file is safe: the replacement is atomic)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and load_checkpoint(path)["iteration"] > after):
        assert proc.is_alive(), "the run ended before writing the checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_gives_the_uninterrupted_weights(data_root, tmp_path,
                                                                           reference):
    out = tmp_path / "run"
    config = resume_config(data_root, out)
    last = out / "checkpoints" / "last.pt"

    # 1. SIGTERM (preemption): checkpoint at the end of the current iteration, status 143.
    proc = start(config, tmp_path, delay=0.1)  # ~0.2 s per iteration
    wait_for_checkpoint(proc, last)
    os.kill(proc.pid, signal.SIGTERM)
    assert finish(proc) == 128 + signal.SIGTERM, proc.log.read_text()
    terminated_at = load_checkpoint(last)["iteration"]
    assert 2 <= terminated_at < 12, "SIGTERM must arrive mid-run"
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "sigterm" and records[-1]["iteration"] == terminated_at

    # 2. Resume, then SIGKILL (no chance to save) after one more periodic checkpoint.
    proc = start(config, tmp_path, resume=True, delay=0.1)
    wait_for_checkpoint(proc, last, after=terminated_at)
    os.kill(proc.pid, signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL
    killed_at = load_checkpoint(last)["iteration"]
    assert terminated_at < killed_at < 12, "SIGKILL must arrive mid-run"

    # 3. Resume to the end: bit for bit the uninterrupted run.
    proc = start(config, tmp_path, resume=True)
    assert finish(proc) == 0, proc.log.read_text()
    assert load_checkpoint(last)["iteration"] == 12
    assert_same_weights(final_weights(out), reference)
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == list(range(1, 13))


def children(pid):
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_to_the_trainer_and_its_loader_workers_still_checkpoints(data_root, tmp_path):
    # What pkill, Ctrl-C or a container stop do: every process of the run gets the signal.
    out = tmp_path / "run"
    config = resume_config(data_root, out)
    last = out / "checkpoints" / "last.pt"
    proc = start(config, tmp_path, delay=0.1)
    wait_for_checkpoint(proc, last)
    workers = children(proc.pid)
    assert workers, "the run has a loader worker"
    for pid in [*workers, proc.pid]:
        os.kill(pid, signal.SIGTERM)
    assert finish(proc) == 128 + signal.SIGTERM, proc.log.read_text()
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "sigterm"
    assert records[-1]["iteration"] == load_checkpoint(last)["iteration"]


def start_two_ranks(config, tmp_path):
    """Two torchrun-style ranks of ``config`` on a free loopback port (gloo)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [start(config, tmp_path, env={"RANK": str(r), "LOCAL_RANK": str(r),
                                         "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                         "MASTER_PORT": str(port)}) for r in (0, 1)]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_on_the_same_global_batch(data_root, tmp_path):
    # No dropout (masks are drawn per process, so they depend on the split of the batch) and
    # no BatchNorm (per-process statistics); augmentation (the data package's random
    # scale/crop/flip) is seeded per sample position, so it is identical.
    # 2 ranks x batch 2 vs 1 process x batch 4.
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    config = tiny_config(data_root, ddp_out, iterations=3, batch_size=2, checkpoint_every=3)
    config.data.val_split = "val"  # the final validation is sharded over the 2 ranks
    ranks = start_two_ranks(config, tmp_path)
    for proc in ranks:
        assert finish(proc) == 0, proc.log.read_text()

    single = tiny_config(data_root, single_out, iterations=3, batch_size=4, checkpoint_every=3)
    single.data.val_split = "val"
    train(single)

    start_event = json.loads((ddp_out / "log.jsonl").read_text().splitlines()[0])
    assert start_event["world_size"] == 2 and start_event["images_per_iteration"] == 4
    ddp, one = final_weights(ddp_out), final_weights(single_out)
    init = load_checkpoint(ddp_out / "checkpoints" / "last.pt")
    assert init["sampler"]["world_size"] == 2 and init["sampler"]["consumed"] == 6
    seed_everything(config.train.seed)  # the weights both runs started from
    start_weights = parsenet_vgg16(num_classes=3, **config.model.args).state_dict()
    assert not torch.equal(one["head.classifiers.0.weight"],
                           start_weights["head.classifiers.0.weight"])
    losses = [[r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
               if r["kind"] == "train"] for out in (ddp_out, single_out)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and len(losses[0]) == 3
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], rtol=1e-5, atol=1e-5, msg=k)
    metrics = [json.loads((out / "metrics.json").read_text())["metrics"]
               for out in (ddp_out, single_out)]
    assert metrics[0]["images"] == metrics[1]["images"] == 2  # both ranks' shares counted
    # Same pixels counted; the predictions agree up to a pixel flipped by rounding.
    assert np.sum(metrics[0]["confusion"]) == np.sum(metrics[1]["confusion"]) > 0
    assert metrics[0]["pixel_acc"] == pytest.approx(metrics[1]["pixel_acc"], abs=1e-3)
    assert (ddp_out / "checkpoints" / "best.pt").exists()


@pytest.mark.slow
def test_under_ddp_every_rank_gets_rank_0s_refusal_of_a_used_out_dir(data_root, tmp_path):
    # Rank 0 holds the lock and checks the folder; had the other rank not heard of the
    # refusal it would wait for rank 0 in the first collective until the timeout.
    out = tmp_path / "used"
    out.mkdir()
    (out / "log.jsonl").write_text("{}\n")
    config = tiny_config(data_root, out, iterations=2)
    ranks = start_two_ranks(config, tmp_path)
    for proc in ranks:
        assert finish(proc, timeout=120) == 1, proc.log.read_text()
        assert f"UsageError: {out}: holds an earlier run (log.jsonl)" in proc.log.read_text()
    assert (out / "log.jsonl").read_text() == "{}\n" and not (out / "run.lock").exists()


FAILING_RUN = """
import sys
from pathlib import Path

from trainer_fixtures import Delayed, tiny_config, tiny_factory, write_tiny_dataset

from parsenet.engine.trainer import train


class Broken(Delayed):
    def __init__(self, dataset):
        super().__init__(dataset, delay=0.0)
        self.loads = 0

    def __getitem__(self, i):
        self.loads += 1
        if self.loads == 5:
            raise ValueError("sample load 5 is broken")
        return super().__getitem__(i)


def factory(data, split, preprocessing):
    dataset = tiny_factory()(data, split, preprocessing)
    return Broken(dataset) if split == "train" else dataset


root = Path(sys.argv[1])
config = tiny_config(write_tiny_dataset(root / "data"), root / "run")
config.data.workers = 1
train(config, dataset_factory=factory)
"""


@pytest.mark.slow
def test_a_run_that_raises_exits_with_its_loader_worker_alive(tmp_path):
    # The exception's traceback keeps the loader alive to interpreter exit, where
    # multiprocessing stops live workers with SIGTERM and joins them: the trainer must stop
    # its workers itself, since they ignore SIGTERM (the process would hang after the summary).
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", FAILING_RUN, str(tmp_path)], env=env,
                              timeout=120, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the failed run did not exit: its loader worker outlived it")
    assert done.returncode == 1
    assert "ValueError: sample load 5 is broken" in done.stderr
