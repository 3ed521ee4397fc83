"""Datasets, their readers and the joint image + label transforms.

    from parsenet.data import build_dataset, SegmentationFolder, train_transforms
    train = build_dataset("data/mine", "train", transforms=train_transforms(320))

Every dataset yields (image, mask) pairs, has ``classes``, ``num_classes``, ``palette``,
``ignore_index`` (255), ``ids``, ``image_path(i)`` and ``label_path(i)``, and raises
``DataError`` naming the file for anything it cannot use.
"""

from parsenet.data.build import FORMATS, build_dataset, build_datasets
from parsenet.data.camvid import CAMVID_CLASSES, CamVid, camvid_dataset
from parsenet.data.context import CONTEXT_CLASSES, PascalContext
from parsenet.data.dataset import SegmentationDataset
from parsenet.data.decode import read_image, read_label_png
from parsenet.data.errors import DataError
from parsenet.data.folder import SegmentationFolder, holdout_split
from parsenet.data.palette import voc_palette
from parsenet.data.siftflow import SIFTFLOW_CLASSES, SiftFlow, siftflow_dataset
from parsenet.data.transforms import eval_transforms, train_transforms
from parsenet.data.voc import VOC_CLASSES, VOCSegmentation

__all__ = [
    "build_dataset", "build_datasets", "FORMATS", "DataError", "SegmentationDataset",
    "SegmentationFolder",
    "holdout_split", "VOCSegmentation", "PascalContext", "SiftFlow", "CamVid",
    "siftflow_dataset", "camvid_dataset", "train_transforms", "eval_transforms",
    "read_image", "read_label_png", "voc_palette", "VOC_CLASSES", "CONTEXT_CLASSES",
    "SIFTFLOW_CLASSES", "CAMVID_CLASSES",
]
