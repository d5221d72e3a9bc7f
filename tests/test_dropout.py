"""vitkit's CPU dropout: the right probability, the right scale, independent masks, and attention dropout equal
to the textbook formula with the same mask; and the training process's allocator setting."""

import math
import resource
import sys

import pytest
import torch
import torch.nn.functional as F

from vitkit.models import dropout as vd
from vitkit.models.dropout import Dropout, drop_mask, drop_threshold, dropout_attention, keep_scale


def within(observed: float, expected: float, sd: float, sigmas: float = 5.0) -> bool:
    return abs(observed - expected) <= sigmas * sd


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_dropout_keeps_the_right_fraction_and_scales_to_the_same_expectation(p):
    torch.manual_seed(0)
    n = 1 << 22
    y = Dropout(p).train()(torch.ones(n))
    kept = y != 0
    q = drop_threshold(p) / 2**16  # the probability actually used: p rounded to 16 bits
    assert abs(q - p) <= 2**-17
    sd = math.sqrt(q * (1 - q) / n)
    assert within(1 - kept.float().mean().item(), q, sd)
    assert torch.all(y[kept] == keep_scale(p))  # every kept value is x / (1 - q) exactly
    assert keep_scale(p) == pytest.approx(1 / (1 - q), rel=1e-12)
    assert within(y.double().mean().item(), 1.0, math.sqrt(q / (1 - q) / n))  # E[y] = x
    # the four 16-bit lanes of each 64-bit draw: each drops with probability q on its own
    for lane in range(4):
        assert within(1 - kept[lane::4].float().mean().item(), q, sd * 2)


def test_the_generator_is_splitmix64_as_published():
    """The reference splitmix64.c (Vigna) from seed 1234567 starts with these five outputs; int64 holds the same bits."""
    published = [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]
    words = vd.splitmix64(1234567, 5).tolist()
    assert [w % 2**64 for w in words] == published
    # past the cached counters, and from a negative seed, it still matches the reference
    n = vd._STEPS_CACHED + 3
    tail = vd.splitmix64(-5, n)[-3:].tolist()
    assert [w % 2**64 for w in tail] == splitmix64_by_definition(2**64 - 5, n)[-3:]


def splitmix64_by_definition(seed: int, n: int) -> list[int]:
    m, state, out = 2**64 - 1, seed, []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & m
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        out.append(z ^ (z >> 31))
    return out


@pytest.mark.parametrize("p", [0.0, 2**-17, 2**-16, 0.1, 0.5, 1 - 2**-16])
def test_the_keep_mask_is_every_uniform_at_or_above_the_threshold(p):
    every_value = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    threshold = vd._signed_threshold(p)
    keep = vd._keep_from_uniforms(every_value, threshold)
    assert keep.dtype == torch.int16 and torch.equal(keep.bool(), every_value >= threshold)
    assert (keep == 0).sum().item() == drop_threshold(p)  # exactly the levels below the threshold drop


def test_dropout_masks_are_independent_between_neighbours_and_rows():
    torch.manual_seed(1)
    m = drop_mask((512, 4096), 0.3).float()
    n = m.numel()
    centred = m - m.mean()
    for shift in (1, 2, 3, 4, 5):  # inside and across 64-bit words
        corr = (centred[:, shift:] * centred[:, :-shift]).mean() / centred.pow(2).mean()
        assert abs(corr.item()) < 5 / math.sqrt(n)
    # per-row counts are binomial: their variance is n p (1 - p), not more (no shared structure between rows)
    counts = m.sum(1)
    expected_var = 4096 * 0.3 * 0.7
    assert counts.var().item() == pytest.approx(expected_var, rel=0.25)


