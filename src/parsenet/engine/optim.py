"""Parameter groups and the poly learning-rate schedule of ParseNet / DeepLab.

Groups. The ``pretrained`` parameters (:func:`pretrained_parameter_names`: the backbone stages
the weights entry filled, every parameter for a whole-model entry) learn at the base rate;
every other parameter belongs to a layer that starts from scratch ("new layers": the
classifier, the L2Norm scales, ...) and learns ``new_layer_lr_mult`` times faster (the
10x of DeepLab's prototxts, where fc8 has ``lr_mult: 10``; the paper states no multiplier,
and FCN's score layers learn at 1x). The parameters of the backbone stages ``model.freeze``
names get ``requires_grad=False`` and are left out of the optimizer (:func:`freeze`).
Stages are named by the backbone (``named_stages()``), never by module path.

Weight decay is not applied to biases, to normalisation parameters (BatchNorm / GroupNorm /
LayerNorm affine terms) and to the L2Norm scales. Decay is a prior that weights are small;
for a bias that prior is meaningless (Caffe's prototxts set ``decay_mult: 0`` on biases) and
for a scale it is harmful: an L2Norm or BatchNorm gain sets the magnitude of a whole branch,
whose right size is what the layer exists to learn (ParseNet's point is that the scales of
fc7, pool6 and conv4 must be *learned* to balance), so decay only drags every branch towards
zero without regularising anything.

Biases. Caffe's prototxts (FCN, DeepLab, ParseNet) give every bias ``lr_mult: 2`` and
``decay_mult: 0``. We keep biases at their group's rate by default (``bias_lr_mult=1``), as
torchvision's segmentation recipe does, because the 2x is a Caffe convention the paper does
not discuss; ``train.bias_lr_mult: 2`` reproduces the prototxts. ``bias_decay=True`` gives
biases the weight decay (Caffe's own default, ``decay_mult: 1``, which none of those nets
use).

Schedules (``train.lr_policy``): ``"poly"``, DeepLab's and the paper's Baseline D
(``base_lr * (1 - it/max_iter) ** power``), and ``"fixed"``, Caffe's constant rate, which
the FCN solvers (Baselines A-C) use.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from parsenet.choices import LR_POLICIES
from parsenet.errors import ConfigError
from parsenet.layers.l2norm import L2Norm
from parsenet.weights_api import ModelWeights, Weights

__all__ = ["param_groups", "build_optimizer", "PolyLR", "FixedLR", "LR_POLICIES",
           "lr_factor", "build_scheduler", "freeze", "stage_parameter_names",
           "pretrained_parameter_names"]


_NORM_TYPES: tuple[type[nn.Module], ...] = (
    L2Norm, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
)


def stage_parameter_names(model: nn.Module, stages: Sequence[str],
                          key: str = "model.freeze") -> list[str]:
    """Names (in ``model``) of the parameters of the backbone stages ``stages``.

    An unknown stage is a :class:`ConfigError` naming ``key`` and the backbone's stages.
    """
    named = model.backbone.named_stages()
    unknown = [s for s in stages if s not in named]
    if unknown:
        raise ConfigError(f"{key}: {unknown[0]!r} is not a stage of the "
                          f"{type(model.backbone).__name__} (stages: {', '.join(named)})")
    owner = {id(p): s for s in stages for p in named[s].parameters()}
    return [name for name, p in model.named_parameters() if id(p) in owner]


def pretrained_parameter_names(model: nn.Module, weights: Weights | None) -> list[str]:
    """The parameters ``weights`` filled: its stages; all of them for a whole model."""
    if weights is None:
        return []
    if isinstance(weights, ModelWeights):
        return [name for name, _ in model.named_parameters()]
    return stage_parameter_names(model, weights.fills, key="model.args.weights")


def freeze(model: nn.Module, stages: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on the backbone stages ``stages``; return the names."""
    frozen = stage_parameter_names(model, stages) if stages else []
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return frozen


