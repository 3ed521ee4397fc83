"""Joint training / evaluation transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import blocky_label, image_for
from torchvision import tv_tensors

from parsenet.data.transforms import (
    PadToSize,
    RandomScale,
    eval_transforms,
    mean_fill,
    train_transforms,
)
from parsenet.preprocessing import CAFFE_VGG, IMAGENET, Preprocessing


def pair(height: int = 30, width: int = 40, num_classes: int = 5, seed: int = 0):
    label = blocky_label(height, width, num_classes, seed=seed)
    image = torch.from_numpy(image_for(label, seed)).permute(2, 0, 1).contiguous()
    return tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(label))


@pytest.mark.parametrize("preprocessing", [IMAGENET, CAFFE_VGG])
def test_eval_transforms_match_preprocessing(preprocessing):
    image, mask = pair()
    out_image, out_mask = eval_transforms(preprocessing)(image, mask)
    assert out_image.dtype == torch.float32 and tuple(out_image.shape) == (3, 30, 40)
    assert out_mask.dtype == torch.int64 and torch.equal(out_mask, mask.long())
    assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor
    torch.testing.assert_close(out_image, preprocessing(image.as_subclass(torch.Tensor)))


def test_mean_fill_is_the_colour_that_normalises_to_zero():
    assert mean_fill(IMAGENET) == (124, 116, 104)
    assert mean_fill(CAFFE_VGG) == (123, 117, 104)  # Caffe's mean is BGR
    for p in (IMAGENET, CAFFE_VGG):
        fill = torch.tensor(mean_fill(p), dtype=torch.uint8).view(3, 1, 1)
        # within half a grey level of zero
        assert p(fill).abs().max() <= 0.5 / 255 * p.pixel_max / min(p.std)


def test_train_output_shapes_and_types():
    image, mask = pair(30, 40)
    out_image, out_mask = train_transforms(24, (0.5, 2.0))(image, mask)
    assert out_image.dtype == torch.float32 and tuple(out_image.shape) == (3, 24, 24)
    assert out_mask.dtype == torch.int64 and tuple(out_mask.shape) == (24, 24)
    out_image, out_mask = train_transforms((16, 20))(image, mask)
    assert tuple(out_image.shape) == (3, 16, 20) and tuple(out_mask.shape) == (16, 20)


def test_plain_tensors_are_accepted():
    image, mask = pair()
    out_image, out_mask = train_transforms(16)(image.as_subclass(torch.Tensor),
                                               mask.as_subclass(torch.Tensor))
    assert tuple(out_image.shape) == (3, 16, 16) and tuple(out_mask.shape) == (16, 16)


@pytest.mark.parametrize("preprocessing", [IMAGENET, CAFFE_VGG])
def test_small_images_are_padded_with_mean_and_ignore(preprocessing):
    torch.manual_seed(0)
    image, mask = pair(10, 12)
    out_image, out_mask = train_transforms(32, (1.0, 1.0), flip=False,
                                           preprocessing=preprocessing)(image, mask)
    # Content at the top-left, as Caffe/DeepLab pad; the rest is padding.
    assert torch.equal(out_mask[:10, :12], mask.long())
    assert (out_mask[10:] == 255).all() and (out_mask[:, 12:] == 255).all()
    padding = torch.cat([out_image[:, 10:].flatten(1), out_image[:, :, 12:].flatten(1)], 1)
    assert padding.abs().max() < 0.01 * preprocessing.pixel_max
    torch.testing.assert_close(out_image[:, :10, :12],
                               preprocessing(image.as_subclass(torch.Tensor)))


def test_labels_are_only_resampled_nearest():
    image, mask = pair(30, 40, num_classes=4, seed=3)
    present = set(np.unique(mask.numpy()).tolist())
    pipeline = train_transforms(36, (0.3, 3.0))
    torch.manual_seed(0)
    for _ in range(40):
        _, out_mask = pipeline(image, mask)
        assert set(np.unique(out_mask.numpy()).tolist()) <= present | {255}


def test_image_and_mask_stay_aligned():
    """Each class has its own colour: after scaling, cropping and flipping, the pixels inside
    a class region (away from its edges) must still show that class's colour."""
    label = np.repeat(np.repeat(np.arange(48, dtype=np.uint8).reshape(6, 8), 8, 0), 8, 1)
    colors = image_for(np.arange(256, dtype=np.uint8), seed=5)
    image = tv_tensors.Image(torch.from_numpy(colors[label]).permute(2, 0, 1).contiguous())
    mask = tv_tensors.Mask(torch.from_numpy(label))
    plain = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # x -> x
    pipeline = train_transforms(40, (0.6, 2.5), flip=True, preprocessing=plain)
    torch.manual_seed(1)
    for _ in range(20):
        out_image, out_mask = pipeline(image, mask)
        m = out_mask.numpy()
        # Interior pixels: same class within 2 pixels (bilinear / antialias blur reaches
        # about 1.7 pixels at the smallest scale, nearest rounding half a pixel).
        inner = np.zeros_like(m, dtype=bool)
        h, w = m.shape
        inner[2:-2, 2:-2] = True
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                inner[2:-2, 2:-2] &= m[2:-2, 2:-2] == m[2 + dy:h - 2 + dy, 2 + dx:w - 2 + dx]
        inner &= m != 255
        assert inner.sum() > 50
        got = out_image.permute(1, 2, 0).numpy()[inner]
        expected = colors[m[inner]].astype(np.float32)
        assert np.abs(got - expected).max() <= 3.0