def test_dropout_is_reproducible_from_the_seed_and_differs_across_seeds():
    x = torch.randn(1000)
    layer = Dropout(0.2).train()
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    b = layer(x)
    torch.manual_seed(4)
    c = layer(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(layer.eval()(x), x)  # identity in eval mode


def test_dropout_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(5000, requires_grad=True)
    y = Dropout(0.25).train()(x)
    y.backward(torch.ones_like(y))
    kept = y != 0
    assert torch.all(x.grad[kept] == keep_scale(0.25)) and torch.all(x.grad[~kept] == 0)


def attention_by_formula(q, k, v, dropped, p):
    attn = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
    return attn.masked_fill(dropped, 0) * keep_scale(p) @ v


@pytest.mark.parametrize("block", [1 << 20, 4096, 97])  # one block per map, several rows per block, odd cuts
@pytest.mark.parametrize("shape", [(2, 2, 200, 16, 16), (3, 4, 37, 8, 12)])
def test_dropout_attention_equals_the_formula_with_the_mask_it_drew(monkeypatch, block, shape):
    monkeypatch.setattr(vd, "_BLOCK", block)
    B, H, N, D, Dv = shape
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, N, d, generator=g, dtype=torch.float64, requires_grad=True) for d in (D, D, Dv))
    grad = torch.randn(B, H, N, Dv, generator=g, dtype=torch.float64)
    out = dropout_attention(q, k, v, 0.1)
    kept = out.grad_fn.saved_tensors[3].view(B, H, N, N)  # the mask the function drew (0/1 bytes)
    assert set(kept.unique().tolist()) <= {0, 1} and 0.05 < 1 - kept.float().mean() < 0.15
    ours = torch.autograd.grad(out, (q, k, v), grad)
    ref = attention_by_formula(q, k, v, kept == 0, 0.1)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(ours, torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_attention_dropout_keeps_the_right_fraction_of_weights():
    # q = k = 0 gives every weight 1/N; v = the identity reads each weight out: out * N / scale is the keep mask
    B, H, N, p = 2, 2, 512, 0.1
    q = k = torch.zeros(B, H, N, 8)
    v = torch.eye(N).expand(B, H, N, N)
    torch.manual_seed(0)
    kept = dropout_attention(q, k, v, p) * N / keep_scale(p)
    assert torch.allclose(kept, kept.round(), atol=1e-4) and set(kept.round().unique().tolist()) <= {0.0, 1.0}
    q16 = drop_threshold(p) / 2**16
    assert within(1 - kept.mean().item(), q16, math.sqrt(q16 * (1 - q16) / kept.numel()))


def test_attention_dropout_is_reproducible_from_the_seed_and_differs_across_seeds():
    q, k, v = (torch.randn(2, 2, 300, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(dropout_attention(q, k, v, 0.2))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("tokens", [16, 64, 65, 300])  # the plain products up to 64 keys, PyTorch's kernel above
def test_without_dropout_attention_is_pytorchs(tokens):
    q, k, v = (torch.randn(2, 3, tokens, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 3, tokens, 8, dtype=torch.float64)
    ours = dropout_attention(q, k, v, 0.0)
    reference = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), grad), torch.autograd.grad(reference, (q, k, v), grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # class-token attention: one query over every key
    torch.testing.assert_close(dropout_attention(q[:, :, :1], k, v, 0.0), reference[:, :, :1], rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_keeps_freed_memory_instead_of_faulting_it_in_again():
    """After keep_freed_memory (vitkit train calls it on CPU), a large tensor freed and allocated again reuses
    the same pages: a fraction of the page faults that a fresh mmap of 64 MiB costs (16,384 pages)."""
    from vitkit.training.memory import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc")

    def faults_for_fresh_tensor() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(16 << 20)  # 64 MiB, written in full, then freed
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_for_fresh_tensor()  # the first one grows the heap
    assert min(faults_for_fresh_tensor() for _ in range(3)) < 16384 // 10


def test_dropout_compiles_with_torch_compile_and_keeps_its_rate():
    """torch.compile takes PyTorch's own dropout (inductor makes the mask in its kernels); the cheap masks'
    int64 words viewed as int16 once broke AOT autograd ("setStorage ... out of bounds") in every MobileViT."""

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = Dropout(0.25)

        def forward(self, x):  # x: [B, H, N, d]
            return self.drop(dropout_attention(x, x, x, 0.1))

    torch.manual_seed(0)
    block = torch.compile(Block().train(), backend="aot_eager")  # AOT autograd is where the view broke
    x = torch.randn(2, 2, 64, 8, requires_grad=True)
    y = block(x)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    ones = block(torch.ones(4, 2, 64, 8))  # attention of equal rows is a mean: each output 1 / (1 - 0.25) or 0
    kept = (ones != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.02
