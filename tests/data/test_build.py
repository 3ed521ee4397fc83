"""build_dataset / build_datasets: from keyword arguments to a dataset, for every format;
and parsenet.recipe's translation of a config's data section into them."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import shared_dataset, write_folder_dataset

from parsenet.config import ConfigError, DataConfig
from parsenet.data import FORMATS, DataError, build_dataset
from parsenet.data.build import build_datasets
from parsenet.data.camvid import CamVid
from parsenet.data.context import PascalContext
from parsenet.data.folder import SegmentationFolder
from parsenet.data.siftflow import SiftFlow
from parsenet.data.voc import VOCSegmentation
from parsenet.preprocessing import CAFFE_VGG
from parsenet.recipe import data_source, dataset_from_config, datasets_from_config


def test_folder_train_and_val_with_transforms_from_config(folder_dataset):
    root = folder_dataset("train", num_images=3, size=(24, 32))
    write_folder_dataset(root, "val", num_images=2, size=(20, 28))
    cfg = DataConfig(root=str(root), format="folder", crop_size=16)
    raw = dataset_from_config(cfg, "train")
    assert isinstance(raw, SegmentationFolder) and len(raw) == 3
    assert raw[0][0].dtype == torch.uint8  # no preprocessing: raw pairs
    train = dataset_from_config(cfg, "train", preprocessing=CAFFE_VGG)
    image, mask = train[0]
    assert tuple(image.shape) == (3, 16, 16) and image.dtype == torch.float32
    assert mask.dtype == torch.int64
    val = dataset_from_config(cfg, "val", preprocessing=CAFFE_VGG)
    image, mask = val[0]
    assert len(val) == 2 and tuple(image.shape) == (3, 20, 28)  # eval: own size
    torch.testing.assert_close(image, CAFFE_VGG(val.load(0)[0].as_subclass(torch.Tensor)))


def test_explicit_transforms_win(folder_dataset):
    cfg = DataConfig(root=str(folder_dataset()), format="folder")
    dataset = dataset_from_config(cfg, "train", transforms=lambda i, m: ("called", m),
                                  preprocessing=CAFFE_VGG)
    assert dataset[0][0] == "called"


def test_holdout_carves_disjoint_train_and_val(folder_dataset):
    root = folder_dataset("trainval", num_images=10)
    train = build_dataset(root, "trainval", holdout_every=3)
    val = build_dataset(root, "trainval", holdout_every=3, held_out=True)
    everything = sorted(SegmentationFolder(root, "trainval").ids)
    assert val.ids == everything[::3]
    assert sorted(train.ids + val.ids) == everything and not set(train.ids) & set(val.ids)
    with pytest.raises(ValueError, match="holdout_every must be 0 .off. or >= 2, got 1"):
        build_dataset(root, "trainval", holdout_every=1)
    with pytest.raises(ValueError, match="held_out needs holdout_every"):
        build_dataset(root, "trainval", held_out=True)
    with pytest.raises(ConfigError, match="holdout_every"):
        DataConfig(root=str(root), train_split="trainval", holdout_every=1)


def test_the_config_holdout_maps_train_and_val_to_the_two_parts(folder_dataset):
    root = folder_dataset("trainval", num_images=10)
    cfg = DataConfig(root=str(root), format="folder", train_split="trainval",
                     val_split="trainval", holdout_every=3)
    train, val = dataset_from_config(cfg, "train"), dataset_from_config(cfg, "val")
    assert val.ids == build_dataset(root, "trainval", holdout_every=3, held_out=True).ids
    assert train.ids == build_dataset(root, "trainval", holdout_every=3).ids


@pytest.mark.parametrize("holdout_every, train_split, val_split", [
    (0, "train", "val"), (0, "train", ""), (3, "trainval", "trainval"), (3, "trainval", ""),
])
def test_the_pair_is_the_two_single_builds(folder_dataset, holdout_every, train_split,
                                           val_split):
    root = folder_dataset(train_split, num_images=7, size=(24, 32))
    write_folder_dataset(root, "val", num_images=2, size=(20, 28))
    cfg = DataConfig(root=str(root), train_split=train_split, val_split=val_split,
                     holdout_every=holdout_every, crop_size=16)
    train, val = datasets_from_config(cfg, CAFFE_VGG)
    assert train.ids == dataset_from_config(cfg, "train").ids
    assert tuple(train[0][0].shape) == (3, 16, 16)  # the training crop
    if not val_split:
        assert val is None
        return
    assert val.ids == dataset_from_config(cfg, "val").ids
    torch.testing.assert_close(val[0][0], dataset_from_config(cfg, "val",
                                                              preprocessing=CAFFE_VGG)[0][0])


def test_the_config_pixel_limit_reaches_the_datasets(folder_dataset):
    root = folder_dataset(num_images=2, size=(24, 32))
    write_folder_dataset(root, "val", num_images=1, size=(24, 32))
    cfg = DataConfig(root=str(root), max_megapixels=0.0005)  # 500 pixels < 24 x 32
    assert data_source(cfg)["max_pixels"] == 500
    for dataset in (dataset_from_config(cfg, "train"), *datasets_from_config(cfg, CAFFE_VGG)):
        assert dataset.max_pixels == 500
        with pytest.raises(DataError, match="pixels"):
            dataset[0]
    assert build_datasets(root, max_pixels=768)[0].max_pixels == 768


def test_bad_format_and_split(folder_dataset):
    with pytest.raises(ConfigError, match="data.format: 'coco' is not allowed"):
        DataConfig(root=".", format="coco")
    with pytest.raises(ValueError, match="format 'coco' unknown; expected one of"):
        build_dataset(".", "train", format="coco")
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        dataset_from_config(DataConfig(root=str(folder_dataset()), format="folder"), "test")


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
    train = dataset_from_config(cfg, "train", preprocessing=CAFFE_VGG)
    val = build_dataset(root, val_split, format=fmt)
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
    dataset = dataset_from_config(cfg, "train")
    assert calls == [(str(tmp_path / "synth"), {"num_train": 2, "seed": 3})]
    assert isinstance(dataset, SegmentationFolder) and len(dataset) == 2


def test_real_siftflow_holdout_from_config():
    root = shared_dataset("siftflow")
    cfg = DataConfig(root=str(root), format="siftflow", train_split="trainval",
                     val_split="trainval", holdout_every=10)
    train, val = dataset_from_config(cfg, "train"), dataset_from_config(cfg, "val")
    listed = (root / "trainval.txt").read_text().split()
    assert len(train) + len(val) == len(listed) and len(val) == (len(listed) + 9) // 10
    assert not set(train.ids) & set(val.ids)


def test_dataloader_workers_batch_transformed_items(folder_dataset):
    cfg = DataConfig(root=str(folder_dataset(num_images=4, size=(24, 32))), format="folder",
                     crop_size=16)
    dataset = dataset_from_config(cfg, "train", preprocessing=CAFFE_VGG)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    images, masks = batches[0]
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    assert masks.shape == (2, 16, 16) and masks.dtype == torch.int64


def test_synthetic_format_carries_its_own_palette(tmp_path):
    from parsenet.data.synthetic import PALETTE

    ds = build_dataset(tmp_path / "syn", "test", format="synthetic",
                       synthetic=dict(size=256, splits={"train": 1, "test": 1}, progress=False))
    assert np.array_equal(np.asarray(ds.palette), PALETTE)
