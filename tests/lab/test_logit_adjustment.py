"""lab.tools.logit_adjustment: tau 0 scores the plain argmax; a rising tau moves pixels away
from the class the weighting favoured; a class with no training pixel keeps its scores."""

import math

import torch

from lab.tools.logit_adjustment import log_weights, score_adjusted
from parsenet.metrics import SegmentationMetrics


def _pairs():
    # Two classes; class 1 (weight e^2) wins by 1 on the left half, where the truth is 0.
    scores = torch.zeros(1, 2, 4, 4)
    scores[0, 1, :, :2] = 1.0
    scores[0, 1, :, 2:] = 3.0
    target = torch.zeros(4, 4, dtype=torch.long)
    target[:, 2:] = 1
    return [(scores, target)]


def test_tau_zero_is_the_plain_argmax():
    scores, target = _pairs()[0]
    plain = SegmentationMetrics(2)
    plain.update(scores.argmax(1)[0], target)
    expected = plain.compute()
    got = score_adjusted(_pairs(), torch.tensor([0.0, 2.0]), [0.0])[0.0]
    assert math.isclose(got["pixel_acc"], 100 * expected["pixel_acc"])
    assert math.isclose(got["mean_iou"], 100 * expected["mean_iou"])
    assert got["pixel_acc"] == 50.0


def test_undoing_the_weight_hands_the_margin_back():
    log_w = torch.tensor([0.0, 2.0])
    figures = score_adjusted(_pairs(), log_w, [0.0, 0.4, 1.0])
    assert figures[0.4]["pixel_acc"] == 50.0  # 1 - 0.8 > 0: class 1 still wins on the left
    assert figures[1.0]["pixel_acc"] == 100.0  # 1 - 2 < 0 there, 3 - 2 > 0 on the right


def test_a_class_without_training_pixels_keeps_its_scores():
    log_w = log_weights(torch.tensor([0.0, 0.5, 2.0]))
    assert log_w[0] == 0.0 and torch.allclose(log_w[1:], torch.tensor([0.5, 2.0]).log())
