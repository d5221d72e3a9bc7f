"""The epoch's order and each process's share of it."""

import pytest
import torch

from vitkit.data.sampling import epoch_order, expected_steps, make_divisible, multiscale_batches, multiscale_plan
from vitkit.data.sampling import shard_batches


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


def test_the_multiscale_plan_is_ml_cvnets_for_mobilevit():
    # ml-cvnets' MobileViT ImageNet config: base 256, crops 160-320, 5 scales, multiples of 32
    plan = multiscale_plan(256, 128, 32)
    assert [side for side, _ in plan] == [160, 192, 256, 288, 320]
    for side, batch in plan:  # as many pixels per batch as 128 images at 256 px, to rounding
        assert abs(batch * side * side / (128 * 256 * 256) - 1) < 0.01
    assert (make_divisible(200, 32), make_divisible(240, 32), make_divisible(40, 32)) == (192, 256, 64)


def test_multiscale_ranks_train_each_step_at_one_side_on_disjoint_equal_shares():
    plan = multiscale_plan(64, 32, 8)
    order = epoch_order(torch.arange(2003) % 10, torch.Generator().manual_seed(5))
    for world in (1, 2, 3):
        runs = [multiscale_batches(order, plan, torch.Generator().manual_seed(9), rank, world) for rank in range(world)]
        assert len({len(batches) for batches, _ in runs}) == 1  # the same number of steps on every rank
        assert all(sides == runs[0][1] for _, sides in runs)  # and the same side at each step
        for step in range(len(runs[0][0])):  # each step's batch has its side's size (the last may be short)
            sizes = {len(batches[step]) for batches, _ in runs}
            assert len(sizes) == 1 and sizes.pop() <= dict(plan)[runs[0][1][step]] + 1
        seen = torch.cat([torch.cat(batches) for batches, _ in runs])
        assert len(seen.unique()) == len(seen) == 2003 // world * world  # each image once
        assert abs(len(runs[0][0]) - expected_steps(2003, plan, world)) <= 0.25 * expected_steps(2003, plan, world)
    assert len(set(runs[0][1])) > 1  # several sides are drawn
    again = multiscale_batches(order, plan, torch.Generator().manual_seed(9))
    assert again[1] == multiscale_batches(order, plan, torch.Generator().manual_seed(9))[1]  # a function of the seed
    assert again[1] != multiscale_batches(order, plan, torch.Generator().manual_seed(10))[1]


def _evaluate_on_rank(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from vitkit.inference import evaluate_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        meter = evaluate_model(*_eval_case(), torch.device("cpu"), batch_size=4)
        if rank == 0:
            torch.save({"confusion": meter.confusion, "loss": meter.loss, "top5": meter.top5}, out)
    finally:
        dist.destroy_process_group()


def _eval_case():
    from vitkit.data import ImageSet
    from vitkit.models import create_model

    torch.manual_seed(0)
    model = create_model("mobilevit_xxs", num_classes=3, image_size=32).eval()
    images = torch.randint(0, 256, (11, 3, 32, 32), dtype=torch.uint8)  # 11: no equal split over 2 ranks
    return model, ImageSet(images, torch.arange(11) % 3)


def test_two_ranks_evaluate_every_image_exactly_once(tmp_path):
    from vitkit.inference import evaluate_model

    torch.multiprocessing.spawn(
        _evaluate_on_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "out.pt")), nprocs=2, join=True
    )
    two = torch.load(tmp_path / "out.pt", weights_only=True)
    one = evaluate_model(*_eval_case(), torch.device("cpu"), batch_size=4)
    assert int(two["confusion"].sum()) == 11  # no image missed, none padded in twice
    assert torch.equal(two["confusion"], one.confusion)
    assert two["loss"] == pytest.approx(one.loss, rel=1e-5) and two["top5"] == one.top5


def test_each_machine_draws_only_from_its_own_shards_in_equal_shares():
    from vitkit.data.sampling import node_order

    shard_of = torch.arange(1000) // 37  # 28 shards of 37 images (the last one shorter)
    nodes, processes = 3, 2
    shares, states = {}, []
    for node in range(nodes):
        generator = torch.Generator().manual_seed(4)
        order = node_order(shard_of, generator, nodes, node, processes)
        states.append(generator.get_state())
        assert bool((shard_of[order] % nodes == node).all())  # only shards node, node + 3, ...
        for local in range(processes):
            shares[node, local] = torch.cat(shard_batches(order, 16, local, processes))
    assert all(torch.equal(state, states[0]) for state in states)  # later draws (multi-scale sides) agree
    assert len({len(s) for s in shares.values()}) == 1  # every process of every machine: the same number of images
    assert len({len(shard_batches(torch.arange(len(s)), 16)) for s in shares.values()}) == 1  # so the same steps
    seen = torch.cat(list(shares.values()))
    assert len(seen.unique()) == len(seen) >= 1000 - 3 * 37  # disjoint; at most the largest surplus left out
