"""train.frozen_prefix: a cached prefix gives the loss and gradients of the live prefix for
the same crop (fp32), the rest runs the model's own forward, and a cached run resumes
exactly."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from trainer_fixtures import final_weights, write_tiny_dataset

from parsenet.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig
from parsenet.data.build import build_dataset
from parsenet.engine import frozen_prefix as fp
from parsenet.engine.checkpoint import load_checkpoint
from parsenet.engine.trainer import train
from parsenet.labels import IGNORE_INDEX
from parsenet.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

# fp32 throughout; the cache stores fp32, so any difference is summation order only.
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
MODEL_ARGS = dict(weights=None, features=["stride8", "stride16", "head"], context=True,
                  context_source="head", fusion="late", normalize=True, output_stride=16)


@pytest.fixture(scope="module")
def square_root(tmp_path_factory):
    # 64 x 64: a multiple of the output stride, so the whole image is one aligned crop.
    return write_tiny_dataset(tmp_path_factory.mktemp("square"), n_train=4, n_val=2,
                              height=64, width=64)


def _model(upto: str) -> tuple[torch.nn.Module, list[str]]:
    torch.manual_seed(0)
    model = build_model("parsenet_efficientnet_lite0", num_classes=3, **MODEL_ARGS)
    stages = fp.freeze_prefix(model, upto)
    model.train()
    fp.prefix_to_eval(model, stages)
    return model, stages


def _loss_and_grads(model, net, inputs, labels, valid):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in both
    logits = net(inputs, valid=valid)
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, logits.detach()


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], **TOLERANCE)
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], **TOLERANCE, msg=name)


def test_a_cached_crop_gives_the_loss_and_gradients_of_the_live_prefix(square_root, tmp_path):
    model, stages = _model("stage4")  # the stride-8 tap is inside the prefix
    assert fp.cached_stages(model, stages) == ["stage3", "stage4"]
    data = build_dataset(square_root, "train")
    cache = fp.build_prefix_cache(model, stages, data, root=tmp_path, scales=[1.0, 1.5],
                                  flip=True, preprocessing=model.preprocessing)
    rest = fp.PrefixRest(model, stages)
    # Two images, scale 1.5 and flipped, the crop at pixel (32, 16): interior on one side.
    top, left, crop = 32, 16, (64, 64)
    live, cached = [], []
    for i in (0, 2):
        image, mask = data.load(i)
        scaled, label = fp._scaled(image.as_subclass(torch.Tensor),
                                   mask.as_subclass(torch.Tensor), 1.5, True)
        maps = fp.run_prefix(model.eval(), model.preprocessing(scaled)[None], stages)
        live.append(fp.crop_sample({s: m[0] for s, m in maps.items()}, label,
                                   cache.strides, top, left, crop))
        cached.append(fp.crop_sample(*cache.read(i, 1, 1), cache.strides, top, left, crop))
    model.train()
    fp.prefix_to_eval(model, stages)

    def batch(samples):
        maps = {s: torch.stack([m[s] for m, _, _ in samples]) for s in samples[0][0]}
        return (maps, torch.stack([t for _, t, _ in samples]),
                torch.stack([v for _, _, v in samples]))

    _assert_same(_loss_and_grads(model, rest, *batch(live)),
                 _loss_and_grads(model, rest, *batch(cached)))
    # No gradient reaches the prefix; the rest's first stage gets one.
    names = [n for n, _ in _loss_and_grads(model, rest, *batch(cached))[1].items()]
    assert not any(n.startswith(("backbone.stem", "backbone.stages.3.")) for n in names)
    assert any(n.startswith("backbone.stages.4.") for n in names)


def test_the_rest_on_a_whole_image_crop_is_the_models_own_forward(square_root, tmp_path):
    model, stages = _model("stage5")
    data = build_dataset(square_root, "train")
    cache = fp.build_prefix_cache(model, stages, data, root=tmp_path, scales=[1.0],
                                  flip=False, preprocessing=model.preprocessing)
    image, mask = data.load(1)
    maps, label, valid = fp.crop_sample(*cache.read(1, 0, 0), cache.strides, 0, 0, (64, 64))
    assert bool(valid.all())
    inputs = {s: m[None] for s, m in maps.items()}
    cached = _loss_and_grads(model, fp.PrefixRest(model, stages), inputs, label[None],
                             valid[None])
    pixels = model.preprocessing(image.as_subclass(torch.Tensor))[None]
    whole = _loss_and_grads(model, model, pixels, label[None], valid[None])
    _assert_same(cached, whole)
    torch.testing.assert_close(cached[2], whole[2], **TOLERANCE)


def test_crops_are_stride_aligned_and_padded_past_the_edge(square_root, tmp_path):
    model, stages = _model("head")
    data = build_dataset(square_root, "train")
    cache = fp.build_prefix_cache(model, stages, data, root=tmp_path, scales=[0.5],
                                  flip=False, preprocessing=model.preprocessing)
    assert cache.strides == {"stage3": 8, "stage5": 16, "head": 16}
    crops = fp.CachedCrops(cache, data, (48, 48), align=16)
    maps, label, valid = crops[0]  # the 32 x 32 image, smaller than the crop
    assert label.shape == valid.shape == (48, 48) and maps["head"].shape[-2:] == (3, 3)
    assert bool(valid[:32, :32].all()) and not bool(valid[32:].any())
    assert bool((label[32:] == IGNORE_INDEX).all()) and not bool(maps["stage3"][:, 4:].any())
    with pytest.raises(ConfigError, match="multiple of 16"):
        fp.CachedCrops(cache, data, (40, 40), align=16)
    with pytest.raises(ConfigError, match="frozen_prefix.upto: 'stage9'"):
        fp.prefix_stages(model, "stage9")


def _config(root, out, **prefix) -> Config:
    return Config(
        name="prefix",
        model=ModelConfig(name="parsenet_efficientnet_lite0", args=dict(MODEL_ARGS)),
        data=DataConfig(root=str(root), crop_size=32, scale_range=[1.0, 1.0], workers=0,
                        val_split=""),
        train=TrainConfig(iterations=4, batch_size=2, lr=0.01, checkpoint_every=2,
                          log_every=1, out_dir=str(out), progress=False, amp="off",
                          frozen_prefix=dict(prefix)))


@pytest.mark.parametrize("cached", [False, True])
def test_the_prefix_keeps_its_weights_and_statistics(square_root, tmp_path, cached):
    prefix = dict(upto="stage4", cache=str(tmp_path / "cache") if cached else None)
    train(_config(square_root, tmp_path / "run", **prefix))
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    torch.manual_seed(0)
    start = build_model("parsenet_efficientnet_lite0", num_classes=3, **MODEL_ARGS)
    for name, value in start.state_dict().items():  # BatchNorm's running stats included
        if name.startswith(("backbone.stem.", *(f"backbone.stages.{i}." for i in range(4)))):
            torch.testing.assert_close(state["model"][name], value, rtol=0, atol=0, msg=name)
    assert not torch.equal(state["model"]["backbone.stages.4.0.project.0.weight"],
                           start.state_dict()["backbone.stages.4.0.project.0.weight"])


def test_a_cached_run_resumes_exactly(square_root, tmp_path, monkeypatch):
    prefix = dict(upto="stage4", cache=str(tmp_path / "cache"), scales=[1.0, 1.25])
    train(_config(square_root, tmp_path / "full", **prefix))

    real, loads = fp.CachedCrops.__getitem__, {"n": 0}

    def crash_in_iteration_3(self, index):
        loads["n"] += 1
        if loads["n"] > 4:
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(fp.CachedCrops, "__getitem__", crash_in_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        train(_config(square_root, tmp_path / "cut", **prefix))
    monkeypatch.setattr(fp.CachedCrops, "__getitem__", real)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["iteration"] == 2
    train(_config(square_root, tmp_path / "cut", **prefix), resume=True)
    full, cut = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    for name in full:
        torch.testing.assert_close(cut[name], full[name], rtol=0, atol=0, msg=name)
    log = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]


def test_a_misaligned_crop_is_refused_before_the_cache_is_built(square_root, tmp_path):
    config = _config(square_root, tmp_path / "run", upto="stage4", cache=str(tmp_path / "c"))
    config.data.crop_size = 40
    with pytest.raises(ConfigError, match="data.crop_size: 40 is not a multiple of 16"):
        train(config)
    assert not (tmp_path / "c").exists()


def test_a_cache_needs_a_frozen_prefix_and_a_crop(tmp_path):
    with pytest.raises(ConfigError, match="frozen_prefix.cache needs frozen_prefix.upto"):
        Config(train=TrainConfig(frozen_prefix={"cache": str(tmp_path)}))
    with pytest.raises(ConfigError, match="frozen_prefix.bogus"):
        Config(train=TrainConfig(frozen_prefix={"bogus": 1}))
