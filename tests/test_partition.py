"""partition.py: which rank reads which samples of an epoch, on any number of ranks, across
interruptions inside an epoch (pure: no torch, no Ray)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artdate.core.works import derive_seed
from artdate.data.partition import (
    Shard,
    Slice,
    assign_train,
    assign_val,
    cut,
    epoch_plan,
    rank_batches,
    steps_per_epoch,
    unread,
)


def shard_list(sizes):
    return [Shard(f"s{i}.tar", n) for i, n in enumerate(sizes)]


def covered(slices):
    """(url, sample index) of every sample the slices name."""
    return [(s.url, i) for s in slices for i in range(s.start, s.stop)]


@pytest.mark.parametrize("sizes,world", [([32] * 9 + [9], 3), ([25, 25], 4), ([7], 16), ([1000, 3, 500], 64)])
def test_each_epoch_deals_every_sample_once_in_equal_runs(sizes, world):
    shards_ = shard_list(sizes)
    first = assign_train(epoch_plan(shards_, epoch=0, seed=0), world, world)
    assert len(first) == world
    flat = [sample for rank in first for sample in covered(rank)]
    assert sorted(flat) == sorted((s.url, i) for s in shards_ for i in range(s.samples))  # covering, disjoint
    loads = [sum(s.samples for s in rank) for rank in first]
    assert max(loads) - min(loads) <= 1  # balanced by sample, whatever the shard sizes
    assert assign_train(epoch_plan(shards_, epoch=0, seed=0), world, world) == first  # deterministic
    if len(sizes) > 2:
        assert assign_train(epoch_plan(shards_, epoch=1, seed=0), world, world) != first  # reshuffled each epoch


def test_validation_is_dealt_exactly_once_to_any_number_of_ranks():
    val = shard_list([50, 50])  # 2 validation shards, 8 ranks: every rank still evaluates 12 or 13
    ranks = assign_val(val, 8)
    assert sorted(sample for rank in ranks for sample in covered(rank)) == [(s.url, i) for s in val for i in range(50)]
    assert sorted(sum(s.samples for s in rank) for rank in ranks) == [12] * 4 + [13] * 4


def test_cut_splits_inside_shards_and_keeps_order():
    assert cut([Slice("a", 0, 10), Slice("b", 5, 9)], 3) == [
        [Slice("a", 0, 4)],
        [Slice("a", 4, 9)],
        [Slice("a", 9, 10), Slice("b", 5, 9)],
    ]


def test_seeds_differ_per_rank_worker_and_epoch_and_never_collide():
    seeds = {derive_seed(0, "train", epoch, rank) for epoch in range(20) for rank in range(64)}
    assert len(seeds) == 20 * 64  # seed*1000 + epoch*10 + rank collided from rank 10 on
    # The same on every machine and run (written down once), and different when any input differs.
    assert derive_seed(0, "train", 1, 3) == 6837060338979968206
    for other in [(1, "train", 1, 3), (0, "val", 1, 3), (0, "train", 2, 3), (0, "train", 1, 4), (0, "train", 13)]:
        assert derive_seed(*other) != 6837060338979968206, other


def test_steps_cover_the_data_once_and_refuse_too_little():
    assert steps_per_epoch(shard_list([32] * 9 + [9]), global_batch=32) == 297 // 32
    with pytest.raises(ValueError, match="too few for a global batch of 32"):
        steps_per_epoch(shard_list([5]), global_batch=32)


def test_a_global_batch_is_shared_out_evenly_and_each_rank_gets_a_run_that_feeds_its_share():
    assert rank_batches(16, 3) == [6, 5, 5]
    assert rank_batches(16, 2) == [8, 8]
    with pytest.raises(ValueError, match="cannot feed 4 workers"):
        rank_batches(3, 4)
    # 10 samples, global batch 3 over 2 ranks (2 + 1 a step): 3 steps need 6 and 3 samples; an even
    # cut (5 and 5) would starve rank 0, so the runs are cut in proportion to the shares.
    runs = assign_train([Slice("a", 0, 10)], 3, 2)
    assert runs == [[Slice("a", 0, 6)], [Slice("a", 6, 10)]]


def test_unread_leaves_what_was_not_read_as_slices():
    plan = [Slice("a", 0, 10), Slice("b", 5, 9)]
    assert unread(plan, {("a", 0), ("a", 1), ("a", 5), ("b", 8)}) == [
        Slice("a", 2, 5),
        Slice("a", 6, 10),
        Slice("b", 5, 8),
    ]
    assert unread(plan, set()) == plan
    assert unread(plan, set(covered(plan))) == []


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    global_batch=st.integers(4, 12),
    worlds=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    data=st.data(),
)
def test_an_epoch_interrupted_any_number_of_times_on_any_world_sizes_trains_each_sample_once(
    sizes, global_batch, worlds, data
):
    """What train/run.py does across checkpoints inside an epoch: each attempt cuts what is left among
    its ranks, each rank reads its run in any order (a shuffle buffer, loader workers) for some
    steps of its share, a checkpoint keeps what no rank read. The last attempt runs to the end."""
    whole = epoch_plan(shard_list(sizes), epoch=0, seed=0)
    plan, trained = whole, []
    steps_left = steps_per_epoch(shard_list(sizes), global_batch) if sum(sizes) >= global_batch else 0
    for attempt, world in enumerate(worlds):
        runs = assign_train(plan, global_batch, world)
        shares = rank_batches(global_batch, world)
        possible = min(steps_left, sum(s.samples for s in plan) // global_batch)
        last = attempt == len(worlds) - 1
        steps = possible if last else data.draw(st.integers(0, possible))
        read = set()
        for run, share in zip(runs, shares):
            samples = covered(run)
            assert len(samples) >= possible * share  # every rank can take every step of the attempt
            order = data.draw(st.permutations(samples))
            read.update(order[: steps * share])
        trained += sorted(read)
        steps_left -= steps
        plan = [piece for run in runs for piece in unread(run, read)]
    assert len(trained) == len(set(trained))  # no sample twice
    assert set(trained) <= set(covered(whole))
    # Every step of the epoch trained: all samples but the last < global_batch, as in an epoch run whole.
    assert len(trained) == sum(sizes) // global_batch * global_batch
