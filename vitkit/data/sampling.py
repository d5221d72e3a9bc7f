"""Which images an epoch visits, in which order, and which of them each process takes: pure functions of the
epoch's generator (seeded from the run's seed and the epoch), so every process agrees and a resumed run draws
what an uninterrupted one would have."""

from __future__ import annotations

import torch


def epoch_order(labels: torch.Tensor, generator: torch.Generator, class_balanced: bool = False) -> torch.Tensor:
    """One epoch's sample indices: a permutation, or (``class_balanced``) as many draws with replacement, each
    class equally likely and the images within a class too."""
    if not class_balanced:
        return torch.randperm(len(labels), generator=generator)
    counts = torch.bincount(labels)
    weights = 1.0 / counts[labels].double()
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


def node_order(
    shard_of: torch.Tensor, generator: torch.Generator, nodes: int, node: int, processes: int
) -> torch.Tensor:
    """One epoch's order for machine ``node`` of ``nodes`` when each holds only its own pack shards (shard s on
    node s % nodes): a permutation of that node's images, cut to the length every node can fill, a multiple of
    its ``processes``, so every process of every node takes the same number of steps. Every node's permutation
    is drawn from ``generator`` in turn, so all processes leave it in the same state."""
    members = [torch.nonzero(shard_of % nodes == k).flatten() for k in range(nodes)]
    orders = [m[torch.randperm(len(m), generator=generator)] for m in members]
    return orders[node][: node_share(shard_of, nodes, processes) * processes]


def node_share(shard_of: torch.Tensor, nodes: int, processes: int) -> int:
    """Images each of a machine's ``processes`` takes per epoch under ``node_order``: the smallest machine's."""
    return min(int((shard_of % nodes == k).sum()) for k in range(nodes)) // processes


def shard_batches(order: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """Batches of indices for process ``rank``: every world_size-th index of the shared order, in equal shards
    (the order's remainder is dropped) so that every process takes the same number of steps. A last batch of a
    single image joins the one before: BatchNorm cannot train on one image."""
    n = len(order)
    mine = order[: n // world_size * world_size][rank::world_size]
    batches = list(mine.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def make_divisible(value: float, divisor: int) -> int:
    """``value`` to the nearest multiple of ``divisor``, never below it nor more than 10% under ``value``
    (the rounding MobileNetV2 and ml-cvnets use for widths and crop sizes)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def multiscale_plan(
    size: int, batch_size: int, divisor: int, scales: int = 5, low: float = 0.625, high: float = 1.25
) -> list[tuple[int, int]]:
    """(side, batch size) pairs of ml-cvnets' variable batch sampler (Mehta and Rastegari 2022, section 3.3;
    ml-cvnets ``image_batch_pairs``): ``scales`` sides evenly spaced from ``low`` to ``high`` times ``size``
    (160-320 px around MobileViT's 256), plus ``size`` itself, each rounded to a multiple of ``divisor``; each
    side's batch holds as many pixels as ``batch_size`` images at ``size``."""
    step = (high - low) / (scales - 1)
    sides = {make_divisible(size * (low + i * step), divisor) for i in range(scales)} | {size}
    return [(side, max(1, round(batch_size * size * size / (side * side)))) for side in sorted(sides)]


def multiscale_batches(
    order: torch.Tensor, plan: list[tuple[int, int]], generator: torch.Generator, rank: int = 0, world_size: int = 1
) -> tuple[list[torch.Tensor], list[int]]:
    """``shard_batches`` with a side per batch: each step draws one (side, batch size) pair of ``plan``,
    uniformly, from ``generator`` (the same draws on every process, so all train the step at the same side)
    and takes the next batch size x world_size images of the shared order, every world_size-th for ``rank``.
    The number of steps varies a little from epoch to epoch, as in ml-cvnets."""
    n = len(order) // world_size * world_size
    batches, sides, start = [], [], 0
    while start < n:
        side, batch = plan[int(torch.randint(len(plan), (1,), generator=generator))]
        batches.append(order[start : min(n, start + batch * world_size)][rank::world_size])
        sides.append(side)
        start += batch * world_size
    if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on one image
        batches[-2:] = [torch.cat(batches[-2:])]
        sides.pop()
    return batches, sides


def expected_steps(n: int, plan: list[tuple[int, int]], world_size: int = 1) -> int:
    """The mean number of ``multiscale_batches`` steps an epoch of ``n`` images takes (for the schedule)."""
    mean_batch = sum(batch for _, batch in plan) / len(plan)
    return max(1, round(n // world_size / mean_batch))
