"""In-process trainer tests on a tiny dataset (see trainer_fixtures.py); the subprocess ones
(SIGKILL/SIGTERM resume, torchrun DDP) are in test_trainer_processes.py."""

import json
import math

import pytest
import torch
import yaml
from trainer_fixtures import final_weights, tiny_config, tiny_factory

from parsenet.config import ConfigError, config_to_dict
from parsenet.engine import precision
from parsenet.engine.checkpoint import CheckpointError, load_checkpoint, load_model
from parsenet.engine.trainer import TrainingDivergedError, train

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: conftest.py


def assert_same_weights(a, b, rtol=0.0, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


def test_a_run_writes_config_log_checkpoints_and_metrics(data_root, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(data_root, out, iterations=4, val_every=2, log_every=2)
    config.data.val_split = "val"
    result = train(config)  # the default path: datasets_from_config() and evaluate()

    assert yaml.safe_load((out / "config.yaml").read_text()) == config_to_dict(config)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [2, 4]
    assert [r["iteration"] for r in records if r["kind"] == "val"] == [2, 4]
    assert records[0]["event"] == "start" and records[0]["amp"] == "fp32"
    val_mious = [r["mean_iou"] for r in records if r["kind"] == "val"]

    assert result["iteration"] == 4 and math.isfinite(result["final_loss"])
    assert result["metrics"]["mean_iou"] == val_mious[-1]
    assert result["best_mean_iou"] == max(val_mious)
    assert result["images_per_s"] > 0 and result["wall_time_s"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["mean_iou"] == val_mious[-1]
    assert load_checkpoint(result["last_checkpoint"])["iteration"] == 4
    best = load_checkpoint(result["best_checkpoint"])
    assert best["iteration"] == [2, 4][val_mious.index(max(val_mious))]
    loaded = load_model(result["last_checkpoint"])
    model = loaded.model
    assert loaded.classes == ("background", "disc", "square") and loaded.iteration == 4
    assert_same_weights(model.state_dict(), final_weights(out))
    assert model(torch.zeros(1, 3, 40, 40)).shape == (1, 3, 40, 40)


# "sum" adds up ~2300 pixels per image: it needs a rate that much smaller (as in Caffe).
@pytest.mark.parametrize("reduction,lr", [("mean", 0.02), ("sum", 1e-5)])
def test_accumulating_two_batches_of_two_equals_one_batch_of_four(data_root, tmp_path,
                                                                  reduction, lr):
    # The labels have ignored bands of random height, so the two micro-batches differ in
    # their valid-pixel counts: a mean of per-micro-batch means would not match (it differs
    # by ~0.4 here after 3 iterations). What is left is float32 summation order.
    runs = {}
    for batch, accumulate in ((4, 1), (2, 2)):
        out = tmp_path / f"b{batch}a{accumulate}"
        train(tiny_config(data_root, out, iterations=3, batch_size=batch,
                          accumulate=accumulate, loss_reduction=reduction, lr=lr),
              dataset_factory=tiny_factory())
        runs[batch] = final_weights(out)
    init = torch.load(tmp_path / "b4a1" / "checkpoints" / "last.pt", weights_only=True)
    assert init["iteration"] == 3 and init["sampler"]["consumed"] == 12
    assert_same_weights(runs[4], runs[2], rtol=1e-5, atol=1e-5)


def test_the_number_of_loader_workers_does_not_change_the_run(data_root, tmp_path):
    # Augmentation (the data package's random scale/crop/flip) is seeded per sample, not per
    # worker: 0 and 2 workers train the same weights.
    weights = []
    for workers in (0, 2):
        config = tiny_config(data_root, tmp_path / f"w{workers}", iterations=3)
        config.data.workers = workers
        train(config)
        weights.append(final_weights(tmp_path / f"w{workers}"))
    assert_same_weights(*weights)


def test_resume_after_a_crash_equals_the_uninterrupted_run(data_root, tmp_path):
    # Dropout on, a validation between checkpoints: the RNG streams must be restored and
    # validation must not consume them.
    def config(out):
        c = tiny_config(data_root, out, iterations=6, checkpoint_every=2, val_every=3)
        c.model.args.update(dropout=0.5, context_dropout=0.3)
        c.data.val_split = "val"
        return c

    train(config(tmp_path / "full"), dataset_factory=tiny_factory())

    def crashing_factory(data, split, preprocessing):  # dies in iteration 5
        return AfterLoads(tiny_factory()(data, split, preprocessing), n=9, effect="crash")

    with pytest.raises(Crash):
        train(config(tmp_path / "cut"), dataset_factory=crashing_factory)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["iteration"] == 4
    result = train(config(tmp_path / "cut"), resume=True, dataset_factory=tiny_factory())
    assert result["iteration"] == 6
    assert_same_weights(final_weights(tmp_path / "cut"), final_weights(tmp_path / "full"))
    records = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


class Crash(Exception):
    pass


class AfterLoads(torch.utils.data.Dataset):
    """Wraps a dataset; from the ``n``-th load on, images are NaN or loading crashes."""

    def __init__(self, dataset, n, effect):
        self.dataset, self.n, self.effect, self.loads = dataset, n, effect, 0
        self.classes, self.palette = dataset.classes, dataset.palette

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.loads += 1
        image, mask = self.dataset[i]
        if self.loads > self.n:
            if self.effect == "crash":
                raise Crash
            image = image * float("nan")
        return image, mask


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(data_root,
                                                                              tmp_path):
    def factory(data, split, preprocessing):
        return AfterLoads(tiny_factory()(data, split, preprocessing), n=10, effect="nan")

    out = tmp_path / "nan"
    with pytest.raises(TrainingDivergedError, match="at iteration 6"):
        train(tiny_config(data_root, out, iterations=10, checkpoint_every=2),
              dataset_factory=factory)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    load_model(out / "checkpoints" / "last.pt")
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "diverged" and records[-1]["iteration"] == 6


def test_a_huge_learning_rate_diverges_instead_of_training_on(data_root, tmp_path):
    with pytest.raises(TrainingDivergedError, match="(loss|weights) (is|are) (nan|inf|NaN)"):
        train(tiny_config(data_root, tmp_path / "lr", iterations=30, lr=1e12,
                          checkpoint_every=1), dataset_factory=tiny_factory())
    state = load_checkpoint(tmp_path / "lr" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_overflowed_weights_are_never_written_over_the_last_good_checkpoint(
        data_root, tmp_path, monkeypatch):
    original_step = torch.optim.SGD.step
    steps = []

    def step_that_overflows_at_3(self, closure=None):
        original_step(self, closure)
        steps.append(1)
        if len(steps) == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")

    monkeypatch.setattr(torch.optim.SGD, "step", step_that_overflows_at_3)
    out = tmp_path / "inf"
    with pytest.raises(TrainingDivergedError, match="weights are NaN or infinite after "
                                                    "iteration 3"):
        train(tiny_config(data_root, out, iterations=6, checkpoint_every=1),
              dataset_factory=tiny_factory())
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_resume_needs_a_checkpoint_of_the_same_model(data_root, tmp_path):
    out = tmp_path / "r"
    with pytest.raises(CheckpointError, match="last.pt: no such checkpoint"):
        train(tiny_config(data_root, out, iterations=2), resume=True,
              dataset_factory=tiny_factory())
    train(tiny_config(data_root, out, iterations=2), dataset_factory=tiny_factory())
    other = tiny_config(data_root, out, iterations=4)
    other.model.args["width"] = 0.125
    with pytest.raises(CheckpointError, match=r"last.pt: was trained with another model "
                       r"config \(model.args.width: checkpoint 0.0625, config 0.125\)"):
        train(other, resume=True, dataset_factory=tiny_factory())


@pytest.mark.parametrize("field,value", [("loss_reduction", "avg"), ("accumulate", 0),
                                         ("amp", "fp8"), ("device", "tpu")])
def test_bad_train_settings_are_config_errors(data_root, tmp_path, field, value):
    config = tiny_config(data_root, tmp_path / "bad")
    setattr(config.train, field, value)
    with pytest.raises(ConfigError, match=field):
        train(config, dataset_factory=tiny_factory())


def test_autocast_and_loss_scaling_paths_train_checkpoint_and_resume(data_root, tmp_path,
                                                                     monkeypatch):
    # No GPU here: force bf16 autocast with a GradScaler on the CPU to run the code paths
    # that fp16 on CUDA takes (scaled backward, scaler step/update, scaler state in the
    # checkpoint and back).
    from parsenet.engine import trainer as trainer_module

    forced = precision.AmpPolicy(torch.bfloat16, True, "forced by the test")
    monkeypatch.setattr(trainer_module, "resolve_amp", lambda amp, device: forced)
    out = tmp_path / "amp"
    result = train(tiny_config(data_root, out, iterations=2, checkpoint_every=2),
                   dataset_factory=tiny_factory())
    assert result["amp"] == "bf16" and math.isfinite(result["final_loss"])
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["scaler"]["scale"] > 0
    result = train(tiny_config(data_root, out, iterations=4, checkpoint_every=2),
                   resume=True, dataset_factory=tiny_factory())
    assert result["iteration"] == 4 and math.isfinite(result["final_loss"])


def test_auto_precision_is_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_amp("auto", cpu).dtype is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_amp("auto", cpu).dtype is torch.bfloat16
    assert precision.resolve_amp("off", cpu).dtype is None
    assert precision.resolve_amp("bf16", cpu).dtype is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        precision.resolve_amp("fp16", cpu)
