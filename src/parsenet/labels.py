"""The label-map convention every dataset, loss and metric here shares."""

__all__ = ["IGNORE_INDEX"]

# Pixels with this label count in no loss and no metric: VOC's object boundaries, SiftFlow's
# and CamVid's unlabelled pixels, crop padding. uint8 label maps keep 0..254 for classes.
IGNORE_INDEX = 255