def test_flip_happens_about_half_the_time():
    image, mask = pair(16, 16)
    pipeline = train_transforms(16, (1.0, 1.0), flip=True)
    torch.manual_seed(0)
    flipped = 0
    for _ in range(40):
        _, out_mask = pipeline(image, mask)
        if torch.equal(out_mask, mask.long().flip(-1)):
            flipped += 1
        else:
            assert torch.equal(out_mask, mask.long())
    assert 8 <= flipped <= 32
    torch.manual_seed(0)
    no_flip = train_transforms(16, (1.0, 1.0), flip=False)
    assert all(torch.equal(no_flip(image, mask)[1], mask.long()) for _ in range(10))


def test_scale_range_changes_the_content_scale():
    # A 2x zoom of a 4x4-block label shows 8x8 blocks: count label changes along rows.
    image, mask = pair(64, 64, num_classes=50, seed=2)
    def changes(scale: float) -> float:
        torch.manual_seed(0)
        out = train_transforms(32, (scale, scale), flip=False)(image, mask)[1].numpy()
        return float((out[:, 1:] != out[:, :-1]).mean())
    assert changes(2.0) < 0.7 * changes(1.0)


def test_colour_jitter_changes_colours_but_keeps_zero_padding():
    torch.manual_seed(0)
    image, mask = pair(10, 12)
    jittered, out_mask = train_transforms(16, (1.0, 1.0), flip=False, color_jitter=0.5)(image,
                                                                                       mask)
    plain, _ = train_transforms(16, (1.0, 1.0), flip=False)(image, mask)
    assert not torch.allclose(jittered[:, :10, :12], plain[:, :10, :12])
    assert jittered[:, 10:].abs().max() < 0.01 and torch.equal(out_mask, _padded(mask, 16))


def _padded(mask, size):
    out = torch.full((size, size), 255, dtype=torch.int64)
    out[:mask.shape[0], :mask.shape[1]] = mask.long()
    return out


def test_scaled_labels_are_sampled_at_pixel_centres():
    # A 2x enlargement repeats every label twice; a 1/2 shrink keeps every other label
    # starting from the second (the centre of output pixel j is source pixel 2j + 0.5).
    label = torch.arange(24, dtype=torch.uint8).view(4, 6)
    image = tv_tensors.Image(torch.zeros(3, 4, 6, dtype=torch.uint8))
    _, up = RandomScale((2.0, 2.0))(image, tv_tensors.Mask(label))
    assert torch.equal(up, label.repeat_interleave(2, 0).repeat_interleave(2, 1))
    _, down = RandomScale((0.5, 0.5))(image, tv_tensors.Mask(label))
    assert torch.equal(down, label[1::2, 1::2])


def test_scale_and_pad_reject_bad_arguments_and_mismatched_sizes():
    with pytest.raises(ValueError, match="crop_size"):
        PadToSize(0)
    with pytest.raises(ValueError, match="scale_range"):
        RandomScale((2.0, 1.0))
    image, _ = pair(10, 12)
    with pytest.raises(ValueError, match="sizes differ"):
        RandomScale((0.5, 2.0))(image, tv_tensors.Mask(torch.zeros(9, 12, dtype=torch.uint8)))
    with pytest.raises(ValueError, match="sizes differ"):
        PadToSize(8)(image, tv_tensors.Mask(torch.zeros(9, 12, dtype=torch.uint8)))


def test_validity_mask_marks_exactly_the_crop_padding():
    image, mask = pair(30, 40)
    torch.manual_seed(0)
    out_image, out_mask, valid = train_transforms(48, (1.0, 1.0), flip=False,
                                                  with_valid=True)(image, mask)
    assert valid.dtype == torch.bool and valid.shape == (48, 48)
    assert valid[:30, :40].all() and not valid[30:].any() and not valid[:, 40:].any()
    assert torch.equal(out_mask[:30, :40], mask.long()) and (out_mask[~valid] == 255).all()
    # The same random draw without the mask gives the same image and labels.
    torch.manual_seed(0)
    plain_image, plain_mask = train_transforms(48, (1.0, 1.0), flip=False)(image, mask)
    assert torch.equal(plain_image, out_image) and torch.equal(plain_mask, out_mask)


def test_validity_mask_follows_scale_and_flip():
    label = blocky_label(30, 40, 5, seed=1, ignore_fraction=0.0)
    image = tv_tensors.Image(torch.from_numpy(image_for(label, 1)).permute(2, 0, 1).contiguous())
    mask = tv_tensors.Mask(torch.from_numpy(label))
    for seed in range(6):
        torch.manual_seed(seed)
        _, out_mask, valid = train_transforms(64, (0.5, 1.5), flip=True,
                                              with_valid=True)(image, mask)
        # Real pixels are exactly the non-padding ones (the source labels have no 255).
        assert torch.equal(valid, out_mask != 255)
        assert valid.any()


def test_whole_image_training_keeps_the_image_as_it_is():
    image, mask = pair(30, 41)
    out_image, out_mask, valid = train_transforms(None, (1.0, 1.0), flip=False,
                                                  with_valid=True)(image, mask)
    assert out_image.shape == (3, 30, 41) and valid.all()  # any size, no crop, no padding
    torch.testing.assert_close(out_image, IMAGENET(image.as_subclass(torch.Tensor)))
    assert torch.equal(out_mask, mask.long())
    torch.manual_seed(0)
    scaled_image, scaled_mask = train_transforms(None, (2.0, 2.0), flip=False)(image, mask)
    assert scaled_image.shape == (3, 60, 82) and scaled_mask.shape == (60, 82)  # no warp
