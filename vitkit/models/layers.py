"""Building blocks shared by the model families: conv-norm-act, MobileNetV2 block, transformer block, and how\nthe reference libraries name the transformer block's weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.models.dropout import Dropout, dropout_attention


def pad_same(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """Pad like TensorFlow's ``padding="same"``: the extra pixel of an even split goes after, not before."""
    ih, iw = x.shape[-2:]
    pad_h = max((math.ceil(ih / stride) - 1) * stride + kernel_size - ih, 0)
    pad_w = max((math.ceil(iw / stride) - 1) * stride + kernel_size - iw, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class ConvNormAct(nn.Module):
    """Conv2d -> BatchNorm -> activation, each part optional.

    ``tf_same=True`` pads like TensorFlow (asymmetric for stride 2), for models defined in Keras.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm: bool = True,
        act: bool = True,
        bias: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        tf_same: bool = False,
    ):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.tf_same = tf_same and stride > 1  # stride 1 "same" is symmetric: plain padding does it
        padding = 0 if self.tf_same else kernel_size // 2
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_chs, eps=bn_eps, momentum=bn_momentum) if norm else nn.Identity()
        self.act = act  # SiLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            x = pad_same(x, self.kernel_size, self.stride)
        x = self.bn(self.conv(x))
        # in place: the tensor is ours and neither conv nor BatchNorm needs it for backward. A fresh
        # buffer per activation cost a third of CPU inference time at 256 px and 10% more training
        # memory (benchmarks/RESULTS.md)
        return F.silu(x, inplace=True) if self.act else x

    @torch.no_grad()
    def fuse_bn(self) -> None:
        """Fold an eval-mode BatchNorm into the conv: y = (conv(x) - mean) * gamma / std + beta."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        conv, bn = self.conv, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
        ).to(conv.weight)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
        self.conv, self.bn = fused, nn.Identity()


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection, residual when shapes allow."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        expansion: float = 4.0,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        tf_same: bool = False,
    ):
        super().__init__()
        hidden = make_divisible(in_chs * expansion, 8)
        norm = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.expand = ConvNormAct(in_chs, hidden, 1, **norm)
        self.depthwise = ConvNormAct(hidden, hidden, 3, stride, groups=hidden, tf_same=tf_same, **norm)
        self.project = ConvNormAct(hidden, out_chs, 1, act=False, **norm)
        self.use_residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.use_residual:
            return out
        return out.add_(x) if not torch.is_grad_enabled() else out + x  # in place: ``out`` is a fresh tensor


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels the way ml-cvnets and MobileNetV2 do (never more than 10% below ``value``)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection.

    ``head_dim`` defaults to ``dim // num_heads``; Keras' ``MultiHeadAttention(key_dim=dim)`` sets it to ``dim``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner_dim = self.num_heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * inner_dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner_dim, dim)
        self.proj_drop = Dropout(proj_drop)

    def forward(self, x: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """[B, N, D] -> [B, N, D]; with ``num_queries`` only the first that many tokens attend (to all N), and
        [B, num_queries, D] comes back."""
        if num_queries is not None:
            return self._first_tokens_attend(x, num_queries)
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # [B, N, 3*H*Dh] -> [B, N, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, N, Dh]
        return self._attend(q, k, v)

    def _first_tokens_attend(self, x: torch.Tensor, num_queries: int) -> torch.Tensor:
        B, N, _ = x.shape
        inner = self.num_heads * self.head_dim
        weight, bias = self.qkv.weight, self.qkv.bias  # rows: q, then k, then v
        q = F.linear(x[:, :num_queries], weight[:inner], None if bias is None else bias[:inner])
        kv = F.linear(x, weight[inner:], None if bias is None else bias[inner:])
        q = q.reshape(B, num_queries, self.num_heads, self.head_dim).transpose(1, 2)  # -> [B, H, Nq, Dh]
        k, v = kv.reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # 2 x [B, H, N, Dh]
        return self._attend(q, k, v)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, _, Nq, _ = q.shape
        x = dropout_attention(q, k, v, self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, Nq, self.num_heads * self.head_dim)  # [B, H, Nq, Dh] -> [B, Nq, H*Dh]
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Linear -> act -> dropout -> Linear (-> act, as the Keras examples do) -> dropout."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        act_layer: type[nn.Module] = nn.GELU,
        hidden_drop: float = 0.0,
        out_drop: float = 0.0,
        out_act: bool = False,
    ):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.drop1 = Dropout(hidden_drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.out_act = act_layer() if out_act else nn.Identity()
        self.drop2 = Dropout(out_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.out_act(self.fc2(x)))


# how Hugging Face transformers (v4 names) spells one ``TransformerBlock``; its ViT and MobileViT share them
TRANSFORMERS_BLOCK_NAMES: list[tuple[str, str]] = [
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),  # merged into qkv by the loader
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden_dim: int,
        act_layer: type[nn.Module] = nn.GELU,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        mlp_hidden_drop: float = 0.0,
        mlp_out_drop: float = 0.0,
        mlp_out_act: bool = False,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, head_dim, qkv_bias, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden_dim, act_layer, mlp_hidden_drop, mlp_out_drop, mlp_out_act)

    def forward(self, x: torch.Tensor, num_outputs: int | None = None) -> torch.Tensor:
        """[B, N, D] -> [B, N, D], or only the first ``num_outputs`` tokens' outputs (which still attend to all N)."""
        if num_outputs is None:
            x = x + self.attn(self.norm1(x))
        else:
            x = x[:, :num_outputs] + self.attn(self.norm1(x), num_queries=num_outputs)
        return x + self.mlp(self.norm2(x))
