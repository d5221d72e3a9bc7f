"""Attention dropout on a CPU, piece by piece: the mask's random bits, its threshold, and one attention layer.

    python benchmarks/dropout_attention.py [--batch-size 32] [--tokens 1024] [--rounds 5] [--threads 2]

The layer is the keras.io MobileViT's widest one (2 heads of 64 over 1,024 tokens, dropout 0.1), forward
and backward, in three forms, interleaved round by round:
  vitkit           ``vitkit.models.dropout.dropout_attention`` (blocked, SplitMix64 masks, softmax kept);
  torch dropout    ``F.scaled_dot_product_attention(dropout_p=0.1)``: PyTorch's math path on a CPU;
  torch no-drop    the same call without dropout: PyTorch's fused flash kernel, the floor dropout adds to.
The pieces are timed on one block of 2^20 attention weights. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from vitkit.models import dropout as vd
from vitkit.training.memory import keep_freed_memory


def seconds(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def pieces(repeats: int = 50) -> dict[str, float]:
    """Microseconds per block of 2^20 weights (2^18 64-bit words)."""
    words = torch.empty(1 << 18, dtype=torch.int64)
    uniforms = vd._uniforms(1 << 20)
    threshold = vd._signed_threshold(0.1)
    us = {
        "random bits: torch random_ (Mersenne Twister)": lambda: words.random_(-(2**63), None),
        "random bits: vitkit SplitMix64": lambda: vd.splitmix64(12345, 1 << 18),
        "threshold: torch.ge into bool": lambda: torch.ge(uniforms, threshold),
        "threshold: vitkit clamp and subtract": lambda: vd._keep_from_uniforms(uniforms, threshold),
        "whole mask: torch bernoulli_": lambda: torch.empty(1 << 20).bernoulli_(0.9),
    }
    return {name: seconds(fn, repeats) * 1e6 for name, fn in us.items()}


def layer_seconds(batch: int, tokens: int, rounds: int) -> dict[str, float]:
    q, k, v = (torch.randn(batch, 2, tokens, 64, requires_grad=True) for _ in range(3))
    forms = {
        "vitkit": lambda: vd.dropout_attention(q, k, v, 0.1),
        "torch dropout": lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1),
        "torch no-drop": lambda: F.scaled_dot_product_attention(q, k, v),
    }
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(rounds + 1):  # the first round warms up and is not counted
        for name, attend in forms.items():
            start = time.perf_counter()
            attend().sum().backward()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[1:]) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as vitkit train does
    torch.manual_seed(0)

    piece_us = pieces()
    print(f"one block of 2^20 weights, {args.threads} threads")
    for name, us in piece_us.items():
        print(f"  {name:<48} {us:8.0f} us")
    layer = layer_seconds(args.batch_size, args.tokens, args.rounds)
    print(f"one layer forward + backward: batch {args.batch_size}, 2 heads x {args.tokens} tokens x 64, dropout 0.1")
    for name, s in layer.items():
        print(f"  {name:<16} {s:7.3f} s   {s / layer['torch no-drop']:.2f}x the fused kernel without dropout")
    print(json.dumps({"block_us": piece_us, "layer_s": layer, "batch_size": args.batch_size, "tokens": args.tokens}))


if __name__ == "__main__":
    main()
