"""The trainer's input options for heads on a frozen, cached trunk: ``train.loss_stride``
(the loss on a regular sample of the pixels) and ``data.resize`` (every image warped to one
size, validation scored on the full-size labels)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from trainer_fixtures import write_tiny_dataset

from parsenet.config import Config, ConfigError, DataConfig, TrainConfig
from parsenet.engine import frozen_prefix as fp
from parsenet.engine.distributed import DistContext
from parsenet.engine.evaluation import evaluate
from parsenet.engine.iteration import loss_pixels, run_iteration
from parsenet.engine.precision import resolve_amp
from parsenet.labels import IGNORE_INDEX
from parsenet.layers.resample import resize_to_input, resize_to_pixels
from parsenet.models import build_model
from parsenet.recipe import dataset_from_config

pytestmark = pytest.mark.usefixtures("one_thread")


class GridScores(nn.Module):
    """Fixed scores on an output grid (stride, offset), upsampled to the input as a
    ParseNet upsamples its own."""

    def __init__(self, scores: torch.Tensor, stride: int, offset: float) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores)
        self.stride, self.offset = stride, offset

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return resize_to_input(self.scores, images.shape[-2:], self.stride, self.offset)


def _bilinear_at(scores: torch.Tensor, y: int, x: int, stride: int, offset: float
                 ) -> torch.Tensor:
    """The score vector at pixel (y, x): cell i is centred on pixel stride * i + offset,
    linear between centres, the border cell's value past the outermost centres."""
    def weights(p: int, cells: int) -> tuple[int, int, float]:
        u = min(max((p - offset) / stride, 0.0), cells - 1.0)
        low = math.floor(u)
        return low, min(low + 1, cells - 1), u - low

    y0, y1, wy = weights(y, scores.shape[-2])
    x0, x1, wx = weights(x, scores.shape[-1])
    s = scores.double()
    return ((1 - wy) * ((1 - wx) * s[:, y0, x0] + wx * s[:, y0, x1])
            + wy * ((1 - wx) * s[:, y1, x0] + wx * s[:, y1, x1]))


def _grid_case(stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded coarse scores of a 2 x 48 x 64 batch at ``stride`` and its labels, some
    ignored."""
    torch.manual_seed(0)
    n, classes, (h, w) = 2, 4, (48, 64)
    scores = torch.randn(n, classes, h // stride, w // stride)
    labels = torch.randint(0, classes, (n, h, w))
    labels[0, :10] = IGNORE_INDEX
    return scores, labels


def _one_step(model: torch.nn.Module, labels: torch.Tensor, pixels, lr: float) -> float:
    """The trainer's iteration on ``labels`` (images are zeros: the model ignores them)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    n, h, w = labels.shape
    loss, _ = run_iteration(model, [(torch.zeros(n, 3, h, w), labels, None)], False, "mean",
                            ctx=DistContext(), device=torch.device("cpu"),
                            amp=resolve_amp("off", torch.device("cpu")), scaler=None,
                            optimizer=optimizer, scheduler=scheduler, loss_pixels=pixels)
    return loss


@pytest.mark.parametrize(("stride", "offset", "step", "first"),
                         [(16, 15.0, 4, 1), (16, 15.0, 8, 3), (8, 0.0, 4, 2), (8, 3.5, 1, 0)])
def test_the_subsampled_loss_is_the_mean_loss_over_the_sampled_pixels(stride, offset, step,
                                                                       first):
    scores, labels = _grid_case(stride)
    n, (h, w) = labels.shape[0], labels.shape[1:]
    pixels = loss_pixels(stride, offset, step)
    assert (pixels is None) == (step == 1) and (pixels or (0, 1)) == (first, step)
    # From first principles: the cross-entropy of the bilinear scores at every sampled,
    # labelled pixel, averaged over those pixels.
    total, count = 0.0, 0
    for i in range(n):
        for y in range(first, h, step):
            for x in range(first, w, step):
                if labels[i, y, x] == IGNORE_INDEX:
                    continue
                logits = _bilinear_at(scores[i], y, x, stride, offset)
                total += float(torch.logsumexp(logits, 0) - logits[labels[i, y, x]])
                count += 1
    loss = _one_step(GridScores(scores, stride, offset), labels, pixels, lr=0.0)
    assert loss == pytest.approx(total / count, rel=1e-5)


class SampledGridScores(GridScores):
    """GridScores that, as ParseNet, upsamples its scores at the loss's pixels only."""

    samples_pixels = True

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.asked: list[tuple[int, int] | None] = []

    def forward(self, images: torch.Tensor, pixels: tuple[int, int] | None = None
                ) -> torch.Tensor:
        self.asked.append(pixels)
        if pixels is None:
            return super().forward(images)
        return resize_to_pixels(self.scores, images.shape[-2:], self.stride, self.offset,
                                pixels)


@pytest.mark.parametrize(("stride", "offset", "step"),
                         [(16, 15.0, 4), (16, 15.0, 8), (8, 0.0, 4), (8, 0.0, 2)])
def test_a_model_that_samples_its_scores_gets_the_loss_and_gradients_of_indexing(
        stride, offset, step):
    scores, labels = _grid_case(stride)
    pixels = loss_pixels(stride, offset, step)
    results = []
    for model in (GridScores(scores.clone(), stride, offset),
                  SampledGridScores(scores.clone(), stride, offset)):
        loss = _one_step(model, labels, pixels, lr=1.0)
        results.append((loss, scores - model.scores.detach()))  # lr 1: the step is the grad
    (full_loss, full_grad), (sampled_loss, sampled_grad) = results
    assert model.asked == [pixels]
    assert sampled_loss == pytest.approx(full_loss, rel=1e-5)
    assert float(full_grad.abs().max()) > 0
    torch.testing.assert_close(sampled_grad, full_grad, rtol=1e-5, atol=1e-6)


def test_a_loss_stride_off_the_pixel_grid_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="train.loss_stride: 3 does not divide"):
        loss_pixels(16, 15.0, 3)
    with pytest.raises(ConfigError, match="between pixels"):
        loss_pixels(8, 3.5, 2)
    with pytest.raises(ConfigError, match="train.loss_stride"):
        TrainConfig(loss_stride=0)
    with pytest.raises(ConfigError, match="data.resize"):
        DataConfig(resize=[32])
    assert Config(data=DataConfig(resize=(24, 32))).data.resize == [24, 32]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"), n_train=2, n_val=2)