def norm_stats_to_eval(model: nn.Module) -> int:
    """Put the backbone's BatchNorm layers in eval mode (running statistics used and kept);
    returns how many. ``model.norm_eval`` calls it after every ``model.train()``:
    mmsegmentation's ``norm_eval``. A small CPU batch (8 crops) gives noisy batch
    statistics that drift a pretrained backbone's away from ImageNet's."""
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.eval()
    return len(norms)


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    new_layer_lr_mult: float = 10.0,
    pretrained: Collection[str] = (),
    bias_lr_mult: float = 1.0,
    bias_decay: bool = False,
) -> list[dict[str, Any]]:
    """Split trainable parameters into optimizer groups (see the module docstring).

    ``pretrained``: names of the parameters that start from pretrained weights.
    Each group has ``params``, ``lr``, ``weight_decay`` and a ``name`` such as
    ``"pretrained/decay"``, ``"new/no_decay"`` or ``"new/bias"``. Empty groups are dropped.
    """
    pretrained = set(pretrained)
    groups: dict[str, dict[str, Any]] = {}
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, _NORM_TYPES)
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            name = f"{module_name}.{pname}" if module_name else pname
            origin = "pretrained" if name in pretrained else "new"
            group_lr = lr if origin == "pretrained" else lr * new_layer_lr_mult
            is_bias = pname == "bias"
            if is_bias and not is_norm:
                kind, group_lr = "bias", group_lr * bias_lr_mult
                decay = weight_decay if bias_decay else 0.0
            elif is_norm:
                kind, decay = "no_decay", 0.0
            else:
                kind, decay = "decay", weight_decay
            key = f"{origin}/{kind}"
            group = groups.setdefault(
                key, {"name": key, "params": [], "lr": group_lr, "weight_decay": decay}
            )
            group["params"].append(p)
    if not groups:
        # A ConfigError (a ValueError too): model.freeze froze every parameter.
        raise ConfigError("model.freeze: the model has no trainable parameters left "
                          "(every parameter is frozen)")
    return list(groups.values())


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, weight_decay: float,
                    new_layer_lr_mult: float = 10.0, pretrained: Collection[str] = (),
                    bias_lr_mult: float = 1.0, bias_decay: bool = False) -> torch.optim.SGD:
    """SGD with momentum over :func:`param_groups` (PyTorch's SGD is Caffe's: v = m v + g,
    w -= lr v, with the weight decay added to g)."""
    groups = param_groups(model, lr=lr, weight_decay=weight_decay,
                          new_layer_lr_mult=new_layer_lr_mult,
                          pretrained=pretrained, bias_lr_mult=bias_lr_mult,
                          bias_decay=bias_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


class PolyLR:
    """LR factor at iteration ``it``: ``(1 - it / max_iterations) ** power``, times a linear
    warmup ``(it + 1) / warmup_iterations`` during the first ``warmup_iterations``.

    A callable object rather than a lambda so that ``LambdaLR.state_dict()`` stores its
    numbers (a plain function would not be saved, and would not load with weights_only).
    """

    def __init__(self, max_iterations: int, power: float = 0.9, warmup_iterations: int = 0):
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be positive, got {max_iterations}")
        self.max_iterations = int(max_iterations)
        self.power = float(power)
        self.warmup_iterations = int(warmup_iterations)

    def __call__(self, it: int) -> float:
        factor = max(0.0, 1.0 - it / self.max_iterations) ** self.power
        if it < self.warmup_iterations:
            factor *= (it + 1) / self.warmup_iterations
        return factor


class FixedLR:
    """Caffe's ``lr_policy: "fixed"``: factor 1 at every iteration, times the same linear
    warmup as :class:`PolyLR`. A callable object for the same state_dict reason."""

    def __init__(self, warmup_iterations: int = 0):
        self.warmup_iterations = int(warmup_iterations)

    def __call__(self, it: int) -> float:
        return (it + 1) / self.warmup_iterations if it < self.warmup_iterations else 1.0


def lr_factor(policy: str, *, max_iterations: int, power: float = 0.9,
              warmup_iterations: int = 0) -> PolyLR | FixedLR:
    """The per-iteration LR factor of ``policy`` (one of :data:`LR_POLICIES`)."""
    if policy == "poly":
        return PolyLR(max_iterations, power, warmup_iterations)
    if policy == "fixed":
        return FixedLR(warmup_iterations)
    raise ValueError(f"lr policy must be one of {LR_POLICIES}, got {policy!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, *, max_iterations: int, power: float = 0.9,
                    warmup_iterations: int = 0, policy: str = "poly") -> LambdaLR:
    """The ``policy`` schedule, stepped once per iteration (not per epoch)."""
    return LambdaLR(optimizer, lr_factor(policy, max_iterations=max_iterations, power=power,
                                         warmup_iterations=warmup_iterations))
