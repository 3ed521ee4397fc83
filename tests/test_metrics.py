import math

import pytest
import torch

from parsenet.metrics import SegmentationMetrics, metrics_from_confusion


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    # 3 classes; class 2 never in the ground truth but predicted once.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 255]])
    pred = torch.tensor([[0, 0, 1, 1], [1, 2, 0, 2]])
    return pred, target


def test_hand_computed_confusion_and_metrics():
    pred, target = _case()
    m = SegmentationMetrics(3)
    m.update(pred, target)
    out = m.compute()
    # rows = gt, cols = pred; ignored pixels (last two) dropped.
    assert out["confusion"] == [[2, 1, 0], [0, 2, 1], [0, 0, 0]]
    assert out["pixel_acc"] == pytest.approx(4 / 6)
    # class 0: acc 2/3, IoU 2/(3+2-2)=2/3; class 1: acc 2/3, IoU 2/(3+3-2)=1/2; class 2 absent.
    assert out["per_class_acc"][:2] == pytest.approx([2 / 3, 2 / 3])
    assert out["per_class_iou"][:2] == pytest.approx([2 / 3, 1 / 2])
    assert math.isnan(out["per_class_iou"][2]) and math.isnan(out["per_class_acc"][2])
    assert out["mean_acc"] == pytest.approx(2 / 3)
    assert out["mean_iou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["fw_iou"] == pytest.approx((3 * 2 / 3 + 3 * 1 / 2) / 6)


def test_skip_absent_false_is_mmseg_rule():
    pred, target = _case()
    m = SegmentationMetrics(4, skip_absent=False)  # class 3: neither present nor predicted
    m.update(pred, target)
    out = m.compute()
    # class 2 is predicted but absent: union 2 > 0, IoU 0, averaged in; class 3 union 0: NaN.
    assert out["per_class_iou"][2] == 0.0
    assert math.isnan(out["per_class_iou"][3])
    assert out["mean_iou"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # Accuracy stays over classes with ground truth.
    assert out["mean_acc"] == pytest.approx(2 / 3)


def test_perfect_prediction_and_accumulation():
    m = SegmentationMetrics(5)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        t = torch.randint(0, 5, (2, 7, 9), generator=g)
        m.update(t.clone(), t)
    out = m.compute()
    assert out["pixel_acc"] == out["mean_acc"] == out["mean_iou"] == pytest.approx(1.0)
    assert out["fw_iou"] == pytest.approx(1.0)
    assert sum(map(sum, out["confusion"])) == 3 * 2 * 7 * 9
    m.reset()
    assert int(m.confusion.sum()) == 0
    assert math.isnan(m.compute()["pixel_acc"])


def test_ignore_pixels_do_not_count_whatever_predicted():
    m = SegmentationMetrics(2)
    target = torch.full((4, 4), 255, dtype=torch.uint8)
    target[0, 0] = 1
    pred = torch.zeros(4, 4, dtype=torch.int64)
    pred[0, 0] = 1
    m.update(pred, target)
    assert m.compute()["confusion"] == [[0, 0], [0, 1]]


def test_bad_inputs_raise():
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="outside"):
        m.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="outside"):
        m.update(torch.tensor([0, -1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="float"):
        m.update(torch.rand(2), torch.tensor([0, 1]))


def test_all_reduce_without_distributed_is_noop():
    m = SegmentationMetrics(2)
    m.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    before = m.confusion.clone()
    m.all_reduce()
    assert torch.equal(m.confusion, before)


def test_matches_torchmetrics_on_random_data():
    tm = pytest.importorskip("torchmetrics.classification")
    k = 6
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, k, (4, 33, 47), generator=g)
    target[target == 5] = 255  # class 5 absent, pixels ignored
    # Predictions correlated with the target so the metrics are not trivial.
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target.clamp(max=k - 2),
                       torch.randint(0, k - 1, target.shape, generator=g))
    ours = SegmentationMetrics(k)
    ours.update(pred, target)
    out = ours.compute()

    iou = tm.MulticlassJaccardIndex(k, average="none", ignore_index=255)(pred, target)
    acc = tm.MulticlassAccuracy(k, average="none", ignore_index=255)(pred, target)
    micro = tm.MulticlassAccuracy(k, average="micro", ignore_index=255)(pred, target)
    assert out["per_class_iou"][:5] == pytest.approx(iou[:5].tolist(), abs=1e-6)
    assert out["per_class_acc"][:5] == pytest.approx(acc[:5].tolist(), abs=1e-6)
    assert out["mean_iou"] == pytest.approx(float(iou[:5].mean()), abs=1e-6)
    assert out["mean_acc"] == pytest.approx(float(acc[:5].mean()), abs=1e-6)
    assert out["pixel_acc"] == pytest.approx(float(micro), abs=1e-6)
    weighted = tm.MulticlassJaccardIndex(k, average="weighted", ignore_index=255)(pred, target)
    assert out["fw_iou"] == pytest.approx(float(weighted), abs=1e-6)


