"""MobileViT v1 (Mehta and Rastegari, 2021) as Apple's ml-cvnets builds it.

Weights from ml-cvnets, timm (``mobilevit_*``) and transformers (``MobileViTForImageClassification``)
load through ``vitkit.load_weights`` and give the same logits.

Feature-map sizes in the comments are for the default 256x256 input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.models.dropout import Dropout
from vitkit.models.layers import TRANSFORMERS_BLOCK_NAMES, ConvNormAct, InvertedResidual, TransformerBlock
from vitkit.models.registry import register_model
from vitkit.preprocess import Preprocess


@dataclass(frozen=True)
class MobileViTConfig:
    channels: tuple[int, int, int, int, int]  # output channels of layer1 .. layer5
    dims: tuple[int, int, int]  # transformer width d in layer3 .. layer5
    num_features: int  # the final 1x1 conv, before pooling
    expansion: float  # MV2 expansion ratio
    depths: tuple[int, int, int] = (2, 4, 3)  # transformer layers in layer3 .. layer5
    stem_chs: int = 16
    num_heads: int = 4
    mlp_ratio: float = 2.0
    patch_size: int = 2
    drop_rate: float = 0.1  # dropout inside the transformer
    attn_drop_rate: float = 0.0
    head_drop_rate: float = 0.1  # dropout before the classifier
    image_size: int = 256  # default input; any size works


def unfold(x: torch.Tensor, p: int, channels_last: bool) -> torch.Tensor:
    """[B, C, H, W] -> [B*p*p, N, C]: token n of sequence (i, j) is pixel (i, j) of patch n. One copy,
    read in whichever memory order ``x`` is stored."""
    B, C, H, W = x.shape
    nh, nw = H // p, W // p
    if channels_last:
        x = x.permute(0, 2, 3, 1).reshape(B, nh, p, nw, p, C)  # [B, H, W, C] view -> [B, nh, ph, nw, pw, C]
        x = x.permute(0, 2, 4, 1, 3, 5)  # -> [B, ph, pw, nh, nw, C]
    else:
        x = x.reshape(B, C, nh, p, nw, p)  # [B, C, H, W] -> [B, C, nh, ph, nw, pw]
        x = x.permute(0, 3, 5, 2, 4, 1)  # -> [B, ph, pw, nh, nw, C]
    return x.reshape(B * p * p, nh * nw, C)  # -> [BP, N, C]


def fold(x: torch.Tensor, B: int, C: int, nh: int, nw: int, p: int, channels_last: bool) -> torch.Tensor:
    """The inverse of ``unfold``, returned in the memory order the block received."""
    x = x.reshape(B, p, p, nh, nw, C)  # [BP, N, C] -> [B, ph, pw, nh, nw, C]
    if channels_last:
        x = x.permute(0, 3, 1, 4, 2, 5).reshape(B, nh * p, nw * p, C)  # -> [B, H, W, C]
        return x.permute(0, 3, 1, 2)  # -> [B, C, H, W] view, channels_last in memory
    x = x.permute(0, 5, 3, 1, 4, 2)  # -> [B, C, nh, ph, nw, pw]
    return x.reshape(B, C, nh * p, nw * p)  # -> [B, C, H, W]


class MobileViTBlock(nn.Module):
    """Local 3x3 conv -> 1x1 to d -> unfold into patches -> transformer -> fold -> 1x1 back to C -> fuse."""

    def __init__(self, chs: int, dim: int, depth: int, cfg: MobileViTConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.local_kxk = ConvNormAct(chs, chs, 3)
        self.local_1x1 = nn.Conv2d(chs, dim, 1, bias=False)  # no norm, no activation (as ml-cvnets)
        self.transformer = nn.Sequential(
            *[
                TransformerBlock(
                    dim,
                    cfg.num_heads,
                    int(dim * cfg.mlp_ratio),
                    act_layer=nn.SiLU,
                    attn_drop=cfg.attn_drop_rate,
                    proj_drop=cfg.drop_rate,
                    mlp_out_drop=cfg.drop_rate,
                    norm_eps=1e-5,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.proj = ConvNormAct(dim, chs, 1)
        self.fusion = ConvNormAct(2 * chs, chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local_1x1(self.local_kxk(x))
        return self.fusion(torch.cat((x, self.proj(self.global_representation(local))), dim=1))

    def global_representation(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels at the same position inside their patch attend to each other: [B, d, H, W] -> the same."""
        B, C, H, W = x.shape
        p = self.patch_size
        new_h, new_w = math.ceil(H / p) * p, math.ceil(W / p) * p
        resized = (new_h, new_w) != (H, W)
        if resized:  # as the references do: resize up to a multiple of the patch, and back after folding
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        nh, nw = new_h // p, new_w // p
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = unfold(x, p, channels_last)  # [B, C, H, W] -> [BP, N, C]
        x = self.norm(self.transformer(x))
        x = fold(x, B, C, nh, nw, p, channels_last)  # [BP, N, C] -> [B, C, H, W]
        if resized:
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        return x


