import pytest
import torch
from torch import nn

from parsenet.engine.optim import (
    FixedLR,
    PolyLR,
    build_optimizer,
    build_scheduler,
    freeze,
    lr_factor,
    param_groups,
    stage_parameter_names,
)
from parsenet.layers.l2norm import L2Norm
from parsenet.models import parsenet_vgg16


def tiny_model(**kwargs):
    return parsenet_vgg16(num_classes=3, width=0.0625, **kwargs)


def backbone_names(model):
    """Every backbone parameter, found through the stage names the backbone gives."""
    return stage_parameter_names(model, list(model.backbone.named_stages()))


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
                                         pretrained=backbone_names(model)))
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
    groups = param_groups(model, lr=0.01, weight_decay=5e-4, pretrained=backbone_names(model))
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
    model = tiny_model()
    groups = groups_by_name(param_groups(model, lr=0.01, weight_decay=0.0,
                                         pretrained=backbone_names(model), bias_lr_mult=2.0))
    assert groups["pretrained/bias"]["lr"] == pytest.approx(0.02)
    assert groups["new/bias"]["lr"] == pytest.approx(0.2)


def test_frozen_stages_are_left_out_of_the_optimizer():
    model = tiny_model()
    frozen = freeze(model, ["conv1", "conv2"])
    assert len(frozen) == 8  # two stages of two convs, weight and bias each
    opt = build_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert (name in frozen) == (not p.requires_grad)
        assert (id(p) in in_opt) == p.requires_grad
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


def test_everything_frozen_is_an_error():
    model = nn.Linear(2, 2)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, lr=0.1, weight_decay=0.0)


def test_fixed_policy_is_caffe_constant_rate_with_optional_warmup():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-10, momentum=0.99)
    sched = build_scheduler(opt, max_iterations=5, policy="fixed")
    seen = []
    for _ in range(8):  # past max_iterations too: Caffe's fixed rate never decays
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [1e-10] * 8
    assert [FixedLR(warmup_iterations=4)(i) for i in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert sched.state_dict()["lr_lambdas"][0] == {"warmup_iterations": 0}
    with pytest.raises(ValueError, match="lr policy"):
        lr_factor("step", max_iterations=5)


def test_bias_decay_knob_gives_biases_the_weight_decay():
    kwargs = dict(lr=0.01, weight_decay=5e-4, pretrained=backbone_names(tiny_model()))
    default = groups_by_name(param_groups(tiny_model(), **kwargs))
    decayed = groups_by_name(param_groups(tiny_model(), bias_decay=True, **kwargs))
    assert default["new/bias"]["weight_decay"] == 0.0  # FCN / DeepLab: decay_mult 0
    assert decayed["new/bias"]["weight_decay"] == 5e-4
    assert decayed["pretrained/bias"]["weight_decay"] == 5e-4
    assert decayed["new/no_decay"]["weight_decay"] == 0.0  # L2Norm scales stay undecayed


@pytest.mark.parametrize("base_lr", [1e-10, 1e-9])
def test_summed_loss_momentum_099_tiny_rates_match_a_hand_computed_sgd(base_lr):
    """The FCN recipe at its own numbers: summed softmax loss, momentum 0.99, base LR
    1e-10 / 1e-9, fixed policy, biases 2x and undecayed, new layers 10x. Three steps in
    float32 against the same update rule written out in float64 (Caffe's SGD: v = m v +
    (g + wd w), w -= lr v)."""
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=3, width=0.0625, dropout=0.0, context_dropout=0.0)
    # Caffe-range inputs; 128 x 128: the summed gradient grows with the pixel count, and at
    # 1e-10 a much smaller image moves the weights by less than float32 can resolve.
    x = torch.randn(2, 3, 128, 128) * 50
    y = torch.randint(0, 3, (2, 128, 128))
    opt = build_optimizer(model, lr=base_lr, momentum=0.99, weight_decay=5e-4,
                          new_layer_lr_mult=10.0, pretrained=backbone_names(model),
                          bias_lr_mult=2.0)
    sched = build_scheduler(opt, max_iterations=3, policy="fixed")
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = [p for p in model.parameters() if p.requires_grad]
    ref = [p.detach().double().clone() for p in params]
    velocity = [torch.zeros_like(r) for r in ref]
    for _ in range(3):
        opt.zero_grad()
        # the trainer's "sum": summed over pixels, averaged over the batch's images
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum") / x.shape[0]
        loss.backward()
        for i, p in enumerate(params):
            g = p.grad.double() + wd_of[id(p)] * p.detach().double()
            velocity[i] = 0.99 * velocity[i] + g
            ref[i] = p.detach().double() - lr_of[id(p)] * velocity[i]
        opt.step()
        sched.step()
    assert all(g["lr"] == lr_of[id(g["params"][0])] for g in opt.param_groups)  # fixed
    for p, r in zip(params, ref, strict=True):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.detach().double(), r, rtol=1e-6, atol=1e-12)
    # The step is not lost to float32 rounding: the classifier really moved, by the
    # hand-computed amount (checked on the change itself, not only on the weights).
    head = model.head.classifiers[0].weight
    torch.manual_seed(0)
    fresh = parsenet_vgg16(num_classes=3, width=0.0625, dropout=0.0, context_dropout=0.0)
    start = fresh.head.classifiers[0].weight.detach().double()
    change = head.detach().double() - start
    expected = ref[[id(p) for p in params].index(id(head))] - start
    ulp = 2 * torch.finfo(torch.float32).eps * start.abs().max()  # float32 rounding of w
    resolved = expected.abs() > 10 * ulp  # changes well above rounding
    assert int(resolved.sum()) > 0.5 * change.numel()
    assert int((change != 0).sum()) > 0.9 * change.numel()
    torch.testing.assert_close(change, expected, rtol=1e-2, atol=float(2 * ulp))
