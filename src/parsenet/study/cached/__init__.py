"""The cached study engine: a frozen trunk's taps computed once per image and cached on
disk (:mod:`.cache`), a trainable head trained on them with our optimiser and iteration
code and evaluated at full label resolution (:mod:`.engine`). :mod:`.vgg` splits the
LargeFOV VGG-16 of ``build_model('parsenet_vgg16', ...)`` into trunk and head; other models
register a split in :data:`.engine.SPLITS`."""

from parsenet.study.cached.cache import TapCache, build_cache, cache_key, open_cache
from parsenet.study.cached.engine import SPLITS, PackedHead, evaluate_head, train_cached
from parsenet.study.cached.vgg import VGGHead, VGGTrunk, build_vgg_parts

__all__ = ["TapCache", "build_cache", "cache_key", "open_cache", "SPLITS", "PackedHead",
           "evaluate_head", "train_cached", "VGGHead", "VGGTrunk", "build_vgg_parts"]
