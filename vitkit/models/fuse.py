"""Inference-time rewrites that keep the logits (within float rounding) and cut work."""

from __future__ import annotations

import copy

from torch import nn

from vitkit.models.layers import ConvNormAct


def fuse(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm folded into its convolution.

    Used by evaluation, benchmarks and export: one op less per conv layer, no BatchNorm in the exported
    graph. The copy cannot be trained further as the original would (its BatchNorm statistics are gone).
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvNormAct):
            module.fuse_bn()
    return fused
