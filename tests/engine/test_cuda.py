"""Inference on a CUDA GPU: the same inferencer, backend choice and evaluation as on the CPU.
Skipped without a GPU; ``python -m benchmarks.gpu_check`` runs them (``pytest -m cuda``)."""

import pytest
import torch

from parsenet.engine.backends import make_predictor
from parsenet.engine.evaluation import evaluate
from parsenet.engine.inferencer import InferenceOptions, Inferencer
from parsenet.models import parsenet_vgg16

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return parsenet_vgg16(num_classes=4, width=0.0625).eval()


@pytest.mark.parametrize("mode", ["whole", "slide", "multiscale"])
def test_labels_on_the_gpu_agree_with_the_cpu(model, mode):
    options = InferenceOptions(mode=mode, window=64, stride=48, scales=(0.75, 1.0))
    x = torch.randn(1, 3, 100, 130)
    on = {}
    for device in ("cpu", "cuda"):
        inferencer = Inferencer.create(model, num_classes=4, options=options, backend="eager",
                                       device=device)
        on[device] = inferencer.labels(x)
    assert on["cuda"].device.type == "cpu"  # labels come back to the CPU
    assert (on["cuda"] == on["cpu"]).float().mean() >= 0.99


def test_auto_runs_eager_on_the_gpu(model, monkeypatch):
    monkeypatch.delenv("PARSENET_BACKEND")
    run, backend = make_predictor(model, backend="auto", device="cuda")
    assert backend == "eager"
    assert run(torch.randn(1, 3, 64, 64, device="cuda")).device.type == "cuda"


def test_evaluate_on_the_gpu_matches_the_cpu(model):
    torch.manual_seed(1)
    dataset = [(torch.randn(3, 64, 80), torch.randint(0, 4, (64, 80))) for _ in range(3)]
    cpu = evaluate(model, dataset, num_classes=4, device="cpu", progress=False)
    gpu = evaluate(model, dataset, num_classes=4, device="cuda", progress=False)
    assert gpu["pixel_acc"] == pytest.approx(cpu["pixel_acc"], abs=0.01)