def test_metrics_from_confusion_empty_classes():
    out = metrics_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert math.isnan(out["mean_iou"]) and math.isnan(out["fw_iou"])


def test_all_reduce_in_a_process_group(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        m = SegmentationMetrics(2)
        m.update(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
        m.all_reduce()
        assert m.confusion.tolist() == [[1, 1], [0, 1]]
        assert m.confusion.dtype == torch.int64
    finally:
        dist.destroy_process_group()


def _siftflow_like() -> tuple[torch.Tensor, torch.Tensor]:
    """33 classes as SiftFlow; classes 30, 31, 32 absent from this 'split', 31 predicted."""
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 30, (2, 40, 40), generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.7, target,
                       torch.randint(0, 30, target.shape, generator=g))
    pred[0, :3, :5] = 31  # 15 pixels of an absent class predicted
    return pred, target


def test_siftflow_like_split_both_mean_iu_conventions():
    tm = pytest.importorskip("torchmetrics.classification")
    pred, target = _siftflow_like()
    present = SegmentationMetrics(33, mean_iu="present")
    nanmean = SegmentationMetrics(33, mean_iu="nanmean")
    for m in (present, nanmean):
        m.update(pred, target)
    a, b = present.compute(), nanmean.compute()
    hist = present.confusion.double()
    iou = hist.diag() / (hist.sum(0) + hist.sum(1) - hist.diag())
    # present: the 30 classes with ground truth; nanmean: those plus class 31 at IoU 0.
    assert a["mean_iou"] == pytest.approx(float(iou[:30].mean()))
    assert b["mean_iou"] == pytest.approx(float(iou[:30].sum() / 31))
    assert b["per_class_iou"][31] == 0.0
    assert math.isnan(b["per_class_iou"][30]) and math.isnan(b["per_class_iou"][32])
    assert math.isnan(a["per_class_iou"][31])
    assert b["mean_iou"] < a["mean_iou"]
    # Both are reported whichever is chosen, and the choice is named.
    assert a["mean_iou_nanmean"] == b["mean_iou"] and b["mean_iou_present"] == a["mean_iou"]
    assert (a["mean_iou_convention"], b["mean_iou_convention"]) == ("present", "nanmean")
    # torchmetrics' macro Jaccard is score.py's nanmean convention.
    macro = tm.MulticlassJaccardIndex(33, average="macro", ignore_index=255)(pred, target)
    assert b["mean_iou"] == pytest.approx(float(macro), abs=1e-6)
    # The other metrics do not depend on the convention.
    for key in ("pixel_acc", "mean_acc", "fw_iou"):
        assert a[key] == b[key]


def test_mean_iu_convention_names_checked():
    with pytest.raises(ValueError, match="mean_iu"):
        SegmentationMetrics(3, mean_iu="fcn")
    assert SegmentationMetrics(3, skip_absent=True, mean_iu="nanmean").skip_absent is False


def test_evaluate_reports_the_configured_convention():
    from parsenet.config import EvalConfig
    from parsenet.engine.evaluation import evaluate

    class Predicts(torch.nn.Module):  # class 2 everywhere on the left, 0 on the right
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            out[:, 2, :, :4] = 1.0
            out[:, 0, :, 4:] = 1.0
            return out

    target = torch.zeros(8, 8, dtype=torch.int64)
    target[:, :4] = 1  # class 2 never present, but predicted
    dataset = [(torch.zeros(3, 8, 8), target)]
    res = {conv: evaluate(Predicts(), dataset, num_classes=3, progress=False,
                          eval_cfg=EvalConfig(mean_iu=conv))["mean_iou"]
           for conv in ("present", "nanmean")}
    # class 0: right half, predicted exactly (IoU 1); class 1: left half, never predicted
    # (IoU 0); class 2: absent but predicted on the left (IoU 0 under nanmean only).
    assert res == {"present": pytest.approx(0.5), "nanmean": pytest.approx(1 / 3)}
