import pytest
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


def test_align_to_grid_upsamples_and_shifts_by_whole_cells():
    from parsenet.layers.resample import Grid, align_to_grid

    # fc7 of FCN with conv1_1 pad 100 (stride 32, offset 12.5) onto its conv4 grid (stride
    # 8, offset -95.5): fine cell j reads coarse coordinate (8 j - 95.5 - 12.5) / 32,
    # clamped to the map, including the cells before the coarse map starts.
    n = 5
    coarse = torch.arange(float(n)).view(1, 1, 1, n).expand(1, 1, 2, n).contiguous()
    fine = align_to_grid(coarse, Grid(32, 12.5), Grid(8, -95.5), (2, 40))
    j = torch.arange(40, dtype=torch.float32)
    expected = ((8 * j - 108) / 32).clamp(0, n - 1)
    torch.testing.assert_close(fine[0, 0, 0], expected)
    # A pure shift (equal strides) crops whole cells.
    shifted = align_to_grid(coarse, Grid(32, -83.5), Grid(32, 12.5), (2, 2))
    torch.testing.assert_close(shifted[0, 0, 0], torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize(("stride", "offset", "step"),
                         [(8, 0.0, 2), (8, 0.0, 4), (8, 0.0, 8), (16, 15.0, 4), (16, 15.0, 8),
                          (16, 15.0, 16), (32, 31.0, 4)])
def test_resize_to_pixels_is_the_full_resize_at_the_loss_pixels(stride, offset, step):
    """The loss's sample (train.loss_stride) upsampled alone: the same values and the same
    gradient as upsampling every pixel and indexing."""
    from parsenet.engine.iteration import loss_pixels
    from parsenet.layers.resample import resize_to_pixels

    torch.manual_seed(0)
    size = (77, 101)
    cells = (size[0] // stride + 2, size[1] // stride + 2)
    first, step = loss_pixels(stride, offset, step)
    x = torch.randn(2, 5, *cells, requires_grad=True)
    full = resize_to_input(x, size, stride, offset)[..., first::step, first::step]
    sampled = resize_to_pixels(x, size, stride, offset, (first, step))
    assert sampled.shape == full.shape
    torch.testing.assert_close(sampled, full, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(full)
    (grad_full,) = torch.autograd.grad(full, x, upstream)
    (grad_sampled,) = torch.autograd.grad(sampled, x, upstream)
    torch.testing.assert_close(grad_sampled, grad_full, rtol=1e-5, atol=1e-5)


def test_whole_offset_grid_reads_its_cells_and_crops_once(tmp_path):
    """TF-"SAME" grids (EfficientNet-Lite, cells at 16 i + 15): pixel y reads cell coordinate
    (y - 15) / 16, clamped; exported, the upsampled logits are cropped once per axis (each
    crop is a copy of the full-resolution logits)."""
    onnx = pytest.importorskip("onnx")
    feats = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 2, 3, 4).contiguous()
    out = resize_to_input(feats, (40, 61), stride=16, offset=15.0)
    assert out.shape == (1, 2, 40, 61)
    ys = torch.arange(61, dtype=torch.float32)
    torch.testing.assert_close(out[0, 1, 7], ((ys - 15) / 16).clamp(0, 3))

    class Upsample(torch.nn.Module):
        def forward(self, x, image):
            return resize_to_input(x, image.shape[-2:], 16, 15.0)

    path = tmp_path / "upsample.onnx"
    torch.onnx.export(Upsample(), (feats, torch.zeros(1, 3, 40, 61)), str(path),
                      input_names=["x", "image"], output_names=["logits"], dynamo=False,
                      dynamic_axes={"x": {2: "h", 3: "w"}, "image": {2: "H", 3: "W"}})
    graph = onnx.load(str(path)).graph
    chain, tensor = [], next(n for n in graph.node if n.op_type == "Resize").output[0]
    while tensor != "logits":
        (node,) = [n for n in graph.node if tensor in n.input]
        chain.append(node.op_type)
        tensor = node.output[0]
    assert chain == ["Slice", "Slice"]  # the tracer slices one axis at a time
