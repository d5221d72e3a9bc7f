"""Dropout at the cost it should have on a CPU: cheap masks, and attention dropout in cache-sized blocks.

PyTorch's CPU dropout draws one ``bernoulli_`` float per element; that one kernel was 24% of a training
step of the keras.io MobileViT (2 heads x 1,024 x 1,024 attention weights per image and layer, dropout 0.1).
Here each 64-bit SplitMix64 word gives four independent 16-bit uniforms, each compared with a threshold
(benchmarks/RESULTS.md has the timings). The drop probability is thereby rounded to a multiple of 2^-16
(0.1 becomes 6554/65536 = 0.100006), and the kept values are scaled by 1 / (1 - that rounded probability),
so every output's expectation is still exactly its input.

``F.scaled_dot_product_attention`` with dropout falls back on CPU to its math path, which keeps three
[B, heads, N, N] maps per layer for backward (1.5 GB at batch 64 and 1,024 tokens) and runs several passes
over each. ``dropout_attention`` works through the maps a cache-sized block at a time and keeps two for
backward: the softmax (4 bytes a weight, as Keras on TensorFlow keeps it too) and the 1-byte mask. Keeping
the softmax rather than recomputing it in backward, as FlashAttention does (Dao et al., 2022), saves one of
the seven products and a softmax per block: 11% of the layer's time on this CPU, for 512 MB per 1,024-token
layer at batch 64.

On other devices, and under torch.compile, both fall back to PyTorch's own fused kernels. Each mask's seed
is drawn from PyTorch's default generator, so ``torch.manual_seed`` makes the masks reproducible.
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


def _int64(u: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return u - (1 << 64) if u >= 1 << 63 else u


# SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014; the constants
# of Vigna's reference splitmix64.c): the i-th output is mix(seed + i * GAMMA). It passes BigCrush, and being a
# function of a counter it runs as a few whole-tensor integer ops on every core, where ``random_``'s Mersenne
# Twister is one serial loop: 2.3x faster per word on a 2-core CPU (benchmarks/dropout_attention.py).
_GAMMA, _MIX1, _MIX2 = (_int64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
_STEPS_CACHED = 1 << 18  # the counters * GAMMA of one attention block's words are kept (2 MiB), not rebuilt each call
_steps = torch.empty(0, dtype=torch.int64)


def _gamma_steps(n: int) -> torch.Tensor:
    """[1, 2, ..., n] * GAMMA (mod 2^64) as int64."""
    global _steps
    if n > _STEPS_CACHED:
        return torch.arange(1, n + 1, dtype=torch.int64).mul_(_GAMMA)
    if _steps.numel() < n:
        _steps = torch.arange(1, _STEPS_CACHED + 1, dtype=torch.int64).mul_(_GAMMA)
    return _steps[:n]


def splitmix64(seed: int, n: int) -> torch.Tensor:
    """The first ``n`` outputs of SplitMix64 from ``seed``, as int64 (the same 64 bits as the reference's uint64)."""
    x = torch.add(_gamma_steps(n), seed)
    shifted = torch.empty_like(x)
    for bits, multiplier in ((30, _MIX1), (27, _MIX2), (31, None)):
        # x ^= x >> bits, a logical shift: int64's >> copies the sign bit, so the copies are masked off
        torch.bitwise_right_shift(x, bits, out=shifted).bitwise_and_((1 << (64 - bits)) - 1)
        x.bitwise_xor_(shifted)
        if multiplier is not None:
            x.mul_(multiplier)  # wraps modulo 2^64, as the reference's uint64 product
    return x


def _uniforms(n: int) -> torch.Tensor:
    """``n`` independent int16 uniforms over [-32768, 32767] on the CPU: the four 16-bit lanes of each 64-bit
    SplitMix64 word, from a seed drawn from PyTorch's default generator (so ``torch.manual_seed`` makes them
    reproducible)."""
    seed = torch.empty((), dtype=torch.int64).random_(-(2**63), None).item()
    return splitmix64(seed, (n + 3) // 4).view(torch.int16)[:n]


def _keep_from_uniforms(uniforms: torch.Tensor, threshold: int) -> torch.Tensor:
    """int16 0/1: 1 where a uniform is at or above ``threshold`` (> -32768). Clamping to [threshold - 1, threshold]
    and subtracting is two vectorized passes; ``torch.ge`` into bool was 5x slower on this CPU."""
    if threshold <= -(_LEVELS // 2):  # nothing is dropped (and threshold - 1 would not fit in int16)
        return torch.ones_like(uniforms)
    return torch.clamp(uniforms, threshold - 1, threshold).sub_(threshold - 1)


def drop_mask(shape: tuple[int, ...], p: float) -> torch.Tensor:
    """A bool tensor, True where an element is dropped, each independently with probability ``drop_threshold(p) / 2^16``."""
    return _uniforms(math.prod(shape)).view(shape) < _signed_threshold(p)


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


def _eager_on_cpu(x: torch.Tensor) -> bool:
    """The masks here, and the plain attention over few keys, serve eager runs on a CPU. Elsewhere PyTorch's own
    kernels are used: its fused ones on a GPU, and under torch.compile, where inductor generates the mask inside
    its kernels (and the int64 words seen as int16 in ``_uniforms`` do not trace through AOT autograd)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def keep_mask(shape: tuple[int, ...], p: float) -> torch.Tensor:
    """0/1 uint8: 1 where an element is kept (the complement of ``drop_mask`` for the same draws)."""
    return _keep_from_uniforms(_uniforms(math.prod(shape)).view(shape), _signed_threshold(p)).to(torch.uint8)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` with the cheap mask on CPU."""
    if not training or p == 0.0:
        return x
    if not _eager_on_cpu(x):
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
        keep = torch.empty(B * H, Nq, Nk, dtype=torch.uint8)
        threshold = _signed_threshold(p)
        out = q.new_empty(B * H, Nq, Dv)
        k_t = k.transpose(1, 2)
        probs = []  # the softmax of each block, kept for backward
        for maps, rows in _blocks(B * H, Nq, Nk):
            attn = torch.softmax(torch.bmm(q[maps, rows], k_t[maps]), dim=-1)
            probs.append(attn)
            # the mask is drawn block by block, written while in cache rather than streamed in from a whole-layer draw
            block_keep = _keep_from_uniforms(_uniforms(attn.numel()).view(attn.shape), threshold)
            keep[maps, rows] = block_keep
            torch.bmm(block_keep.to(attn.dtype).mul_(attn), v[maps], out=out[maps, rows])
        out.mul_(keep_scale(p))
        ctx.save_for_backward(q, k, v, keep)
        ctx.probs = probs
        ctx.p = p
        return out.view(B, H, Nq, Dv)  # [BH, N, Dv] -> [B, H, N, Dv]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, keep = ctx.saved_tensors
        B, H, Nq, Dv = grad_out.shape
        grad_out = grad_out.reshape(B * H, Nq, Dv) * keep_scale(ctx.p)  # [B, H, N, Dv] -> [BH, N, Dv]
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        v_t = v.transpose(1, 2)
        for attn, (maps, rows) in zip(ctx.probs, _blocks(B * H, Nq, k.shape[1])):
            mask, g = keep[maps, rows].to(attn.dtype), grad_out[maps, rows]  # converted once, used twice
            grad_attn = torch.bmm(g, v_t[maps]).mul_(mask)
            grad_scores = torch._softmax_backward_data(grad_attn, attn, -1, attn.dtype)
            grad_v[maps].baddbmm_(torch.mul(attn, mask).transpose(1, 2), g)
            torch.bmm(grad_scores, k[maps], out=grad_q[maps, rows])
            grad_k[maps].baddbmm_(grad_scores.transpose(1, 2), q[maps, rows])
        grad_q.mul_(q.shape[-1] ** -0.5)
        # [BH, N, d] -> [B, H, N, d]
        return grad_q.view(B, H, Nq, -1), grad_k.view(B, H, *k.shape[1:]), grad_v.view(B, H, *v.shape[1:]), None


# At or below this many keys, three plain kernels (product, softmax, product) beat PyTorch's fused CPU attention,
# whose per-block overhead dominates there: 1.7-1.9x forward and backward at 16 and 64 tokens of 16-24 dims,
# MobileViT's smaller stages (benchmarks/RESULTS.md). Above it the fused kernel wins or ties.
_FEW_KEYS = 64


def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) with dropout ``p`` on the attention weights, times v; [B, H, N, d] in and out."""
    if p == 0.0 and k.shape[-2] <= _FEW_KEYS and _eager_on_cpu(q):
        attn = torch.softmax(torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)), dim=-1)  # [B, H, Nq, Nk]
        return torch.matmul(attn, v)
    if p == 0.0 or not _eager_on_cpu(q) or drop_threshold(p) >= _LEVELS:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    return _DropoutAttention.apply(q, k, v, p)
