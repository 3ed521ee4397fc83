"""The one normalisation: :class:`parsenet.preprocessing.ToModelInput`."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from parsenet.data.transforms import train_transforms
from parsenet.preprocessing import CAFFE_VGG, IMAGENET, ToModelInput


@pytest.mark.parametrize("preprocessing", [IMAGENET, CAFFE_VGG])
def test_calling_a_preprocessing_runs_its_transform(preprocessing):
    image = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)  # a batch works too
    out = preprocessing(image)
    assert isinstance(preprocessing.transform, ToModelInput)
    assert torch.equal(out, preprocessing.transform(image))
    # The formula, written the long way: channel order, pixel range, mean, std.
    x = image.float() / 255 * preprocessing.pixel_max
    if preprocessing.channel_order == "BGR":
        x = x.flip(-3)
    mean = torch.tensor(preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(preprocessing.std).view(3, 1, 1)
    torch.testing.assert_close(out, (x - mean) / std)
    assert out.dtype == torch.float32 and type(out) is torch.Tensor


def test_float_images_in_0_1_match_uint8_and_inputs_stay_untouched():
    image = torch.randint(0, 256, (3, 4, 6), dtype=torch.uint8)
    as_float = image.float() / 255
    copy = as_float.clone()
    torch.testing.assert_close(IMAGENET(as_float), IMAGENET(image))
    assert torch.equal(as_float, copy)  # normalised in a copy, not in place


def test_masks_pass_through_and_bad_dtypes_are_refused():
    image = tv_tensors.Image(torch.zeros(3, 2, 2, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.full((2, 2), 7, dtype=torch.uint8))
    out_image, out_mask = IMAGENET.transform(image, mask)
    assert isinstance(out_image, tv_tensors.Image) and out_mask is mask
    with pytest.raises(TypeError, match="uint8 or float"):
        IMAGENET(torch.zeros(3, 2, 2, dtype=torch.int32))


def test_a_seed_draws_the_scale_then_the_crop_row_then_the_column():
    """The draw order the hand-written RandomScaleCrop used (module docstring of
    parsenet.data.transforms), which keeps fixed-seed runs' crops: replaying it by hand
    predicts the crop."""
    label = (torch.arange(40 * 50).view(40, 50) % 251).to(torch.uint8)
    image = torch.zeros(3, 40, 50, dtype=torch.uint8)
    torch.manual_seed(3)
    _, out = train_transforms(24, (0.8, 1.2), flip=False)(image, label)
    torch.manual_seed(3)
    scale = 0.8 + 0.4 * float(torch.rand(()).item())
    height, width = round(40 * scale), round(50 * scale)
    top = int(torch.randint(0, height - 24 + 1, ()).item())
    left = int(torch.randint(0, width - 24 + 1, ()).item())
    scaled = torch.nn.functional.interpolate(label[None, None].float(), size=(height, width),
                                             mode="nearest-exact")[0, 0].long()
    assert (height, width) != (40, 50) and torch.equal(out, scaled[top:top + 24, left:left + 24])


def test_dataset_pipelines_and_direct_calls_give_the_same_bits():
    """One normalisation: what eval and train transforms end with is what evaluate, predict
    and serve run when they call the preprocessing on a uint8 image."""
    from parsenet.data.transforms import eval_transforms

    image = torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8)
    mask = torch.zeros(9, 11, dtype=torch.uint8)
    for preprocessing in (IMAGENET, CAFFE_VGG):
        direct = preprocessing(image)
        assert torch.equal(eval_transforms(preprocessing)(image, mask)[0], direct)
        trained = train_transforms(None, (1.0, 1.0), flip=False, preprocessing=preprocessing)
        assert torch.equal(trained(image, mask)[0], direct)
