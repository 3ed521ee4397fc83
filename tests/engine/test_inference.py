import pytest
import torch
from torch import nn

from parsenet.config import EvalConfig
from parsenet.engine.evaluation import evaluate
from parsenet.engine.inference import predict_logits
from parsenet.errors import ConfigError, UsageError
from parsenet.models import parsenet_vgg16


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return parsenet_vgg16(num_classes=3, width=0.0625).eval()


class OracleModel(nn.Module):
    """Returns the one-hot of a stored label map: a model that is always right."""

    def __init__(self, labels: list[torch.Tensor], num_classes: int) -> None:
        super().__init__()
        self.labels = labels
        self.num_classes = num_classes
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(()))  # so .to() / .train() behave

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = self.labels[self.calls].clamp(max=self.num_classes - 1)
        self.calls += 1
        onehot = nn.functional.one_hot(label, self.num_classes).permute(2, 0, 1).float()
        return onehot.unsqueeze(0) * self.scale


class TinyDataset:
    def __init__(self, n: int = 3, k: int = 3) -> None:
        g = torch.Generator().manual_seed(0)
        sizes = [(40, 52), (37, 33), (48, 48)]
        self.items = []
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            mask = torch.randint(0, k, (h, w), generator=g)
            mask[:2] = 255
            self.items.append((torch.randn(3, h, w, generator=g), mask))
        self.ignore_index = 255

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_whole_shape_and_slide_equals_whole_when_window_covers_image():
    model = _tiny_model()
    x = torch.randn(1, 3, 45, 61)
    with torch.inference_mode():
        whole = predict_logits(model, x)
        slide = predict_logits(model, x, "slide", window=64, stride=40)
    assert whole.shape == (1, 3, 45, 61)
    assert torch.allclose(whole, slide)


def test_slide_averages_overlapping_windows():
    # A model that outputs a constant per window can only give a window-count average.
    class Ones(nn.Module):
        def forward(self, x):
            return torch.ones(x.shape[0], 2, *x.shape[-2:])

    x = torch.randn(1, 3, 70, 50)
    out = predict_logits(Ones(), x, "slide", window=40, stride=30)
    assert out.shape == (1, 2, 70, 50)
    assert torch.allclose(out, torch.ones_like(out))
    # With the real model, windows smaller than the image give a different but finite result.
    model = _tiny_model()
    with torch.inference_mode():
        slid = predict_logits(model, x, "slide", window=40, stride=30)
        whole = predict_logits(model, x)
    assert torch.isfinite(slid).all()
    assert not torch.allclose(slid, whole)


def test_multiscale_and_flip():
    model = _tiny_model()
    x = torch.randn(1, 3, 41, 47)
    with torch.inference_mode():
        whole = predict_logits(model, x)
        single = predict_logits(model, x, "multiscale", scales=(1.0,))
        ms = predict_logits(model, x, "multiscale", scales=(0.75, 1.0, 1.5), flip=True)
        # Flip averaging of a mirrored input is mirror-symmetric.
        f1 = predict_logits(model, x, flip=True)
        f2 = predict_logits(model, x.flip(-1), flip=True)
    assert torch.allclose(whole, single)
    assert ms.shape == whole.shape and not torch.allclose(ms, whole)
    assert torch.allclose(f1, f2.flip(-1), atol=1e-5)


def test_images_below_minimum_size_are_padded():
    model = _tiny_model()
    with torch.inference_mode():
        out = predict_logits(model, torch.randn(1, 3, 20, 25))
    assert out.shape == (1, 3, 20, 25)


def test_bad_arguments():
    model = _tiny_model()
    with pytest.raises(ValueError, match="mode"):
        predict_logits(model, torch.randn(1, 3, 32, 32), "tiles")
    with pytest.raises(ValueError, match="stride"):
        predict_logits(model, torch.randn(1, 3, 32, 32), "slide", window=16, stride=32)
    with pytest.raises(ValueError, match="N x 3"):
        predict_logits(model, torch.randn(3, 32, 32))


