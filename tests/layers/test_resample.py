import torch

from parsenet.layers import resize_to_input


def test_offset_zero_grid_hits_feature_centres():
    feats = torch.arange(12.0).reshape(1, 1, 3, 4)
    out = resize_to_input(feats, (19, 27), stride=8, offset=0.0)
    assert out.shape[-2:] == (19, 27)
    # Input pixel 8*i sits exactly on feature cell i.
    torch.testing.assert_close(out[0, 0, ::8, ::8], feats[0, 0, :, :])
    # Past the last centre: clamped (replicated), not extrapolated.
    torch.testing.assert_close(out[0, 0, 16:, 24:], feats[0, 0, 2:, 3:].expand(3, 3))


def test_half_offset_grid_hits_feature_centres():
    # A map linear in the cell index: bilinear sampling is exact, so pixel y reads cell
    # coordinate (y - 15.5) / 32 wherever it lies between two centres.
    feats = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 1, 2, 3).contiguous()
    out = resize_to_input(feats, (60, 90), stride=32, offset=15.5)
    assert out.shape[-2:] == (60, 90)
    ys = torch.arange(16, 80, dtype=torch.float32)
    torch.testing.assert_close(out[0, 0, 0, 16:80], (ys - 15.5) / 32)
