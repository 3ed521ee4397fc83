"""The common-layout reader, on tiny folders written here and on the real shared data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import blocky_label, image_for, shared_dataset
from PIL import Image
from torchvision import tv_tensors

from parsenet.data.errors import DataError
from parsenet.data.folder import SegmentationFolder, holdout_split
from parsenet.data.palette import voc_palette


def test_items_are_uint8_image_and_mask_pairs(folder_dataset):
    root = folder_dataset(num_images=3, size=(24, 32), num_classes=4, image_format="png")
    dataset = SegmentationFolder(root, "train")
    assert len(dataset) == 3 and dataset.num_classes == 4 and dataset.ignore_index == 255
    assert dataset.classes == ["class0", "class1", "class2", "class3"]
    image, mask = dataset[0]
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 24, 32)
    assert mask.dtype == torch.uint8 and tuple(mask.shape) == (24, 32)
    seed = int(dataset.ids[0].split("_")[1])
    expected_label = blocky_label(24, 32, 4, seed=seed)
    np.testing.assert_array_equal(mask.numpy(), expected_label)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), image_for(expected_label, seed))
    assert dataset.image_path(0).name == f"{dataset.ids[0]}.png"
    assert dataset.label_path(0).parent.name == "train"


def test_ids_follow_the_split_list_order(folder_dataset):
    root = folder_dataset(num_images=4)
    listed = (root / "train.txt").read_text().split()
    assert SegmentationFolder(root, "train").ids == listed
    assert listed != sorted(listed)  # the fixture lists them reversed: order is really tested


def test_without_split_list_ids_are_sorted_image_stems(folder_dataset):
    root = folder_dataset(num_images=3, split_list=False)
    dataset = SegmentationFolder(root, "train")
    assert dataset.ids == sorted(p.stem for p in (root / "images" / "train").iterdir())


def test_explicit_ids_select_a_subset(folder_dataset):
    root = folder_dataset(num_images=4)
    dataset = SegmentationFolder(root, "train", ids=["train_002", "train_000"])
    assert dataset.ids == ["train_002", "train_000"]
    assert dataset.image_path(1).stem == "train_000"


def test_default_palette_is_the_voc_colormap(folder_dataset):
    dataset = SegmentationFolder(folder_dataset(num_classes=21), "train")
    assert dataset.palette.shape == (21, 3) and dataset.palette.dtype == np.uint8
    # Known VOC colours: background black, aeroplane (1) dark red, person (15) pinkish.
    assert tuple(dataset.palette[0]) == (0, 0, 0)
    assert tuple(dataset.palette[1]) == (128, 0, 0)
    assert tuple(dataset.palette[15]) == (192, 128, 128)
    assert len({tuple(c) for c in voc_palette(256)}) == 256


def test_explicit_palette_is_used_and_checked(folder_dataset):
    root = folder_dataset(num_classes=2)
    colours = [[1, 2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(SegmentationFolder(root, palette=colours).palette, colours)
    with pytest.raises(DataError, match="palette must be 2 x 3"):
        SegmentationFolder(root, palette=[[1, 2, 3]])


def test_missing_classes_txt(folder_dataset):
    root = folder_dataset()
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt not found"):
        SegmentationFolder(root, "train")


def test_empty_classes_txt(folder_dataset):
    root = folder_dataset()
    (root / "classes.txt").write_text("\n\n")
    with pytest.raises(DataError, match="classes.txt: no class names"):
        SegmentationFolder(root, "train")


def test_missing_root_and_split_folder(folder_dataset, tmp_path):
    with pytest.raises(DataError, match="nowhere: dataset folder not found"):
        SegmentationFolder(tmp_path / "nowhere")
    with pytest.raises(DataError, match="images/val: no such directory"):
        SegmentationFolder(folder_dataset(), "val")


def test_empty_split_list_and_empty_split_folder(folder_dataset):
    root = folder_dataset(num_images=2)
    (root / "train.txt").write_text("")
    with pytest.raises(DataError, match="train.txt: the split list is empty"):
        SegmentationFolder(root, "train")
    (root / "train.txt").unlink()
    for folder in ("images", "labels"):
        for f in (root / folder / "train").iterdir():
            f.unlink()
    with pytest.raises(DataError, match="split 'train' has no images"):
        SegmentationFolder(root, "train")


def test_image_without_label_is_named(folder_dataset):
    root = folder_dataset(num_images=3, split_list=False)
    (root / "labels" / "train" / "train_001.png").unlink()
    with pytest.raises(DataError, match=r"labels/train: no label for image\(s\) train_001.jpg"):
        SegmentationFolder(root, "train")


def test_label_without_image_is_named(folder_dataset):
    root = folder_dataset(num_images=3, split_list=False)
    (root / "images" / "train" / "train_002.jpg").unlink()
    with pytest.raises(DataError, match=r"label\(s\) without an image .*: train_002.png"):
        SegmentationFolder(root, "train")


def test_listed_id_without_image_is_named(folder_dataset):
    root = folder_dataset(num_images=2)
    (root / "train.txt").write_text("train_000\nghost\n")
    with pytest.raises(DataError, match=r"images/train: no image for id\(s\) ghost"):
        SegmentationFolder(root, "train")


def test_bad_label_values_name_file_and_values(folder_dataset):
    root = folder_dataset(num_images=2, num_classes=3)
    label_path = root / "labels" / "train" / "train_001.png"
    label = np.array(Image.open(label_path))
    label[0, :2] = (5, 9)
    Image.fromarray(label).save(label_path)
    dataset = SegmentationFolder(root, "train")
    with pytest.raises(DataError, match=r"train_001.png: label values 5, 9 are neither class "
                                        r"indices 0..2 nor 255"):
        dataset[dataset.ids.index("train_001")]


def test_size_mismatch_names_both_sizes(folder_dataset):
    root = folder_dataset(num_images=1, size=(24, 32))
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "labels" / "train" / "train_000.png")
    with pytest.raises(DataError, match=r"train_000.jpg: image is 32x24 \(WxH\) but its label "
                                        r".*train_000.png is 30x20"):
        SegmentationFolder(root, "train")[0]


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK", "P", "I;16"])
def test_unusual_image_modes_load_as_rgb(folder_dataset, mode):
    root = folder_dataset(num_images=1, size=(24, 32), image_format="png")
    path = root / "images" / "train" / "train_000.png"
    if mode == "I;16":
        Image.fromarray(np.full((24, 32), 65535, np.uint16)).save(path)
    elif mode == "CMYK":
        path.unlink()
        path = path.with_suffix(".jpg")
        _rgb(24, 32).convert("CMYK").save(path)
    else:
        Image.fromarray(np.array(_rgb(24, 32))).convert(mode).save(path)
    image, mask = SegmentationFolder(root, "train")[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 24, 32)
    if mode == "I;16":
        assert int(image.min()) == 255
    assert tuple(mask.shape) == (24, 32)


def _rgb(height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("kind", ["rgb", "16-bit"])
def test_rgb_or_16_bit_label_is_an_error(folder_dataset, kind):
    root = folder_dataset(num_images=1, size=(24, 32))
    path = root / "labels" / "train" / "train_000.png"
    if kind == "rgb":
        _rgb(24, 32).save(path)
    else:
        Image.fromarray(np.ones((24, 32), np.uint16)).save(path)
    with pytest.raises(DataError, match="train_000.png: label is a"):
        SegmentationFolder(root, "train")[0]


def test_palette_label_png_gives_indices(folder_dataset):
    root = folder_dataset(num_images=1, size=(24, 32), num_classes=3)
    path = root / "labels" / "train" / "train_000.png"
    indices = np.array(Image.open(path))
    palette_image = Image.fromarray(indices, "P")
    palette_image.putpalette(voc_palette(256).ravel().tolist())
    palette_image.save(path)
    _, mask = SegmentationFolder(root, "train")[0]
    np.testing.assert_array_equal(mask.numpy(), indices)


def test_corrupt_image_is_named(folder_dataset):
    root = folder_dataset(num_images=1)
    (root / "images" / "train" / "train_000.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match="train_000.jpg: cannot decode image"):
        SegmentationFolder(root, "train")[0]


def test_holdout_split_rule():
    ids = [f"id{k:02d}" for k in range(10)][::-1]  # unsorted on purpose
    train, val = holdout_split(ids, 4)
    assert val == ["id00", "id04", "id08"]  # sorted positions 0, 4, 8
    assert train == [i for i in sorted(ids) if i not in val]
    assert holdout_split(list(reversed(ids)), 4) == (train, val)
    with pytest.raises(ValueError, match=">= 2"):
        holdout_split(ids, 1)


def test_writes_are_only_reads(folder_dataset):
    root = folder_dataset(num_images=2)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*"))
    dataset = SegmentationFolder(root, "train")
    dataset[0], dataset[1]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*")) == before


# --- the real datasets in ../shared/data (skipped when absent) ---

REAL = [("siftflow", "trainval", 33), ("camvid", "train", 11), ("camvid", "val", 11),
        ("stanford_background", "train", 8), ("stanford_background", "val", 8)]


@pytest.mark.shared_data
@pytest.mark.parametrize("name, split, num_classes", REAL)
def test_real_dataset_reads_and_checks(name, split, num_classes):
    root = shared_dataset(name)
    dataset = SegmentationFolder(root, split)
    listed = [line.strip() for line in (root / f"{split}.txt").read_text().splitlines()
              if line.strip()]
    assert dataset.ids == listed
    assert dataset.num_classes == num_classes == len(dataset.classes)
    # A spread of items (all of them would take minutes): sizes agree, values are legal.
    for index in np.linspace(0, len(dataset) - 1, 12).astype(int):
        image, mask = dataset[int(index)]
        assert image.shape[-2:] == mask.shape and image.shape[0] == 3
        values = set(np.unique(mask.numpy()).tolist())
        assert values <= set(range(num_classes)) | {255}, (dataset.ids[index], values)
        assert values - {255}, f"{dataset.ids[index]}: label is all ignore"
