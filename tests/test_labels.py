"""``labels.class_ids``: the same ids as ``argmax(1)`` (first maximum, NaN as the maximum) for
every dtype and memory layout the inference paths hand it."""

import pytest
import torch

from parsenet.labels import class_ids


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_class_ids_equal_argmax_with_ties_and_nans(dtype, channels_last):
    generator = torch.Generator().manual_seed(0)
    # few distinct values: most pixels have tied maxima, where the first must win
    scores = torch.randint(0, 3, (2, 7, 9, 11), generator=generator).to(dtype)
    scores[0, 2, 4, 4] = scores[0, 5, 4, 4] = float("nan")
    scores[1, 6, 0, 0] = float("nan")
    if channels_last:
        scores = scores.contiguous(memory_format=torch.channels_last)
    ids = class_ids(scores)
    assert ids.dtype == torch.int64 and ids.shape == (2, 9, 11)
    assert torch.equal(ids, scores.argmax(1))
    assert ids[0, 4, 4] == 2 and ids[1, 0, 0] == 6
