"""Initialisers for the layers a recipe trains from scratch (the head's classifiers).

    xavier_uniform  PyTorch's ``xavier_uniform_`` (Glorot & Bengio): U(+-sqrt(6 / (fan_in +
                    fan_out))). This project's default.
    caffe_xavier    Caffe's ``"xavier"`` filler as the paper's Baseline C used it: Caffe's
                    default ``variance_norm: FAN_IN`` gives U(+-sqrt(3 / fan_in)), variance
                    1 / fan_in (fan_in = in_channels x kh x kw). Not the same distribution.
    zeros           Caffe's default filler (``constant`` 0), which FCN's score layers get
                    (FCN's net.py sets no filler; the FCN paper zero-initialises the
                    class scoring layer).

Biases start at 0 in all three (Caffe's default ``bias_filler``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["INITS", "init_conv_"]

INITS = ("xavier_uniform", "caffe_xavier", "zeros")


@torch.no_grad()
def init_conv_(conv: nn.Conv2d, init: str = "xavier_uniform") -> nn.Conv2d:
    """Initialise ``conv`` in place with the initialiser named ``init``; returns it."""
    if init == "xavier_uniform":
        nn.init.xavier_uniform_(conv.weight)
    elif init == "caffe_xavier":
        fan_in = conv.weight[0].numel()
        bound = math.sqrt(3.0 / fan_in)
        conv.weight.uniform_(-bound, bound)
    elif init == "zeros":
        conv.weight.zero_()
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if conv.bias is not None:
        conv.bias.zero_()
    return conv
