"""The one inference object behind predict, eval and serve: its rule, its pass count, its
errors, and the released models' eval figures it must not change."""

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from parsenet.engine.inference import window_starts
from parsenet.engine.inferencer import InferenceOptions, Inferencer
from parsenet.engine.memory import InferenceMemory
from parsenet.errors import ResourceError, UsageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from data_helpers import shared_dataset  # noqa: E402


class CountingConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def _inferencer(model, **options) -> Inferencer:
    memory = InferenceMemory(bytes_per_pixel=100.0, num_classes=4)
    return Inferencer(model, 4, memory, InferenceOptions(**options))


def test_auto_takes_the_preferred_mode_while_it_fits_the_budget_else_slides():
    inferencer = _inferencer(CountingConv(), budget_gb=100 * 1000 * 1000 / 1e9,
                             preferred="whole")
    assert inferencer.mode_for(1000, 1000) == "whole"
    assert inferencer.mode_for(1001, 1000) == "slide"
    assert inferencer.with_options(mode="whole").mode_for(6000, 6000) == "whole"  # asked
    side = inferencer.largest_preferred_pixels() ** 0.5
    assert side == 1000


@pytest.mark.parametrize(("mode", "size", "flip"), [
    ("whole", (50, 70), False), ("slide", (100, 75), False), ("slide", (100, 75), True),
    ("multiscale", (40, 40), True), ("slide", (30, 30), False)])
def test_passes_counts_the_forward_passes_labelling_makes(mode, size, flip):
    model = CountingConv()
    inferencer = _inferencer(model, mode=mode, window=40, stride=30, scales=(0.5, 1.0),
                             flip=flip)
    labels = inferencer.labels(torch.randn(1, 3, *size))
    assert labels.shape == (1, *size)
    assert model.calls == inferencer.passes(*size)
    if mode == "slide":  # windows counted where they are placed
        rows, cols = (len(window_starts(s, 40, 30)) for s in size)
        assert inferencer.passes(*size) == rows * cols * (2 if flip else 1)


def test_out_of_memory_is_one_line_naming_the_image_and_what_fits(monkeypatch):
    import parsenet.engine.inference as inference

    def allocation_fails(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 9 GB")

    monkeypatch.setattr(inference, "predict_labels", allocation_fails)
    model = CountingConv()
    model.preprocessing = lambda image: image.float() / 255
    inferencer = _inferencer(model, mode="slide", window=64, budget_gb=1.0)
    inferencer.preprocessing = model.preprocessing
    with pytest.raises(ResourceError, match=r"^big\.jpg: out of memory predicting this "
                                            r"300x200 image in 64x64 sliding windows"):
        inferencer.label_image(torch.zeros(3, 300, 200, dtype=torch.uint8), name="big.jpg")


# Confusion-matrix hashes of the released models' eval (eager, their default eval: each
# multi-scale with flip at its own scales) on the first images of each val split; a change
# in any pixel's label changes the hash. A new release, or a new default eval, changes its
# row. The stanford and siftflow rows were computed on the AMX Xeon, the camvid row on the
# AMD EPYC.
RELEASED_EVAL = {
    "stanford": ("stanford_background", 8, "46d9be67ac6b6e6f", 0.5809811593217442),
    "camvid": ("camvid", 4, "7c35b49962236dae", 0.6180773813936463),
    "siftflow": ("siftflow", 4, "b9bc669d33850bce", 0.5567700411474766),
}


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RELEASED_EVAL))
def test_released_models_eval_figures_are_unchanged(name, tmp_path, one_thread):
    from parsenet.apps.tasks import evaluate_checkpoint
    from parsenet.models.released import released

    folder, images, digest, mean_iou = RELEASED_EVAL[name]
    root = shared_dataset(folder)
    result = evaluate_checkpoint(released(name), split="val", max_images=images,
                                 out=tmp_path / "eval.json", progress=False,
                                 overrides=[f"data.root={root}"])
    confusion = result["metrics"]["confusion"]
    if hashlib.sha256(json.dumps(confusion).encode()).hexdigest()[:16] == digest:
        assert result["metrics"]["mean_iou"] == mean_iou
    else:
        # The CPU kinds' kernels (AMX, AVX512, AVX2) round differently: a multi-scale eval
        # labels a few tie pixels otherwise (stanford: mean IU 2.4e-6 apart between the AMX
        # Xeon and the AMD EPYC). A change in the code moves far more than that.
        assert result["metrics"]["mean_iou"] == pytest.approx(mean_iou, abs=2e-5)


def test_label_image_keeps_the_ids_of_more_than_256_classes():
    """uint8 would wrap class 299 to 43: a 300-class model's ids come back as int32, a
    small model's still as uint8."""
    preprocessing = lambda image: image.float() / 255  # noqa: E731
    image = torch.zeros(3, 5, 7, dtype=torch.uint8)
    for classes, dtype in ((300, torch.int32), (4, torch.uint8)):
        model = nn.Conv2d(3, classes, 1)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.zero_()
            model.bias[classes - 1] = 1.0
        inferencer = Inferencer(model, classes, InferenceMemory(100.0, classes),
                                InferenceOptions(mode="whole"), preprocessing=preprocessing)
        labels, _ = inferencer.label_image(image)
        print(classes, "classes:", labels.dtype, labels.unique().tolist())
        assert labels.dtype == dtype and (labels == classes - 1).all()


def test_label_image_names_the_image_a_scale_would_enlarge_past_the_limit():
    model = CountingConv()
    inferencer = Inferencer(model, 4, InferenceMemory(100.0, 4),
                            InferenceOptions(mode="multiscale", scales=(1.0, 1e4)),
                            preprocessing=lambda image: image.float() / 255)
    with pytest.raises(UsageError) as caught:
        inferencer.label_image(torch.zeros(3, 40, 56, dtype=torch.uint8), name="a.png")
    print("label_image:", caught.value)
    assert str(caught.value).startswith("a.png: scale 10000 would make this 40x56 image ")
    assert model.calls == 0


def test_a_resize_warps_the_image_and_labels_it_at_its_own_size():
    """data.resize: the model sees the warped image (bilinear, antialiased, as the eval
    transforms warp it); the scores come back to the image's size bilinearly."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    torch.manual_seed(0)
    model, shapes = CountingConv().eval(), []
    model.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape[-2:])))
    inferencer = Inferencer(model, 4, InferenceMemory(100.0, 4),
                            InferenceOptions(mode="whole", resize=(32, 64)),
                            preprocessing=lambda image: image.float() / 255)
    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8)
    labels, mode = inferencer.label_image(image)
    assert (mode, shapes, labels.shape) == ("whole", [(32, 64)], (37, 53))
    warped = TF.resize(image, [32, 64], interpolation=InterpolationMode.BILINEAR,
                       antialias=True)
    with torch.no_grad():
        scores = model(warped[None].float() / 255)
        native = model(image[None].float() / 255).argmax(1)[0]
    expected = torch.nn.functional.interpolate(scores, size=(37, 53), mode="bilinear",
                                               align_corners=False).argmax(1)[0]
    assert torch.equal(labels, expected.to(torch.uint8))
    assert not torch.equal(labels, native.to(torch.uint8))  # the warp shows in the labels
    unwarped, _ = inferencer.with_options(resize=None).label_image(image)
    assert torch.equal(unwarped, native.to(torch.uint8)) and shapes[-1] == (37, 53)
