import pytest
import torch
from torch import nn

from parsenet.engine.optim import PolyLR, build_optimizer, build_scheduler, freeze, param_groups
from parsenet.layers.l2norm import L2Norm
from parsenet.models import parsenet_vgg16


def tiny_model(**kwargs):
    return parsenet_vgg16(num_classes=3, width=0.0625, **kwargs)


def groups_by_name(groups):
    return {g["name"]: g for g in groups}


def test_poly_lr_values_per_iteration():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = build_scheduler(opt, max_iterations=10, power=0.9)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * (1 - it / 10) ** 0.9 for it in range(10)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert opt.param_groups[0]["lr"] == 0.0  # the schedule ends at zero


def test_poly_lr_warmup_is_linear_then_poly():
    poly = PolyLR(100, power=0.9, warmup_iterations=4)
    assert [poly(i) for i in range(4)] == pytest.approx(
        [(i + 1) / 4 * (1 - i / 100) ** 0.9 for i in range(4)])
    assert poly(50) == pytest.approx(0.5 ** 0.9)
    assert poly(150) == 0.0  # past the end: no negative base to a fractional power


def test_scheduler_state_dict_resumes_the_schedule():
    def make():
        model = nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return opt, build_scheduler(opt, max_iterations=20, power=0.9, warmup_iterations=3)

    opt, sched = make()
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert state["lr_lambdas"][0] == {"max_iterations": 20, "power": 0.9, "warmup_iterations": 3}
    opt2, sched2 = make()
    sched2.load_state_dict(state)
    for _ in range(5):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_new_layers_learn_ten_times_faster_than_pretrained():
    model = tiny_model()
    groups = groups_by_name(param_groups(model, lr=0.01, weight_decay=5e-4,
                                         new_layer_lr_mult=10.0,
                                         pretrained_prefixes=["backbone."]))
    assert groups["pretrained/decay"]["lr"] == 0.01
    assert groups["new/decay"]["lr"] == pytest.approx(0.1)
    assert groups["new/no_decay"]["lr"] == pytest.approx(0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups.values():
        for p in g["params"]:
            assert names[id(p)].startswith("backbone.") == g["name"].startswith("pretrained")
    # Every trainable parameter is in exactly one group.
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_no_weight_decay_on_l2norm_scales_batchnorm_and_biases():
    model = tiny_model(batch_norm=True)
    groups = param_groups(model, lr=0.01, weight_decay=5e-4, pretrained_prefixes=["backbone."])
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    checked = {"l2norm": 0, "bn": 0, "bias": 0, "conv": 0}
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, L2Norm):
                kind = "l2norm"
            elif isinstance(module, nn.BatchNorm2d):
                kind = "bn"
            elif pname == "bias":
                kind = "bias"
            else:
                kind = "conv"
            checked[kind] += 1
            assert decay_of[id(p)] == (5e-4 if kind == "conv" else 0.0), (module, pname)
    assert all(checked.values()), checked  # every kind was present in the model


def test_bias_lr_mult_reproduces_caffe_two_x():
    groups = groups_by_name(param_groups(tiny_model(), lr=0.01, weight_decay=0.0,
                                         pretrained_prefixes=["backbone."], bias_lr_mult=2.0))
    assert groups["pretrained/bias"]["lr"] == pytest.approx(0.02)
    assert groups["new/bias"]["lr"] == pytest.approx(0.2)


def test_frozen_prefixes_are_left_out_of_the_optimizer():
    model = tiny_model()
    frozen = freeze(model, ["backbone.layers.conv1", "backbone.layers.conv2"])
    assert len(frozen) == 8  # two stages of two convs, weight and bias each
    opt = build_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert (name in frozen) == (not p.requires_grad)
        assert (id(p) in in_opt) == p.requires_grad
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


def test_everything_frozen_is_an_error():
    model = nn.Linear(2, 2)
    freeze(model, [""])
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, lr=0.1, weight_decay=0.0)
