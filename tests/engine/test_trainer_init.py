"""The trainer's model options beyond the paper: ``model.init_from`` (start from a file),
``model.norm_eval`` (backbone BatchNorm statistics kept) and ``train.class_weights``."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from trainer_fixtures import final_weights, tiny_config

from parsenet.config import ModelConfig
from parsenet.engine.checkpoint import CheckpointError, init_from_file
from parsenet.engine.optim import norm_stats_to_eval
from parsenet.engine.trainer import train
from parsenet.models.builders import parsenet_efficientnet_lite0

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: conftest.py


def test_init_from_starts_a_run_from_another_runs_weights(data_root, tmp_path):
    first = train(tiny_config(data_root, tmp_path / "a", iterations=3))
    # A rate of ~0: the second run's weights after one step are the first run's.
    config = tiny_config(data_root, tmp_path / "b", iterations=1, lr=1e-12)
    config.model.init_from = first["last_checkpoint"]
    train(config)
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    # Without init_from the same one step ends elsewhere: the check above can fail.
    train(tiny_config(data_root, tmp_path / "c", iterations=1, lr=1e-12))
    c = final_weights(tmp_path / "c")
    assert any(not torch.allclose(c[k], a[k], atol=1e-6) for k in a)


def test_init_from_a_file_that_does_not_fit_is_one_line(data_root, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"not.a.key": torch.zeros(1)}}, path)
    config = tiny_config(data_root, tmp_path / "run", iterations=1)
    config.model.init_from = str(path)
    with pytest.raises(CheckpointError, match=r"model.init_from: .*other.pt: weights do not "
                                              r"fit the model") as info:
        train(config)
    assert "\n" not in str(info.value)
    config.model.init_from = str(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing.pt: no such weights file"):
        train(config)


def test_init_from_file_loads_strictly(tmp_path) -> None:
    torch.manual_seed(0)
    a = parsenet_efficientnet_lite0(num_classes=3, weights=None)
    torch.manual_seed(1)
    b = parsenet_efficientnet_lite0(num_classes=3, weights=None)
    state = {k: v.clone() for k, v in a.state_dict().items()}
    torch.save(state, tmp_path / "a.pt")
    init_from_file(b, tmp_path / "a.pt")
    for k, v in b.state_dict().items():
        assert torch.equal(v, state[k]), k


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in model.backbone.modules()
            if isinstance(m, nn.BatchNorm2d) for t in (m.running_mean, m.running_var)]


def test_norm_stats_to_eval_keeps_the_backbone_statistics() -> None:
    torch.manual_seed(0)
    model = parsenet_efficientnet_lite0(num_classes=3, weights=None).train()
    before = _bn_stats(model)
    assert norm_stats_to_eval(model) > 0
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(x, y) for x, y in zip(before, _bn_stats(model), strict=True))
    model.train()  # without the call, a training forward moves them
    model(torch.randn(2, 3, 64, 64))
    assert not all(torch.equal(x, y) for x, y in zip(before, _bn_stats(model), strict=True))


@pytest.mark.parametrize("norm_eval", [True, False])
def test_the_trainer_applies_norm_eval(data_root, tmp_path, norm_eval):
    config = tiny_config(data_root, tmp_path / "run", iterations=2, val_every=1)
    config.data.val_split = "val"  # validation switches to eval and back to train
    config.model = ModelConfig(name="parsenet_efficientnet_lite0",
                               args={"weights": None, "output_stride": 32},
                               norm_eval=norm_eval)
    train(config)
    state = final_weights(tmp_path / "run")
    means = [v for k, v in state.items() if k.startswith("backbone.")
             and k.endswith("running_mean")]
    # Fresh BatchNorm statistics are zeros; only training-mode forwards change them.
    assert means and all(torch.count_nonzero(m) == 0 for m in means) == norm_eval


def test_class_weights_are_counted_from_the_training_labels(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path / "run", iterations=1, lr=1e-9)
    config.train.class_weights = "median_frequency"
    train(config)
    train(tiny_config(data_root, tmp_path / "plain", iterations=1, lr=1e-9))

    def first_loss(run: str) -> float:
        return [json.loads(line) for line in (tmp_path / run / "log.jsonl").open()
                if '"train"' in line][0]["loss"]

    # Same init, same batch: only the weights (the tiny set's discs and squares are rarer
    # than background, so weighted pixels of theirs count more) change the loss.
    assert first_loss("run") != pytest.approx(first_loss("plain"), rel=1e-4)
