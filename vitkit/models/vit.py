"""Vision Transformer (Dosovitskiy et al., 2020): ViT-B/16 and smaller, and the Keras CIFAR-10 ViT.

Weights from timm (``vit_*_patch16_*``) and transformers (``ViTForImageClassification``) load through
``vitkit.load_weights``. Any image size works: the position embedding is resized (bicubic, as timm and
transformers do) to the new patch grid; pixels past the last whole patch are not seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.models.dropout import Dropout
from vitkit.models.layers import TRANSFORMERS_BLOCK_NAMES, TransformerBlock
from vitkit.models.registry import register_model
from vitkit.preprocess import Preprocess


@dataclass(frozen=True)
class ViTConfig:
    dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    image_size: int = 224  # the size the position embedding is laid out for
    mlp_ratio: float = 4.0
    qkv_bias: bool = True  # the released weights (timm, transformers, Google) use it
    mlp_out_act: bool = False  # the Keras CIFAR example puts GELU after both MLP denses
    drop_rate: float = 0.0  # after the position embedding, the attention projection and both MLP denses
    mlp_drop_rate: float | None = None  # the MLP's own, where it differs from drop_rate
    attn_drop_rate: float = 0.0
    norm_eps: float = 1e-6


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize the patch part of a [1, 1 + gh*gw, D] position embedding; the class token's stays."""
    if old_grid == new_grid:
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    patch_pos = patch_pos.reshape(1, *old_grid, dim).permute(0, 3, 1, 2)  # [1, N, D] -> [1, D, gh, gw]
    patch_pos = F.interpolate(patch_pos, size=new_grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)  # [1, D, gh', gw'] -> [1, N', D]
    return torch.cat((cls_pos, patch_pos), dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping patches projected by one strided conv (the same as flatten + Dense)."""

    def __init__(self, patch_size: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # [B, 3, H, W] -> [B, D, H/p, W/p]


# How transformers' ViTForImageClassification / ViTModel names the weights: the hub files (google/vit-*) use
# the v4 names, a transformers v5 model's own state_dict the v5 ones (layers.N, q_proj, o_proj, mlp.fc1).
# timm's names are vitkit's.
TRANSFORMERS_NAMES = [
    (r"^vit\.", ""),
    (r"^layers\.(\d+)\.", r"blocks.\1."),
    (r"\.attention\.q_proj\.", ".attn.query."),
    (r"\.attention\.k_proj\.", ".attn.key."),
    (r"\.attention\.v_proj\.", ".attn.value."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    *TRANSFORMERS_BLOCK_NAMES,
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
    (r"^(vit\.)?pooler\.", None),  # transformers' ViTModel pooler: no part of a classifier
]


class VisionTransformer(nn.Module):
    prefers_channels_last = False  # token-major already: nothing to gain
    any_input_size = False  # pixels past the last whole patch are dropped: sides must be multiples of it
    weight_sources = {"vitkit/timm": [], "transformers": TRANSFORMERS_NAMES}
    first_conv = "patch_embed.proj.weight"

    @staticmethod
    def input_multiple(cfg: ViTConfig) -> int:
        return cfg.patch_size  # pixels past the last whole patch are not seen

    def __init__(self, cfg: ViTConfig, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.config = cfg
        self.num_classes = num_classes
        self.num_features = cfg.dim
        self.grid = (cfg.image_size // cfg.patch_size,) * 2
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.dim, in_chans)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], cfg.dim))
        self.pos_drop = Dropout(cfg.drop_rate)
        self.blocks = nn.Sequential(
            *[
                TransformerBlock(
                    cfg.dim,
                    cfg.num_heads,
                    int(cfg.dim * cfg.mlp_ratio),
                    act_layer=nn.GELU,
                    qkv_bias=cfg.qkv_bias,
                    attn_drop=cfg.attn_drop_rate,
                    proj_drop=cfg.drop_rate,
                    mlp_hidden_drop=cfg.drop_rate if cfg.mlp_drop_rate is None else cfg.mlp_drop_rate,
                    mlp_out_drop=cfg.drop_rate if cfg.mlp_drop_rate is None else cfg.mlp_drop_rate,
                    mlp_out_act=cfg.mlp_out_act,
                    norm_eps=cfg.norm_eps,
                )
                for _ in range(cfg.depth)
            ]
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # RandomNormal(stddev=0.02) in the TensorFlow ViT tutorial; class token zeros
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias) if m.bias is not None else None

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalized -> [B, 1 + N, D] tokens with position embeddings, class token first."""
        x = self.patch_embed(x)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # [B, D, gh, gw] -> [B, N, D]
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # -> [B, 1 + N, D]
        return self.pos_drop(x + resize_pos_embed(self.pos_embed, self.grid, grid))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalized -> [B, 1 + N, D] normalized tokens, class token first."""
        return self.norm(self.blocks(self.embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]  # the class token
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class token's logits. Only the class token leaves the last block for the head, and nothing else that
        block computes reaches it: there the class token alone attends (to every token) and goes through the MLP.
        The same function as ``forward_head(forward_features(x))`` with 1/depth less work, forward and backward."""
        x = self.embed(x)
        for block in self.blocks[:-1]:
            x = block(x)
        x = self.blocks[-1](x, num_outputs=1)  # [B, 1 + N, D] -> [B, 1, D]
        return self.forward_head(self.norm(x))


# Google's and timm's ImageNet weights take [-1, 1] pixels; timm evaluates them at crop_pct 0.9, bicubic
_IMAGENET_VIT = Preprocess(
    input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.9, interpolation="bicubic", resize_mode="shorter"
)

_PRESETS = {
    # name: (config, preprocess, description)
    "vit_b16": (  # 86,567,656 params at 1000 classes, 17.6 GMACs at 224
        ViTConfig(dim=768, depth=12, num_heads=12),
        _IMAGENET_VIT,
        "ViT-B/16 with qkv bias (timm / transformers / Google weights)",
    ),
    "vit_b16_no_qkv_bias": (  # 86,540,008 params: 27,648 fewer
        ViTConfig(dim=768, depth=12, num_heads=12, qkv_bias=False),
        _IMAGENET_VIT,
        "ViT-B/16 as the TensorFlow ViT tutorial builds it (no qkv bias)",
    ),
    "vit_s16": (  # 22,050,664 params
        ViTConfig(dim=384, depth=12, num_heads=6),
        _IMAGENET_VIT,
        "ViT-S/16 (timm vit_small_patch16_224)",
    ),
    "vit_ti16": (  # 5,717,416 params
        ViTConfig(dim=192, depth=12, num_heads=3),
        _IMAGENET_VIT,
        "ViT-Ti/16 (timm vit_tiny_patch16_224)",
    ),
    "vit_cifar": (  # the Keras CIFAR-10 example: 144 patches of 6x6, MLP [128, 64]; dropout in the MLP only
        ViTConfig(
            dim=64, depth=8, num_heads=4, patch_size=6, image_size=72, mlp_ratio=2.0, mlp_out_act=True, mlp_drop_rate=0.1
        ),
        # the example's Normalization layer adapted to CIFAR-10; it resizes 32 -> 72 with no crop (a squash)
        Preprocess(
            input_size=72, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), crop_pct=1.0,
            resize_mode="squash",
        ),  # fmt: skip
        "small ViT of the Keras CIFAR-10 example: image 72, patch 6, dim 64, 8 layers, 4 heads",
    ),
}

for _name, (_cfg, _pre, _desc) in _PRESETS.items():
    register_model(_name, VisionTransformer, _cfg, _pre, _desc)
