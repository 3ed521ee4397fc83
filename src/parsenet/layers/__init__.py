from parsenet.layers.context import GlobalContext, global_pool, unpool
from parsenet.layers.fusion import FUSION_MODES, ContextFusion
from parsenet.layers.l2norm import L2Norm, NormLayer, l2_normalize, l2_normalize_reference
from parsenet.layers.resample import resize_to_input

__all__ = ["L2Norm", "NormLayer", "l2_normalize", "l2_normalize_reference", "GlobalContext",
           "global_pool", "unpool", "ContextFusion", "FUSION_MODES", "resize_to_input"]
