"""Dropout at the cost it should have on a CPU: cheap masks, and attention dropout without full attention maps.

PyTorch's CPU dropout draws one ``bernoulli_`` float per element; that one kernel was 24% of a training
step of the keras.io MobileViT (2 heads x 1,024 x 1,024 attention weights per image and layer, dropout 0.1).
Here each 64-bit word from the generator gives four independent 16-bit uniforms, each compared with a
threshold: a third of ``bernoulli_``'s time (benchmarks/RESULTS.md). The drop probability is thereby
rounded to a multiple of 2^-16 (0.1 becomes 6554/65536 = 0.100006), and the kept values are scaled by
1 / (1 - that rounded probability), so every output's expectation is still exactly its input.

``F.scaled_dot_product_attention`` with dropout falls back on CPU to its math path, which keeps three
[B, heads, N, N] maps per layer for backward (1.5 GB at batch 64 and 1,024 tokens) and runs several passes
over each. ``dropout_attention`` works through the maps a cache-sized block at a time, keeps only the
1-byte mask for backward, and recomputes the softmax there, as FlashAttention does (Dao et al., 2022).

On other devices, and under torch.compile, both fall back to PyTorch's own fused kernels. Masks come from
the default generator of the tensor's device, so ``torch.manual_seed`` makes them reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # each uniform is 16 random bits
_BLOCK = 1 << 20  # attention weights per block (4 MiB of fp32): a share of the L3 cache; measured best of 2^18..2^22


def drop_threshold(p: float) -> int:
    """The number of 16-bit levels (out of 65,536) that drop an element: the probability actually used is this / 2^16."""
    return round(p * _LEVELS)


def _signed_threshold(p: float) -> int:
    """``drop_threshold(p)`` on the int16 scale of ``_uniforms``: a draw below it drops its element."""
    return drop_threshold(p) - _LEVELS // 2


def _uniforms(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` independent int16 uniforms over [-32768, 32767]."""
    # from=-2^63 and no upper bound: every 64-bit pattern is equally likely, so its four 16-bit lanes are
    # four independent uniforms
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    return words.view(torch.int16)[:n]


def drop_mask(shape: tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor, True where an element is dropped, each independently with probability ``drop_threshold(p) / 2^16``."""
    return _uniforms(math.prod(shape), device).view(shape) < _signed_threshold(p)


def keep_scale(p: float) -> float:
    return _LEVELS / (_LEVELS - drop_threshold(p))


class _KeepScale(torch.autograd.Function):
    """y = x * keep * scale, with only the 1-byte mask saved for backward. ``keep`` is 0/1 uint8: multiplying
    by it is several times faster on a CPU than ``masked_fill`` with a bool mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.mul(x, keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.mul(grad, keep).mul_(ctx.scale), None, None


def _cheap_masks(x: torch.Tensor) -> bool:
    """The masks here serve eager runs on a CPU. Elsewhere PyTorch's own dropout is used: its fused kernels on a
    GPU, and under torch.compile, where inductor generates the mask inside its kernels (and the int64 words seen
    as int16 in ``_uniforms`` do not trace through AOT autograd)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def keep_mask(shape: tuple[int, ...], p: float) -> torch.Tensor:
    """0/1 uint8: 1 where an element is kept (the complement of ``drop_mask`` for the same draws, in one pass)."""
    return (_uniforms(math.prod(shape)).view(shape) >= _signed_threshold(p)).view(torch.uint8)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` with the cheap mask on CPU."""
    if not training or p == 0.0:
        return x
    if not _cheap_masks(x):
        return F.dropout(x, p, training=True)
    if drop_threshold(p) >= _LEVELS:
        return x * 0.0
    return _KeepScale.apply(x, keep_mask(x.shape, p), keep_scale(p))


class Dropout(nn.Module):
    """``nn.Dropout`` with the cheap CPU mask (see the module docstring)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _blocks(num_maps: int, rows: int, cols: int):
    """(map slice, row slice) pairs covering [num_maps, rows, cols] in blocks of about ``_BLOCK`` elements."""
    if rows * cols >= _BLOCK:
        step = max(1, _BLOCK // cols)
        for b in range(num_maps):
            for r in range(0, rows, step):
                yield slice(b, b + 1), slice(r, r + step)
    else:
        step = max(1, _BLOCK // (rows * cols))
        for b in range(0, num_maps, step):
            yield slice(b, b + step), slice(0, rows)


class _DropoutAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
        B, H, Nq, Dh = q.shape
        Nk, Dv = k.shape[2], v.shape[3]
        q = q.reshape(B * H, Nq, Dh) * Dh**-0.5  # [B, H, N, Dh] -> [BH, N, Dh], pre-scaled
        k = k.reshape(B * H, Nk, Dh)
        v = v.reshape(B * H, Nk, Dv)
        keep = torch.empty(B * H, Nq, Nk, dtype=torch.bool)
        threshold = _signed_threshold(p)
        out = q.new_empty(B * H, Nq, Dv)
        k_t = k.transpose(1, 2)
        for maps, rows in _blocks(B * H, Nq, Nk):
            attn = torch.softmax(torch.bmm(q[maps, rows], k_t[maps]), dim=-1)
            # the mask is drawn block by block, written while in cache rather than streamed in from a whole-layer draw
            block_keep = keep[maps, rows]
            torch.ge(_uniforms(block_keep.numel()).view(block_keep.shape), threshold, out=block_keep)
            attn.mul_(block_keep.view(torch.uint8))
            torch.bmm(attn, v[maps], out=out[maps, rows])
        out.mul_(keep_scale(p))
        keep = keep.view(torch.uint8)
        ctx.save_for_backward(q, k, v, keep)
        ctx.p = p
        return out.view(B, H, Nq, Dv)  # [BH, N, Dv] -> [B, H, N, Dv]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, keep = ctx.saved_tensors
        B, H, Nq, Dv = grad_out.shape
        grad_out = grad_out.reshape(B * H, Nq, Dv) * keep_scale(ctx.p)  # [B, H, N, Dv] -> [BH, N, Dv]
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        k_t, v_t = k.transpose(1, 2), v.transpose(1, 2)
        for maps, rows in _blocks(B * H, Nq, k.shape[1]):
            attn = torch.softmax(torch.bmm(q[maps, rows], k_t[maps]), dim=-1)  # recomputed, as in the forward
            mask, g = keep[maps, rows].to(attn.dtype), grad_out[maps, rows]  # converted once, used twice
            grad_attn = torch.bmm(g, v_t[maps]).mul_(mask)
            grad_scores = torch._softmax_backward_data(grad_attn, attn, -1, attn.dtype)
            grad_v[maps].baddbmm_(attn.mul_(mask).transpose(1, 2), g)
            torch.bmm(grad_scores, k[maps], out=grad_q[maps, rows])
            grad_k[maps].baddbmm_(grad_scores.transpose(1, 2), q[maps, rows])
        grad_q.mul_(q.shape[-1] ** -0.5)
        # [BH, N, d] -> [B, H, N, d]
        return grad_q.view(B, H, Nq, -1), grad_k.view(B, H, *k.shape[1:]), grad_v.view(B, H, *v.shape[1:]), None


def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) with dropout ``p`` on the attention weights, times v; [B, H, N, d] in and out."""
    if p == 0.0 or not _cheap_masks(q) or drop_threshold(p) >= _LEVELS:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    return _DropoutAttention.apply(q, k, v, p)
