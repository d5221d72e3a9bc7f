"""MobileViTv2 (Mehta and Rastegari, 2022, "Separable Self-attention for Mobile Vision Transformers") as
Apple's ml-cvnets builds it, at width multipliers 0.5 to 2.0.

The block replaces v1's multi-head attention with separable self-attention: a single query channel scores
every patch, the scores weight the keys into one context vector per position inside the patch, and that
vector gates the values. Its cost is linear in the number of patches. Layer norm is a GroupNorm with one
group (it normalises over channels and all positions), and the block ends at its 1x1 projection: v2 has no
fusion with the block's input.

The references unfold a feature map [B, C, H, W] into patches [B, C, p*p, N] and fold it back. Every
operation here is per pixel except the normalisation (over everything) and the attention's sum over N
for each position inside the patch; vitkit computes that sum on a free view [B, C, H/p, p, W/p, p] of the
feature map, so the block runs in the image layout with no unfold or fold copies, channels_last included.

Weights from ml-cvnets, timm (``mobilevitv2_*``) and transformers (``MobileViTV2ForImageClassification``)
load through ``vitkit.load_weights``. Feature-map sizes in the comments are for the default 256x256 input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.models.dropout import Dropout
from vitkit.models.layers import ConvNormAct, InvertedResidual, make_divisible
from vitkit.models.mobilevit import (
    CVNETS_FRAME_NAMES,
    CVNETS_MV2_NAMES,
    TIMM_FRAME_NAMES,
    TRANSFORMERS_FRAME_NAMES,
    ConvClassifier,
)
from vitkit.models.registry import register_model
from vitkit.preprocess import Preprocess


@dataclass(frozen=True)
class MobileViTV2Config:
    width: float = 1.0  # the width multiplier: every channel count below is scaled by it
    base_channels: tuple[int, int, int, int, int] = (64, 128, 256, 384, 512)  # layer1 .. layer5 at width 1
    base_dims: tuple[int, int, int] = (128, 192, 256)  # attention width d in layer3 .. layer5 at width 1
    depths: tuple[int, int, int] = (2, 4, 3)  # attention layers in layer3 .. layer5
    expansion: float = 2.0  # MV2 expansion ratio
    ffn_multiplier: float = 2.0
    patch_size: int = 2
    drop_rate: float = 0.0  # dropout after attention and inside the feed-forward
    attn_drop_rate: float = 0.0  # dropout on the context scores
    head_drop_rate: float = 0.1  # dropout before the classifier
    image_size: int = 256  # default input; any size works

    @property
    def stem_chs(self) -> int:
        return make_divisible(min(max(32 * self.width, 16), 64), 8)

    @property
    def channels(self) -> tuple[int, ...]:
        # layer1 rounds to 16 (ml-cvnets' config), the others to 8
        return tuple(make_divisible(c * self.width, 16 if i == 0 else 8) for i, c in enumerate(self.base_channels))

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(make_divisible(d * self.width, 8) for d in self.base_dims)


def patch_view(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H/p, p, W/p, p], a view: dims 2 and 4 index the patch (N), 3 and 5 the
    position inside it (P)."""
    B, C, H, W = x.shape
    return x.view(B, C, H // p, p, W // p, p)


class SeparableSelfAttention(nn.Module):
    """One query channel scores the N patches (softmax over N, for each of the p*p positions inside a patch);
    the scores sum the keys into a context vector per position, which gates relu(values). Linear in N."""

    def __init__(self, dim: int, patch_size: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.dim, self.patch_size = dim, patch_size
        self.qkv = nn.Conv2d(dim, 1 + 2 * dim, 1)  # [query (1 channel), keys (d), values (d)]
        self.attn_drop = Dropout(attn_drop)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.proj_drop = Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.patch_size
        q, k, v = self.qkv(x).split([1, self.dim, self.dim], dim=1)
        # TFLite takes elementwise ops up to 5-D, so the single-channel query is scored as [B, H/p, p, W/p, p]
        scores = self.attn_drop(softmax_over_patches(q.view(B, H // p, p, W // p, p)))
        context = (patch_view(k, p) * scores.unsqueeze(1)).sum((2, 4), keepdim=True)  # -> [B, d, 1, p, 1, p]
        x = (patch_view(F.relu(v), p) * context).view(B, C, H, W)  # [B, d, H/p, p, W/p, p] -> [B, d, H, W]
        return self.proj_drop(self.proj(x))


def softmax_over_patches(q: torch.Tensor) -> torch.Tensor:
    """Softmax over dims 1 and 3 together (the N patches) of [B, H/p, p, W/p, p]. The single-channel query
    is small, so it is copied into [B, p, p, N] for one softmax over its last dim (what every runtime has as
    one op; a hand-made max-subtract-exp lost onnxruntime's shape inference), and viewed back."""
    B, nh, p, nw, _ = q.shape
    q = q.permute(0, 2, 4, 1, 3).reshape(B, p, p, nh * nw)  # -> [B, p, p, N]
    return q.softmax(-1).view(B, p, p, nh, nw).permute(0, 3, 1, 4, 2)  # -> [B, H/p, p, W/p, p]


class LinearTransformerLayer(nn.Module):
    """Pre-norm: x + attn(norm1(x)), then x + ffn(norm2(x)); norms are GroupNorm(1), the FFN is 1x1 convs."""

    def __init__(self, dim: int, ffn_dim: int, cfg: MobileViTV2Config):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim, eps=1e-5)
        self.attn = SeparableSelfAttention(dim, cfg.patch_size, cfg.attn_drop_rate, cfg.drop_rate)
        self.norm2 = nn.GroupNorm(1, dim, eps=1e-5)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, ffn_dim, 1),
            nn.SiLU(),
            Dropout(cfg.drop_rate),
            nn.Conv2d(ffn_dim, dim, 1),
            Dropout(cfg.drop_rate),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTV2Block(nn.Module):
    """Depthwise 3x3 -> 1x1 to d -> linear-attention layers -> norm -> 1x1 back to C (with BatchNorm)."""

    def __init__(self, chs: int, dim: int, depth: int, cfg: MobileViTV2Config):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.local_kxk = ConvNormAct(chs, chs, 3, groups=chs)
        self.local_1x1 = nn.Conv2d(chs, dim, 1, bias=False)
        ffn_dim = int(cfg.ffn_multiplier * dim) // 16 * 16
        self.transformer = nn.Sequential(*[LinearTransformerLayer(dim, ffn_dim, cfg) for _ in range(depth)])
        self.norm = nn.GroupNorm(1, dim, eps=1e-5)
        self.proj = ConvNormAct(dim, chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_to_patch_multiple(x, self.patch_size)
        x = self.local_1x1(self.local_kxk(x))
        x = self.norm(self.transformer(x))
        return self.proj(x)


def resize_to_patch_multiple(x: torch.Tensor, p: int) -> torch.Tensor:
    """ml-cvnets and timm resize a feature map whose sides are not multiples of the patch up to the next
    multiple (bilinear, corners aligned) before the block, and keep that size after it."""
    H, W = x.shape[-2:]
    new_h, new_w = math.ceil(H / p) * p, math.ceil(W / p) * p
    if (new_h, new_w) == (H, W):
        return x
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)


# How the reference implementations name MobileViTv2's weights: (regex, replacement) rules applied in order
# to every key, turning it into vitkit's module path.

# transformers MobileViTV2ForImageClassification (checkpoints apple/mobilevitv2-*)
TRANSFORMERS_NAMES = [
    (r"^mobilevitv2\.", ""),
    *TRANSFORMERS_FRAME_NAMES,
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.qkv_proj\.conv\.", ".attn.qkv."),
    (r"\.attention\.out_proj\.conv\.", ".attn.proj."),
    (r"\.ffn\.conv1\.conv\.", ".mlp.0."),
    (r"\.ffn\.conv2\.conv\.", ".mlp.3."),
    (r"\.layernorm\.", ".norm."),
    (r"\.conv_projection\.", ".proj."),
    (r"^classifier\.", "head."),
]

# timm mobilevitv2_* (its ByobNet layout)
TIMM_NAMES = [
    *TIMM_FRAME_NAMES,
    (r"\.attn\.qkv_proj\.", ".attn.qkv."),
    (r"\.attn\.out_proj\.", ".attn.proj."),
    (r"\.mlp\.fc1\.", ".mlp.0."),
    (r"\.mlp\.fc2\.", ".mlp.3."),
    (r"\.conv_proj\.", ".proj."),
    (r"^head\.fc\.", "head."),
]

# Apple ml-cvnets checkpoints (layer_1 .. layer_5, ConvLayer ``block`` wrappers; v2's local_rep and FFN are
# numbered Sequentials; newer checkpoints prefix everything with ``encoder.``)
CVNETS_NAMES = [
    (r"^encoder\.", ""),
    *CVNETS_FRAME_NAMES,
    (r"\.local_rep\.0\.", ".local_kxk."),
    (r"\.local_rep\.1\.conv\.", ".local_1x1."),
    *CVNETS_MV2_NAMES,
    (r"\.global_rep\.(\d+)\.pre_norm_attn\.0\.", r".transformer.\1.norm1."),
    (r"\.global_rep\.(\d+)\.pre_norm_attn\.1\.qkv_proj\.conv\.", r".transformer.\1.attn.qkv."),
    (r"\.global_rep\.(\d+)\.pre_norm_attn\.1\.out_proj\.conv\.", r".transformer.\1.attn.proj."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.0\.", r".transformer.\1.norm2."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.1\.conv\.", r".transformer.\1.mlp.0."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.3\.conv\.", r".transformer.\1.mlp.3."),
    (r"\.global_rep\.\d+\.(weight|bias)$", r".norm.\1"),  # the GroupNorm after the last layer
    (r"\.conv_proj\.", ".proj."),
    (r"^classifier\.1\.", "head."),
]


class MobileViTV2(ConvClassifier):
    weight_sources = {"vitkit": [], "timm": TIMM_NAMES, "transformers": TRANSFORMERS_NAMES, "ml-cvnets": CVNETS_NAMES}
    block = MobileViTV2Block

    def __init__(self, cfg: MobileViTV2Config, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.config = cfg
        c1, c2, c3, c4, c5 = cfg.channels
        mv2 = dict(expansion=cfg.expansion)
        self.stem = ConvNormAct(in_chans, cfg.stem_chs, 3, stride=2)  # 128x128
        self.stages = nn.Sequential(
            nn.Sequential(InvertedResidual(cfg.stem_chs, c1, 1, **mv2)),  # layer1: 128x128
            nn.Sequential(InvertedResidual(c1, c2, 2, **mv2), InvertedResidual(c2, c2, 1, **mv2)),  # layer2: 64x64
            *[  # layer3: 32x32, layer4: 16x16, layer5: 8x8
                nn.Sequential(InvertedResidual(c_in, c_out, 2, **mv2), self.block(c_out, dim, depth, cfg))
                for c_in, c_out, dim, depth in zip((c2, c3, c4), (c3, c4, c5), cfg.dims, cfg.depths)
            ],
        )
        self.final_conv = nn.Identity()  # v2 pools layer5's output directly
        self.init_head(c5, num_classes, cfg.head_drop_rate)


WIDTHS = {"050": 0.5, "075": 0.75, "100": 1.0, "125": 1.25, "150": 1.5, "175": 1.75, "200": 2.0}

# trained on [0, 1] pixels, no mean/std; timm evaluates its ImageNet weights at crop_pct 0.888, bicubic
PREPROCESS = Preprocess(input_size=256, crop_pct=0.888, interpolation="bicubic", resize_mode="shorter")

for _name, _width in WIDTHS.items():
    register_model(
        f"mobilevitv2_{_name}",
        MobileViTV2,
        MobileViTV2Config(width=_width),
        PREPROCESS,
        f"MobileViTv2 at width {_width} (separable self-attention; ml-cvnets architecture)",
    )
