"""build_dataset: from a DataConfig to a dataset, for every format."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import shared_dataset, write_folder_dataset

from parsenet.config import ConfigError, DataConfig
from parsenet.data import FORMATS, build_dataset
from parsenet.data.camvid import CamVid
from parsenet.data.context import PascalContext
from parsenet.data.folder import SegmentationFolder
from parsenet.data.siftflow import SiftFlow
from parsenet.data.voc import VOCSegmentation
from parsenet.preprocessing import CAFFE_VGG


def test_folder_train_and_val_with_transforms_from_config(folder_dataset):
    root = folder_dataset("train", num_images=3, size=(24, 32))
    write_folder_dataset(root, "val", num_images=2, size=(20, 28))
    cfg = DataConfig(root=str(root), format="folder", crop_size=16)
    raw = build_dataset(cfg, "train")
    assert isinstance(raw, SegmentationFolder) and len(raw) == 3
    assert raw[0][0].dtype == torch.uint8  # no preprocessing: raw pairs
    train = build_dataset(cfg, "train", preprocessing=CAFFE_VGG)
    image, mask = train[0]
    assert tuple(image.shape) == (3, 16, 16) and image.dtype == torch.float32
    assert mask.dtype == torch.int64
    val = build_dataset(cfg, "val", preprocessing=CAFFE_VGG)
    image, mask = val[0]
    assert len(val) == 2 and tuple(image.shape) == (3, 20, 28)  # eval: own size
    torch.testing.assert_close(image, CAFFE_VGG(val.load(0)[0].as_subclass(torch.Tensor)))


def test_explicit_transforms_win(folder_dataset):
    cfg = DataConfig(root=str(folder_dataset()), format="folder")
    dataset = build_dataset(cfg, "train", transforms=lambda i, m: ("called", m),
                            preprocessing=CAFFE_VGG)
    assert dataset[0][0] == "called"


def test_holdout_carves_disjoint_train_and_val(folder_dataset):
    root = folder_dataset("trainval", num_images=10)
    cfg = DataConfig(root=str(root), format="folder", train_split="trainval",
                     val_split="trainval", holdout_every=3)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    everything = sorted(SegmentationFolder(root, "trainval").ids)
    assert val.ids == everything[::3]
    assert sorted(train.ids + val.ids) == everything and not set(train.ids) & set(val.ids)
    with pytest.raises(ConfigError, match="holdout_every"):
        build_dataset(DataConfig(root=str(root), format="folder", train_split="trainval",
                                 holdout_every=1), "train")


def test_bad_format_and_split(folder_dataset):
    with pytest.raises(ConfigError, match="data.format: 'coco' is not allowed"):
        build_dataset(DataConfig(root=".", format="coco"), "train")
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        build_dataset(DataConfig(root=str(folder_dataset()), format="folder"), "test")


@pytest.mark.parametrize("fmt, fixture, train_split, val_split, cls", [
    ("voc", "voc_root", "train_aug", "val", VOCSegmentation),
    ("context", "context_root", "train", "val", PascalContext),
    ("siftflow", "siftflow_root", "trainval", "test", SiftFlow),
    ("camvid", "camvid_root", "train", "val", CamVid),
])
def test_published_formats(request, fmt, fixture, train_split, val_split, cls):
    root = request.getfixturevalue(fixture)
    cfg = DataConfig(root=str(root), format=fmt, train_split=train_split, val_split=val_split,
                     crop_size=8)
    train = build_dataset(cfg, "train", preprocessing=CAFFE_VGG)
    val = build_dataset(cfg, "val")
    assert type(train) is cls and type(val) is cls and fmt in FORMATS
    assert train.split == train_split and val.split == val_split
    image, mask = train[0]
    assert tuple(image.shape) == (3, 8, 8) and tuple(mask.shape) == (8, 8)


def test_synthetic_generates_then_reads_a_folder(tmp_path, monkeypatch):
    calls = []

    def ensure_dataset(root, **params):
        calls.append((root, params))
        write_folder_dataset(Path(root), "train", num_images=2)
        return Path(root)

    fake = types.ModuleType("parsenet.data.synthetic")
    fake.ensure_dataset = ensure_dataset
    fake.PALETTE = np.zeros((3, 3), dtype=np.uint8)  # the fixture writes 3 classes
    monkeypatch.setitem(sys.modules, "parsenet.data.synthetic", fake)
    cfg = DataConfig(root=str(tmp_path / "synth"), format="synthetic",
                     synthetic={"num_train": 2, "seed": 3})
    dataset = build_dataset(cfg, "train")
    assert calls == [(str(tmp_path / "synth"), {"num_train": 2, "seed": 3})]
    assert isinstance(dataset, SegmentationFolder) and len(dataset) == 2


def test_real_siftflow_holdout_from_config():
    root = shared_dataset("siftflow")
    cfg = DataConfig(root=str(root), format="siftflow", train_split="trainval",
                     val_split="trainval", holdout_every=10)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    listed = (root / "trainval.txt").read_text().split()
    assert len(train) + len(val) == len(listed) and len(val) == (len(listed) + 9) // 10
    assert not set(train.ids) & set(val.ids)


def test_dataloader_workers_batch_transformed_items(folder_dataset):
    cfg = DataConfig(root=str(folder_dataset(num_images=4, size=(24, 32))), format="folder",
                     crop_size=16)
    dataset = build_dataset(cfg, "train", preprocessing=CAFFE_VGG)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    images, masks = batches[0]
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    assert masks.shape == (2, 16, 16) and masks.dtype == torch.int64


def test_synthetic_format_carries_its_own_palette(tmp_path):
    from parsenet.data.synthetic import PALETTE

    cfg = DataConfig(root=str(tmp_path / "syn"), format="synthetic", val_split="test",
                     synthetic=dict(size=256, splits={"train": 1, "test": 1}, progress=False))
    ds = build_dataset(cfg, "val")
    assert np.array_equal(np.asarray(ds.palette), PALETTE)
