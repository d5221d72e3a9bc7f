"""The MobileViT-XXS of the Keras example (keras.io, Sayak Paul), layer for layer.

It departs from the paper: biased convs with swish and no BatchNorm outside the MV2
blocks, a 3x3 local conv straight to d, 2-head attention with key_dim d, swish after both MLP denses,
no LayerNorm after the transformer, a fusion conv that outputs d, TensorFlow "same" padding and
Keras BatchNorm defaults (eps 1e-3, momentum 0.99).

The example unfolds with a plain reshape of the NHWC map to (4, h*w/4, d). Keras' MultiHeadAttention
then attends over *both* of those axes (``attention_axes=None`` means every axis but batch, heads and
features), so every pixel attends to every other one: the row bands never restrict attention. This
module computes exactly that, which also lets it take sizes whose h*w is not a multiple of 4.

With 5 classes it has 1,305,077 trainable parameters plus 2,544 BatchNorm statistics: 1,307,621 in
Keras' count, the example's total.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitkit.models.layers import ConvNormAct, InvertedResidual, TransformerBlock
from vitkit.models.mobilevit import ConvClassifier
from vitkit.models.registry import register_model
from vitkit.preprocess import Preprocess



def conv_block(in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1) -> ConvNormAct:
    """The example's ``conv_block``: Conv2D with bias and swish, no BatchNorm, "same" padding."""
    return ConvNormAct(in_chs, out_chs, kernel_size, stride, norm=False, bias=True, tf_same=True)


@dataclass(frozen=True)
class KerasMobileViTConfig:
    channels: tuple[int, int, int, int, int] = (16, 24, 48, 64, 80)  # MV2 outputs of layer1 .. layer5
    dims: tuple[int, int, int] = (64, 80, 96)  # projection_dim of the three MobileViT blocks
    depths: tuple[int, int, int] = (2, 4, 3)
    num_features: int = 320
    expansion: float = 2.0
    stem_chs: int = 16
    num_heads: int = 2  # MultiHeadAttention(num_heads=2, key_dim=projection_dim)
    mlp_ratio: float = 2.0
    drop_rate: float = 0.1  # MLP dropout
    attn_drop_rate: float = 0.1  # MultiHeadAttention(dropout=0.1)
    head_drop_rate: float = 0.0  # the example has no dropout before its Dense head
    # the weight of each new batch in BatchNorm's running statistics: Keras' default momentum 0.99 is
    # PyTorch's 0.01. A training choice, not part of the function the weights compute
    bn_momentum: float = 0.01
    image_size: int = 256


class KerasMobileViTBlock(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, cfg: KerasMobileViTConfig):
        super().__init__()
        self.local_kxk = conv_block(in_chs, dim, 3)
        self.local_1x1 = conv_block(dim, dim, 1)
        self.transformer = nn.Sequential(
            *[
                TransformerBlock(
                    dim,
                    cfg.num_heads,
                    int(dim * cfg.mlp_ratio),
                    act_layer=nn.SiLU,
                    head_dim=dim,
                    attn_drop=cfg.attn_drop_rate,  # on the attention weights; none after the output
                    mlp_hidden_drop=cfg.drop_rate,
                    mlp_out_drop=cfg.drop_rate,
                    mlp_out_act=True,
                    norm_eps=1e-6,
                )
                for _ in range(depth)
            ]
        )
        self.proj = conv_block(dim, in_chs, 1)
        self.fusion = conv_block(2 * in_chs, dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.local_1x1(self.local_kxk(x))
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # [B, d, H, W] -> [B, HW, d]: every pixel is a token
        x = self.transformer(x)
        x = x.transpose(1, 2).reshape(B, C, H, W)  # [B, HW, d] -> [B, d, H, W]
        x = self.proj(x)
        return self.fusion(torch.cat((shortcut, x), dim=1))


class KerasMobileViT(ConvClassifier):
    weight_sources = {"vitkit": []}  # no other PyTorch library builds this network
    # modules declared in the order the example's code creates its Keras layers, so the example's own
    # .weights.h5 / .keras files load layer by layer (vitkit.weights.keras)
    keras_layout = True

    def __init__(self, cfg: KerasMobileViTConfig, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.config = cfg
        c1, c2, c3, c4, c5 = cfg.channels
        mv2 = dict(expansion=cfg.expansion, bn_eps=1e-3, bn_momentum=cfg.bn_momentum, tf_same=True)  # Keras' eps
        self.stem = conv_block(in_chans, cfg.stem_chs, 3, stride=2)  # 128x128
        self.stages = nn.Sequential(
            nn.Sequential(InvertedResidual(cfg.stem_chs, c1, 1, **mv2)),  # 128x128
            nn.Sequential(  # 64x64
                InvertedResidual(c1, c2, 2, **mv2),
                InvertedResidual(c2, c2, 1, **mv2),
                InvertedResidual(c2, c2, 1, **mv2),
            ),
        )
        in_chs = c2
        for c_out, dim, depth in zip((c3, c4, c5), cfg.dims, cfg.depths):  # 32x32, 16x16, 8x8
            self.stages.append(
                nn.Sequential(InvertedResidual(in_chs, c_out, 2, **mv2), KerasMobileViTBlock(c_out, dim, depth, cfg))
            )
            in_chs = dim  # the fusion conv outputs d, and the next MV2 block expands d
        self.final_conv = conv_block(in_chs, cfg.num_features, 1)
        # the example's Rescaling(1/255) is the data pipeline's job: the model takes [0, 1] pixels
        self.init_head(cfg.num_features, num_classes, cfg.head_drop_rate)


register_model(
    "mobilevit_xxs_keras",
    KerasMobileViT,
    KerasMobileViTConfig(),
    # the example resizes validation images straight to 256x256 (tf.image.resize: a squash, bilinear, no crop)
    Preprocess(input_size=256, crop_pct=1.0, interpolation="bilinear", resize_mode="squash"),
    "MobileViT-XXS exactly as the keras.io example builds it",
)
