"""The epoch's order and each process's share of it."""

import torch

from vitkit.data.sampling import epoch_order, shard_batches


def test_ranks_take_disjoint_equal_shares_of_one_order():
    order = epoch_order(torch.arange(1001) % 7, torch.Generator().manual_seed(3))
    for world in (1, 2, 3, 4):
        shares = [torch.cat(shard_batches(order, 64, rank, world)) for rank in range(world)]
        assert len({len(s) for s in shares}) == 1  # the same number of images, so the same number of steps
        assert len({len(shard_batches(order, 64, rank, world)) for rank in range(world)}) == 1
        seen = torch.cat(shares)
        assert len(seen.unique()) == len(seen) == 1001 // world * world  # disjoint; only the remainder is left out


def test_the_order_is_a_function_of_the_generator_seed():
    labels = torch.arange(500) % 5
    a = epoch_order(labels, torch.Generator().manual_seed(1))
    assert torch.equal(a, epoch_order(labels, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, epoch_order(labels, torch.Generator().manual_seed(2)))


def test_a_last_batch_of_one_image_joins_the_one_before():
    batches = shard_batches(torch.arange(17), 8)
    assert [len(b) for b in batches] == [8, 9] and torch.equal(torch.cat(batches), torch.arange(17))
    assert [len(b) for b in shard_batches(torch.arange(18), 8)] == [8, 8, 2]
