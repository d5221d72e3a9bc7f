"""MobileViTv3 (Wadekar and Chaurasia, 2022, arXiv 2209.15159): MobileViT v1 and v2 with a simpler, better
fusion of local and global features.

The paper changes the MobileViT block in four ways: the local 3x3 conv becomes depthwise; the fusion takes
the local features (the block's 1x1 output, d channels) with the global ones instead of the block's input;
the fusion conv is 1x1 instead of 3x3; and the block's input is added to the fused output. On v1 the widths
of layer3 .. layer5 grow (the paper spends the saved parameters there); on v2 the widths stay, the fusion
is the block's final 1x1 projection, from 2d channels (global, then local) instead of d.

Written from the paper and the facts of the authors' repository (micronDLA/MobileViTv3, whose licence does
not allow reuse of its code): its checkpoints' key layout is the ml-cvnets one, which ``load_weights`` maps.
Feature-map sizes in the comments are for the default 256x256 input.
"""

from __future__ import annotations

import dataclasses

import torch

from vitkit.models import mobilevit, mobilevitv2
from vitkit.models.layers import ConvNormAct
from vitkit.models.registry import register_model


class MobileViTV3Block(mobilevit.MobileViTBlock):
    """v1's block with v3's fusion: depthwise 3x3 -> 1x1 to d (local) -> transformer over patches -> 1x1 to C
    (global) -> 1x1 fusion of [local, global] -> + input."""

    def __init__(self, chs: int, dim: int, depth: int, cfg: mobilevit.MobileViTConfig):
        super().__init__(chs, dim, depth, cfg)
        self.local_kxk = ConvNormAct(chs, chs, 3, groups=chs)
        self.fusion = ConvNormAct(dim + chs, chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local_1x1(self.local_kxk(x))  # [B, d, H, W]
        fused = self.fusion(torch.cat((local, self.proj(self.global_representation(local))), dim=1))
        return x + fused


class MobileViTV3(mobilevit.MobileViT):
    weight_sources = {"vitkit": [], "ml-cvnets": mobilevit.CVNETS_NAMES}  # the authors' checkpoints
    block = MobileViTV3Block


class MobileViTV3V2Block(mobilevitv2.MobileViTV2Block):
    """v2's block with v3's fusion: the final 1x1 projection takes [global, local] (2d channels), and the
    block's input is added back."""

    def __init__(self, chs: int, dim: int, depth: int, cfg: mobilevitv2.MobileViTV2Config):
        super().__init__(chs, dim, depth, cfg)
        self.proj = ConvNormAct(2 * dim, chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = mobilevitv2.resize_to_patch_multiple(x, self.patch_size)
        local = self.local_1x1(self.local_kxk(x))  # [B, d, H, W]
        fused = self.proj(torch.cat((self.norm(self.transformer(local)), local), dim=1))
        return x + fused


class MobileViTV3V2(mobilevitv2.MobileViTV2):
    weight_sources = {"vitkit": [], "ml-cvnets": mobilevitv2.CVNETS_NAMES}  # the authors' checkpoints
    block = MobileViTV3V2Block


# v1's configurations with the wider layer3 .. layer5 of the paper's Table 1; the final 1x1 conv is four
# times layer5's width, at most 960
V1_BASED = {
    "xxs": dataclasses.replace(mobilevit.CONFIGS["xxs"], channels=(16, 24, 64, 80, 128), num_features=512),
    "xs": dataclasses.replace(mobilevit.CONFIGS["xs"], channels=(32, 48, 96, 160, 160), num_features=640),
    "s": dataclasses.replace(mobilevit.CONFIGS["s"], channels=(32, 64, 128, 256, 320), num_features=960),
}
V2_BASED = {"050": 0.5, "075": 0.75, "100": 1.0}

for _size, _cfg in V1_BASED.items():
    register_model(
        f"mobilevitv3_{_size}",
        MobileViTV3,
        _cfg,
        mobilevit.PREPROCESS,
        f"MobileViTv3-{_size.upper()} (v1 with v3's fusion; Wadekar and Chaurasia 2022)",
    )
for _name, _width in V2_BASED.items():
    register_model(
        f"mobilevitv3_{_name}",
        MobileViTV3V2,
        mobilevitv2.MobileViTV2Config(width=_width, head_drop_rate=0.0),
        mobilevitv2.PREPROCESS,
        f"MobileViTv3 at width {_width} (v2 with v3's fusion; Wadekar and Chaurasia 2022)",
    )