class ConvClassifier(nn.Module):
    """The frame both MobileViTs share (this one and the Keras example's): stem -> stages -> final 1x1 conv ->
    average pool -> dropout -> linear. Subclasses build ``stem``, ``stages`` and ``final_conv``, then call
    ``init_head``."""

    prefers_channels_last = True  # convolutions dominate: NHWC trains 1.3x faster on CPU (benchmarks/RESULTS.md)
    any_input_size = True  # feature maps that do not divide into patches are resized inside the network
    first_conv = "stem.conv.weight"  # the input channels ``load_weights(bgr_to_rgb=True)`` reverses

    @staticmethod
    def input_multiple(cfg) -> int:
        return 32  # the output stride: sides that are multiples of it keep every feature map whole

    def init_head(self, num_features: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = num_features
        self.head_drop = Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> [B, num_features, H/32, W/32]."""
        return self.final_conv(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean((2, 3)))  # global average pool: [B, C, h, w] -> [B, C]
        return x if pre_logits else self.head(x)  # logits; softmax belongs to the loss and to predict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# How the reference implementations name MobileViT's weights: (regex, replacement) rules applied in order to
# every key, turning it into vitkit's module path. vitkit's own names need no rule.

# The frame v1 and v2 share (stem, stages, MV2 blocks, the block's local convs), as each library names it;
# vitkit.models.mobilevitv2 adds its own block's names to these

# transformers MobileViTForImageClassification / MobileViTV2ForImageClassification, after the model prefix
TRANSFORMERS_FRAME_NAMES = [
    (r"\.convolution\.", ".conv."),
    (r"\.normalization\.", ".bn."),
    (r"^conv_stem\.", "stem."),
    (r"^encoder\.layer\.(\d+)\.layer\.(\d+)\.", r"stages.\1.\2."),  # layer1, layer2: MV2 blocks only
    (r"^encoder\.layer\.(\d+)\.downsampling_layer\.", r"stages.\1.0."),
    (r"^encoder\.layer\.(\d+)\.", r"stages.\1.1."),  # the MobileViT block of layer3 .. layer5
    (r"\.expand_1x1\.", ".expand."),
    (r"\.conv_3x3\.", ".depthwise."),
    (r"\.reduce_1x1\.", ".project."),
    (r"\.conv_kxk\.", ".local_kxk."),
    (r"\.conv_1x1\.conv\.", ".local_1x1."),
    (r"\.transformer\.layer\.(\d+)\.", r".transformer.\1."),
]
# timm's ByobNet layout: MV2 blocks and the block's local convs
TIMM_FRAME_NAMES = [
    (r"\.conv1_1x1\.", ".expand."),
    (r"\.conv2_kxk\.", ".depthwise."),
    (r"\.conv3_1x1\.", ".project."),
    (r"\.conv_kxk\.", ".local_kxk."),
    (r"\.conv_1x1\.", ".local_1x1."),
]
# ml-cvnets: ConvLayer ``block`` wrappers, layer_1 .. layer_5; then the MV2 blocks' convs (after the block's
# own local_rep rules, which also contain ``conv_3x3`` in v1)
CVNETS_FRAME_NAMES = [
    (r"\.block\.", "."),
    (r"\.norm\.", ".bn."),
    (r"^conv_1\.", "stem."),
    (r"^layer_1\.", "stages.0."),
    (r"^layer_2\.", "stages.1."),
    (r"^layer_3\.", "stages.2."),
    (r"^layer_4\.", "stages.3."),
    (r"^layer_5\.", "stages.4."),
]
CVNETS_MV2_NAMES = [
    (r"\.exp_1x1\.", ".expand."),
    (r"\.conv_3x3\.", ".depthwise."),
    (r"\.red_1x1\.", ".project."),
]

# transformers MobileViTForImageClassification (checkpoints apple/mobilevit-*)
TRANSFORMERS_NAMES = [
    (r"^mobilevit\.", ""),
    *TRANSFORMERS_FRAME_NAMES,
    *TRANSFORMERS_BLOCK_NAMES,
    (r"\.layernorm\.", ".norm."),
    (r"\.conv_projection\.", ".proj."),
    (r"^conv_1x1_exp\.", "final_conv."),
    (r"^classifier\.", "head."),
]

# timm mobilevit_xxs / _xs / _s (its ByobNet layout)
TIMM_NAMES = [
    *TIMM_FRAME_NAMES,
    (r"\.conv_proj\.", ".proj."),
    (r"\.conv_fusion\.", ".fusion."),
    (r"^head\.fc\.", "head."),
]

# Apple ml-cvnets checkpoints (layer_1 .. layer_5, ConvLayer ``block`` wrappers, fused qkv_proj)
CVNETS_NAMES = [
    *CVNETS_FRAME_NAMES,
    (r"\.local_rep\.conv_3x3\.", ".local_kxk."),
    (r"\.local_rep\.conv_1x1\.conv\.", ".local_1x1."),
    *CVNETS_MV2_NAMES,
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.0\.", r".transformer.\1.norm1."),
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.1\.qkv_proj\.", r".transformer.\1.attn.qkv."),
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.1\.out_proj\.", r".transformer.\1.attn.proj."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.0\.", r".transformer.\1.norm2."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.1\.", r".transformer.\1.mlp.fc1."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.4\.", r".transformer.\1.mlp.fc2."),
    (r"\.global_rep\.\d+\.(weight|bias)$", r".norm.\1"),  # the LayerNorm after the last transformer layer
    (r"\.conv_proj\.", ".proj."),
    (r"^conv_1x1_exp\.", "final_conv."),
    (r"^classifier\.fc\.", "head."),
]


class MobileViT(ConvClassifier):
    # the weight layouts ``vitkit.load_weights`` recognises; vitkit's own first
    weight_sources = {"vitkit": [], "timm": TIMM_NAMES, "transformers": TRANSFORMERS_NAMES, "ml-cvnets": CVNETS_NAMES}
    block = MobileViTBlock  # MobileViTv3 (vitkit.models.mobilevitv3) changes the block and nothing else

    def __init__(self, cfg: MobileViTConfig, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.config = cfg
        c1, c2, c3, c4, c5 = cfg.channels
        mv2 = dict(expansion=cfg.expansion)
        self.stem = ConvNormAct(in_chans, cfg.stem_chs, 3, stride=2)  # 128x128
        self.stages = nn.Sequential(
            nn.Sequential(InvertedResidual(cfg.stem_chs, c1, 1, **mv2)),  # layer1: 128x128
            nn.Sequential(  # layer2: 64x64
                InvertedResidual(c1, c2, 2, **mv2),
                InvertedResidual(c2, c2, 1, **mv2),
                InvertedResidual(c2, c2, 1, **mv2),
            ),
            *[  # layer3: 32x32, layer4: 16x16, layer5: 8x8
                nn.Sequential(InvertedResidual(c_in, c_out, 2, **mv2), self.block(c_out, dim, depth, cfg))
                for c_in, c_out, dim, depth in zip((c2, c3, c4), (c3, c4, c5), cfg.dims, cfg.depths)
            ],
        )
        self.final_conv = ConvNormAct(c5, cfg.num_features, 1)
        self.init_head(cfg.num_features, num_classes, cfg.head_drop_rate)


CONFIGS = {
    # 1,272,024 params at 1000 classes, 0.41 GMACs at 256
    "xxs": MobileViTConfig(
        channels=(16, 24, 48, 64, 80), dims=(64, 80, 96), num_features=320, expansion=2.0, drop_rate=0.05
    ),
    # 2,317,848 params, 1.03 GMACs
    "xs": MobileViTConfig(channels=(32, 48, 64, 80, 96), dims=(96, 120, 144), num_features=384, expansion=4.0),
    # 5,578,632 params, 2.00 GMACs
    "s": MobileViTConfig(channels=(32, 64, 96, 128, 160), dims=(144, 192, 240), num_features=640, expansion=4.0),
}

# trained on [0, 1] pixels, no mean/std (matches the reference weights); timm evaluates its ImageNet weights at
# crop_pct 0.9, bicubic, shorter side first
PREPROCESS = Preprocess(input_size=256, crop_pct=0.9, interpolation="bicubic", resize_mode="shorter")

for _size, _cfg in CONFIGS.items():
    register_model(
        f"mobilevit_{_size}",
        MobileViT,
        _cfg,
        PREPROCESS,
        f"MobileViT-{_size.upper()} (paper / ml-cvnets architecture)",
    )
