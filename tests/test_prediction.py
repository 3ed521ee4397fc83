"""predict's file side: what the label PNGs hold."""

import numpy as np
import torch
from PIL import Image
from torch import nn

import parsenet.prediction as prediction
from parsenet.engine.inferencer import InferenceOptions, Inferencer
from parsenet.engine.memory import InferenceMemory
from parsenet.prediction import PredictionWriter, predict_files


def _constant_model(num_classes: int, winner: int) -> nn.Module:
    """A 1x1 conv whose scores put every pixel in class ``winner``."""
    model = nn.Conv2d(3, num_classes, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.bias[winner] = 1.0
    return model.eval()


def test_predict_writes_the_ids_of_a_300_class_model_whole(tmp_path, monkeypatch):
    """uint8 ids would wrap class 299 to 43 without a word: more than 256 classes give a
    16-bit label PNG of the true ids, and the (shrunk) overlay is still drawn."""
    monkeypatch.setattr(prediction, "OVERLAY_MAX_SIDE", 4)  # _shrunk resizes the ids too
    Image.fromarray(np.full((6, 8, 3), 90, dtype=np.uint8)).save(tmp_path / "in.png")
    inferencer = Inferencer(_constant_model(300, 299), 300, InferenceMemory(100.0, 300),
                            InferenceOptions(mode="whole"),
                            preprocessing=lambda image: image.float() / 255)
    writer = PredictionWriter([f"class{k}" for k in range(300)], None)
    written, modes, skipped = predict_files(inferencer, writer, [(tmp_path / "in.png", "in")],
                                            tmp_path / "out")
    assert (modes, skipped) == (["whole"], [])
    label_png, overlay_jpg = written[0]
    with Image.open(label_png) as im:
        print("label PNG:", im.mode, sorted(set(np.asarray(im).ravel().tolist())))
        assert im.mode == "I;16"
        assert np.array_equal(np.asarray(im), np.full((6, 8), 299))
    assert overlay_jpg.is_file()