def test_evaluate_oracle_is_perfect_and_restores_train_mode():
    data = TinyDataset()
    oracle = OracleModel([m for _, m in data.items], num_classes=3).train()
    out = evaluate(oracle, data, num_classes=3, progress=False)
    assert out["pixel_acc"] == out["mean_iou"] == out["mean_acc"] == pytest.approx(1.0)
    assert out["images"] == 3 and oracle.calls == 3
    assert oracle.training  # restored
    total = sum(int((m != 255).sum()) for _, m in data.items)
    assert sum(map(sum, out["confusion"])) == total


def test_evaluate_tiny_model_max_images_and_eval_cfg():
    data = TinyDataset()
    model = _tiny_model()
    out = evaluate(model, data, num_classes=3, max_images=2, progress=False)
    assert out["images"] == 2 and 0.0 <= out["pixel_acc"] <= 1.0
    counted = sum(int((m != 255).sum()) for _, m in data.items[:2])
    assert sum(map(sum, out["confusion"])) == counted
    cfg = EvalConfig(mode="multiscale", scales=[1.0], flip=False)
    ms = evaluate(model, data, num_classes=3, max_images=2, progress=False, eval_cfg=cfg)
    assert ms["mode"] == "multiscale"
    assert ms["confusion"] == out["confusion"]  # one scale at 1.0 is the whole image
    assert not model.training


class CountingConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def test_a_scale_that_enlarges_the_image_past_the_limit_is_refused_before_any_pass():
    """1e4 on 64 x 64 asks for a 640000 x 640000 image: one line naming the scale and the
    limit, before the scaled image (or any pass) exists."""
    model = CountingConv()
    with pytest.raises(UsageError) as caught:
        predict_logits(model, torch.zeros(1, 3, 64, 64), "multiscale", scales=(1.0, 1e4))
    print("predict_logits:", caught.value)
    assert str(caught.value) == (
        "scale 10000 would make this 64x64 image 4.1e+05 megapixels, over the 40 megapixels "
        "a scaled image may have; give smaller scales")
    assert model.calls == 0
    for size, scales in (((256, 256), (2.0,)), ((512, 512), (0.5, 1.0, 1.5, 2.0))):
        out = predict_logits(model, torch.zeros(1, 3, *size), "multiscale", scales=scales)
        assert out.shape == (1, 3, *size)  # SiftFlow's 2.0, the usual 0.5-2.0 still run


def test_evaluate_refuses_an_eval_scale_no_image_may_run_at_before_reading_one():
    model, data = CountingConv(), TinyDataset()
    cfg = EvalConfig(mode="multiscale", scales=[1.0, 1e6])
    with pytest.raises(ConfigError) as caught:
        evaluate(model, data, num_classes=3, progress=False, eval_cfg=cfg)
    print("evaluate:", caught.value)
    assert str(caught.value).startswith("eval.scales: 1e+06 would enlarge even a 32x32 image")
    assert "past the 40 megapixels a scaled image may have" in str(caught.value)
    assert model.calls == 0


def test_evaluate_shards_images_across_ranks(monkeypatch):
    import parsenet.engine.evaluation as evaluation

    data = TinyDataset()
    oracle = OracleModel([data.items[1][1]], num_classes=3)
    # Rank 1 of 2 takes images 1, 3, ...: here only image 1 (all_reduce is a no-op).
    monkeypatch.setattr(evaluation, "_dist_rank_world", lambda: (1, 2))
    out = evaluate(oracle, data, num_classes=3, progress=False)
    assert oracle.calls == 1
    assert sum(map(sum, out["confusion"])) == int((data.items[1][1] != 255).sum())
    assert out["images"] == 3  # the whole set, once the ranks' matrices are summed


@pytest.mark.parametrize("size, window, stride, flip", [
    ((90, 130), 48, 32, False), ((90, 130), 48, 32, True), ((40, 150), 64, 64, True),
    ((70, 50), 96, 60, False)])
def test_streamed_sliding_labels_equal_the_argmax_of_the_logits(size, window, stride, flip):
    from parsenet.engine.inference import predict_labels
    from parsenet.models import parsenet_vgg16

    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=5, width=0.0625).eval()
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        expected = predict_logits(model, x, "slide", window=window, stride=stride,
                                  flip=flip).argmax(1)
        got = predict_labels(model, x, "slide", window=window, stride=stride, flip=flip)
    assert torch.equal(got, expected)