def test_resize_warps_training_pairs_and_validation_images_only(tiny_root):
    data = DataConfig(root=str(tiny_root), resize=[32, 48], crop_size=48,
                      scale_range=[1.0, 1.0], flip=False)
    preprocessing = build_model("parsenet_efficientnet_lite0", num_classes=3,
                                weights=None).preprocessing
    image, label = dataset_from_config(data, "train", preprocessing=preprocessing)[0]
    assert image.shape == (3, 48, 48) and label.shape == (48, 48)  # 32 x 48, then padded
    assert bool((label[32:] == IGNORE_INDEX).all()) and not bool((label[:32] == 255).all())
    val = dataset_from_config(data, "val", preprocessing=preprocessing)
    image, label = val[0]
    assert image.shape == (3, 32, 48) and label.shape == (56, 64)  # the label as it is
    raw = dataset_from_config(data, "val").read_label(0)
    assert label.tolist() == torch.as_tensor(raw).long().tolist()


def test_evaluation_scores_the_warped_images_logits_on_the_full_labels(tiny_root):
    data = DataConfig(root=str(tiny_root), resize=[32, 48])
    torch.manual_seed(0)
    model = build_model("parsenet_efficientnet_lite0", num_classes=3, weights=None,
                        output_stride=16).eval()
    val = dataset_from_config(data, "val", preprocessing=model.preprocessing)
    metrics = evaluate(model, val, num_classes=3, progress=False)
    confusion = torch.zeros(3, 3, dtype=torch.long)
    with torch.no_grad():
        for image, label in (val[i] for i in range(len(val))):
            logits = F.interpolate(model(image[None]), size=label.shape, mode="bilinear",
                                   align_corners=False)
            keep = label != IGNORE_INDEX
            pairs = label[keep] * 3 + logits.argmax(1)[0][keep]
            confusion += torch.bincount(pairs, minlength=9).reshape(3, 3)
    assert torch.tensor(metrics["confusion"]).tolist() == confusion.tolist()
    assert int(confusion.sum()) > 0


def test_the_prefix_cache_holds_the_warped_images_maps(tiny_root, tmp_path):
    torch.manual_seed(0)
    model = build_model("parsenet_efficientnet_lite0", num_classes=3, weights=None,
                        features=["stride8", "head"], output_stride=16)
    stages = fp.freeze_prefix(model, "all")
    data = dataset_from_config(DataConfig(root=str(tiny_root)), "train")
    cache = fp.build_prefix_cache(model, stages, data, root=tmp_path, scales=[1.0],
                                  flip=False, preprocessing=model.preprocessing,
                                  resize=(32, 48))
    plain = fp.build_prefix_cache(model, stages, data, root=tmp_path, scales=[1.0],
                                  flip=False, preprocessing=model.preprocessing)
    assert cache.path != plain.path  # the size is part of the key
    maps, label = cache.read(1, 0, 0)
    assert label.shape == (32, 48) and maps["head"].shape[-2:] == (2, 3)
    image, mask = data.load(1)
    warped, warped_label = fp._scaled(image.as_subclass(torch.Tensor),
                                      mask.as_subclass(torch.Tensor), 1.0, False, (32, 48))
    live = fp.run_prefix(model.eval(), model.preprocessing(warped)[None], stages)
    assert warped_label.tolist() == label.tolist()
    for stage, value in live.items():
        torch.testing.assert_close(maps[stage], value[0], rtol=1e-5, atol=1e-6, msg=stage)
    # A model reading other taps on the same prefix caches other maps: its own directory.
    wider = build_model("parsenet_efficientnet_lite0", num_classes=3, weights=None,
                        features=["stride4", "stride8", "head"], output_stride=16)
    wider.backbone.load_state_dict(model.backbone.state_dict())
    other = fp.build_prefix_cache(wider, fp.freeze_prefix(wider, "all"), data, root=tmp_path,
                                  scales=[1.0], flip=False,
                                  preprocessing=wider.preprocessing, resize=(32, 48))
    assert other.path != cache.path
