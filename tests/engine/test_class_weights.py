"""Median frequency class weights (engine/class_weights.py) and the weighted loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parsenet.engine.class_weights import class_weights, label_counts, median_frequency_weights
from parsenet.engine.distributed import DistContext
from parsenet.engine.iteration import run_iteration
from parsenet.labels import IGNORE_INDEX

# Image 0: three pixels of class 0, one of class 1, one ignored; image 1: four of class 0.
# Class 2 never appears.
LABELS = [np.array([[0, 0, 1], [0, IGNORE_INDEX, IGNORE_INDEX]], np.uint8),
          np.array([[0, 0], [0, 0]], np.uint8)]


def test_counts_skip_the_ignore_label_and_count_the_images_a_class_is_in() -> None:
    pixels, image_pixels = label_counts(LABELS.__getitem__, len(LABELS), num_classes=3)
    assert pixels.tolist() == [7, 1, 0]
    assert image_pixels.tolist() == [8, 4, 0]  # class 1 is only in image 0's 4 labelled px


def test_median_frequency_weights_by_hand() -> None:
    # freq = [7/8, 1/4]; median 9/16; raw weights [9/14, 9/4]; pixel mean (9/2 + 9/4) / 8.
    weights = class_weights("median_frequency", LABELS.__getitem__, len(LABELS), 3)
    raw = np.array([9 / 14, 9 / 4, 0.0])
    expected = raw / ((raw[0] * 7 + raw[1] * 1) / 8)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    pixels = np.array([7, 1, 0])
    assert float((weights.numpy() * pixels).sum() / pixels.sum()) == pytest.approx(1.0)
    assert weights[2] == 0  # absent from training


def test_none_means_unweighted_and_nothing_is_read() -> None:
    def never(i: int) -> np.ndarray:
        raise AssertionError("labels read for an unweighted loss")

    assert class_weights("none", never, 5, 3) is None


def test_no_labelled_pixel_is_an_error() -> None:
    with pytest.raises(ValueError, match="no labelled pixel"):
        median_frequency_weights(np.zeros(3, np.int64), np.zeros(3, np.int64))


def test_the_iteration_loss_is_the_weighted_sum_over_the_labelled_pixel_count() -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 1)
    images = torch.randn(2, 3, 4, 5)
    targets = torch.randint(0, 3, (2, 4, 5))
    targets[0, 0] = IGNORE_INDEX
    weights = torch.tensor([0.5, 2.0, 1.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)

    class Amp:
        dtype = None

    loss, _ = run_iteration(model, [(images, targets, None)], False, "mean", ctx=DistContext(),
                            device=torch.device("cpu"), amp=Amp(), scaler=None, optimizer=opt,
                            scheduler=sched, class_weights=weights)
    with torch.no_grad():
        expected = F.cross_entropy(model(images), targets, weight=weights,
                                   ignore_index=IGNORE_INDEX, reduction="sum")
    assert loss == pytest.approx(float(expected) / int((targets != IGNORE_INDEX).sum()),
                                 rel=1e-5)
    unweighted, _ = run_iteration(model, [(images, targets, None)], False, "mean",
                                  ctx=DistContext(), device=torch.device("cpu"), amp=Amp(),
                                  scaler=None, optimizer=opt, scheduler=sched)
    assert unweighted != pytest.approx(loss)
