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
