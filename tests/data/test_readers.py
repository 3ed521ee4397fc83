"""Readers of the published layouts, each on a tiny fixture written in its original format."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from data_helpers import (
    SBD_TRAIN,
    SBD_VAL,
    SIFT_IDS,
    SIZE,
    SUB,
    VOC_TRAIN,
    VOC_VAL,
    blocky_label,
    sbd_label,
    shared_dataset,
    voc_label,
    write_lines,
)
from PIL import Image

from parsenet.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE, CamVid, camvid_dataset
from parsenet.data.context import CONTEXT_459_IDS, CONTEXT_CLASSES, PascalContext
from parsenet.data.errors import DataError
from parsenet.data.folder import SegmentationFolder
from parsenet.data.siftflow import SIFTFLOW_CLASSES, SiftFlow, siftflow_dataset
from parsenet.data.voc import VOC_CLASSES, VOCSegmentation

# ---------------------------------------------------------------- VOC 2012 + SBD


def test_voc_train_and_val(voc_root):
    train = VOCSegmentation(voc_root, "train")
    assert train.ids == VOC_TRAIN and train.classes == list(VOC_CLASSES)
    assert train.num_classes == 21 and tuple(train.palette[15]) == (192, 128, 128)
    image, mask = train[1]
    assert tuple(image.shape) == (3, *SIZE)
    np.testing.assert_array_equal(mask.numpy(), voc_label(1))  # palette indices, 255 kept
    assert VOCSegmentation(voc_root / "VOCdevkit" / "VOC2012", "val").ids == VOC_VAL


def test_voc_train_aug_is_sbd_plus_voc_train_minus_voc_val(voc_root):
    dataset = VOCSegmentation(voc_root, "train_aug")
    expected = sorted((set(SBD_TRAIN) | set(SBD_VAL) | set(VOC_TRAIN)) - set(VOC_VAL))
    assert dataset.ids == expected
    assert not set(dataset.ids) & set(VOC_VAL)
    for index, id_ in enumerate(dataset.ids):
        _, mask = dataset[index]
        if id_ in VOC_TRAIN:  # VOC's own label wins over SBD's
            assert dataset.label_path(index).suffix == ".png"
            np.testing.assert_array_equal(mask.numpy(), voc_label(VOC_TRAIN.index(id_)))
        else:
            assert dataset.label_path(index).suffix == ".mat"
            n = (SBD_TRAIN + SBD_VAL).index(id_)
            np.testing.assert_array_equal(mask.numpy(), sbd_label(n))


def test_voc_errors(voc_root, tmp_path):
    with pytest.raises(DataError, match="VOC split 'test' unknown"):
        VOCSegmentation(voc_root, "test")
    with pytest.raises(DataError, match="no VOC2012 folder"):
        VOCSegmentation(tmp_path / "VOCdevkit" / "nothing")
    with pytest.raises(DataError, match="needs the SBD dataset"):
        VOCSegmentation(voc_root, "train_aug", sbd_root=tmp_path / "nowhere")
    (voc_root / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(DataError, match="lists files that do not exist: image 2007_000002.jpg"):
        VOCSegmentation(voc_root, "train")


def test_sbd_label_with_bad_values_is_named(voc_root):
    mat = voc_root / "benchmark_RELEASE" / "dataset" / "cls" / "2009_000005.mat"
    bad = sbd_label(0)
    bad[0, 0] = 40
    scipy.io.savemat(mat, {"GTcls": {"Segmentation": bad}})
    dataset = VOCSegmentation(voc_root, "train_aug")
    with pytest.raises(DataError, match=r"2009_000005.mat: label values 40 are neither"):
        dataset[dataset.ids.index("2009_000005")]


# ---------------------------------------------------------------- PASCAL-Context


def test_context_maps_459_classes_to_59_plus_background(context_root):
    dataset = PascalContext(context_root, "train")
    assert dataset.ids == ["2008_000001", "2008_000002"] and dataset.num_classes == 60
    assert dataset.classes[0] == "background" and dataset.classes[-1] == "wood"
    _, mask = dataset[0]
    m = mask.numpy()
    assert (m[:4] == CONTEXT_CLASSES.index("aeroplane")).all()
    assert (m[4:8] == CONTEXT_CLASSES.index("wood")).all() and (m[4:8] == 59).all()
    assert (m[8:] == 0).all()  # other classes and unlabelled are background, not ignored
    assert len(PascalContext(context_root, "val")) == 1


def test_context_label_out_of_range_and_labels_txt_checks(context_root):
    bad = np.full(SIZE, 460, dtype=np.uint16)
    scipy.io.savemat(context_root / "trainval" / "2008_000003.mat", {"LabelMap": bad})
    with pytest.raises(DataError, match=r"2008_000003.mat: LabelMap values 460 are outside"):
        PascalContext(context_root, "val")[0]
    good = [f"{i}: {name}" for i, name in zip(CONTEXT_459_IDS[1:], CONTEXT_CLASSES[1:],
                                               strict=True)]
    write_lines(context_root / "labels.txt", ["1: accordion", *good])
    PascalContext(context_root, "train")  # names agree: no error
    write_lines(context_root / "labels.txt", ["2: bicycle", *good[1:]])
    with pytest.raises(DataError, match="labels.txt: does not match the 59-class mapping"):
        PascalContext(context_root, "train")


def test_context_missing_split_list(context_root):
    with pytest.raises(DataError, match="no id list for split 'test'"):
        PascalContext(context_root, "test")


# ---------------------------------------------------------------- SiftFlow (original)


def test_siftflow_original_layout(siftflow_root):
    dataset = SiftFlow(siftflow_root, "trainval")
    assert dataset.ids == [SIFT_IDS[0], *SIFT_IDS[2:]]  # everything but TestSet1
    assert SiftFlow(siftflow_root, "test").ids == [SIFT_IDS[1]]
    assert len(SiftFlow(siftflow_root, "all")) == 4
    assert dataset.classes == list(SIFTFLOW_CLASSES) and dataset.num_classes == 33
    _, mask = dataset[0]
    m = mask.numpy()
    assert (m[:, :4] == 255).all()  # S == 0: unlabelled -> ignore
    assert (m[:, 4:8] == 0).all() and (m[:, 8:] == 32).all()  # S - 1
    write_lines(siftflow_root / "trainval.txt", [SIFT_IDS[3], SIFT_IDS[0]])
    assert SiftFlow(siftflow_root, "trainval").ids == [SIFT_IDS[3], SIFT_IDS[0]]


def test_siftflow_bad_values_and_dispatch(siftflow_root, folder_dataset):
    scipy.io.savemat(siftflow_root / "SemanticLabels" / SUB / f"{SIFT_IDS[0]}.mat",
                     {"S": np.full(SIZE, 34)})
    with pytest.raises(DataError, match=rf"{SIFT_IDS[0]}.mat: S values 34 are outside"):
        SiftFlow(siftflow_root, "all")[0]
    assert isinstance(siftflow_dataset(siftflow_root, "test"), SiftFlow)
    common = folder_dataset("trainval", num_classes=33)
    assert isinstance(siftflow_dataset(common, "trainval"), SegmentationFolder)


def test_siftflow_common_layout_real_data():
    root = shared_dataset("siftflow")
    dataset = siftflow_dataset(root, "trainval")
    assert dataset.classes == list(SIFTFLOW_CLASSES)  # the shared copy uses the same order
    assert len(dataset) == len((root / "trainval.txt").read_text().split())


# ---------------------------------------------------------------- CamVid (SegNet)


def test_camvid_segnet_layout(camvid_root):
    dataset = CamVid(camvid_root, "train")
    assert len(dataset) == 3 and dataset.ids == sorted(dataset.ids)
    assert dataset.classes == list(CAMVID_CLASSES)
    np.testing.assert_array_equal(dataset.palette, CAMVID_PALETTE)
    _, mask = dataset[0]
    expected = blocky_label(*SIZE, 11, 0, ignore_fraction=0.0)
    expected[0] = 255  # void 11 -> ignore
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert len(camvid_dataset(camvid_root, "val")) == 2


def test_camvid_bad_value_and_missing_annotation(camvid_root):
    path = camvid_root / "valannot" / "0001TP_val_001.png"
    Image.fromarray(np.full(SIZE, 12, np.uint8)).save(path)
    with pytest.raises(DataError, match=r"0001TP_val_001.png: label values 12 are outside"):
        CamVid(camvid_root, "val")[1]
    path.unlink()
    with pytest.raises(DataError, match=r"no label for image\(s\) 0001TP_val_001.png"):
        CamVid(camvid_root, "val")


def test_camvid_common_layout_real_data_uses_segnet_colours():
    root = shared_dataset("camvid")
    dataset = camvid_dataset(root, "val")
    assert isinstance(dataset, SegmentationFolder)
    assert len(dataset) == len((root / "val.txt").read_text().split())
    np.testing.assert_array_equal(dataset.palette, CAMVID_PALETTE)
