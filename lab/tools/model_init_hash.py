"""Hash of a freshly built model's parameters, per config: proves a refactor of the model's
assembly keeps parameter creation order and initialisation.

For every YAML config under ``configs/`` (pretrained weights dropped: only the initialiser
is compared) and for the ResNet and EfficientNet-Lite builders, seeds torch with 0, builds
the model and hashes, in order, every state-dict entry (name, dtype, shape, bytes), the
order of ``named_parameters`` (the optimiser's) and the next draw of the RNG (the same
amount of randomness consumed). Run it on two checkouts and diff the output::

    PYTHONPATH=<checkout>/src python -m lab.tools.model_init_hash > hashes.txt
"""

from __future__ import annotations

import glob
import hashlib
import sys
from pathlib import Path

import torch

from parsenet.config import load_config
from parsenet.models.builders import build_model
from parsenet.recipe import build_model_from_config

ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 21


def _resnet_tap(name: str) -> str:
    """The ResNet tap called ``name``: a checkout whose ResNet taps are its layer names, or
    one whose taps carry the paper's VGG names."""
    from parsenet.backbones import resnet

    new = {"conv3": "layer2", "conv4": "layer3", "conv5": "layer4", "fc7": "layer4"}
    return new[name] if "layer4" in resnet.TAPS else name


def _builder_cases() -> dict[str, dict]:
    r = _resnet_tap
    return {
        "resnet50_default": {"name": "parsenet_resnet50"},
        "resnet50_pyramid_taps": {"name": "parsenet_resnet50", "pyramid": (1, 2, 4),
                                  "features": (r("conv3"), r("conv4"), r("fc7"))},
        "resnet101_baseline": {"name": "parsenet_resnet101", "context": False,
                               "normalize": False},
        "lite0_default": {"name": "parsenet_efficientnet_lite0"},
        "lite0_conv1x1": {"name": "parsenet_efficientnet_lite0", "fusion": "conv1x1",
                          "features": ("stride16", "head"), "scale_init": 20.0},
    }


def model_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().contiguous().cpu().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest.update("|".join(n for n, _ in model.named_parameters()).encode())
    digest.update(torch.rand(4).numpy().tobytes())  # RNG consumed by the build
    return digest.hexdigest()[:16]


def main() -> int:
    torch.set_num_threads(1)
    # glob follows the configs/paper link into the package's copy, as a user's path would.
    for path in sorted(Path(p) for p in glob.glob(str(ROOT / "configs" / "**" / "*.yaml"),
                                                    recursive=True)):
        rel = path.relative_to(ROOT)
        try:
            config = load_config(path)
        except Exception as e:  # noqa: BLE001 - study files and bases are not run configs
            print(f"{rel}: skipped ({type(e).__name__})")
            continue
        config.model.args.pop("weights", None)
        torch.manual_seed(0)
        model = build_model_from_config(config.model, num_classes=NUM_CLASSES)
        print(f"{rel}: {model_hash(model)}")
    for case, kwargs in _builder_cases().items():
        kwargs = dict(kwargs)
        torch.manual_seed(0)
        model = build_model(kwargs.pop("name"), num_classes=NUM_CLASSES, **kwargs)
        print(f"builder {case}: {model_hash(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
