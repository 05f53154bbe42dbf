"""The resumable, sharded sampler: same batches after a restart, disjoint shards across ranks."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from crrg.training.sampling import ResumableLoader, ShardSampler, make_sharded


def dataset(n: int = 21) -> TensorDataset:
    return TensorDataset(torch.arange(n))


def batches(loader) -> list[list[int]]:
    return [b[0].tolist() for b in loader]


def test_order_depends_only_on_seed_and_epoch():
    a = ShardSampler(21, shuffle=True, seed=3)
    b = ShardSampler(21, shuffle=True, seed=3)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(99)  # the global RNG must not matter
    assert list(b) == first and sorted(first) == list(range(21))
    b.set_epoch(1)
    assert list(b) != first


def test_shards_cover_the_data_without_overlap():
    shards = [list(ShardSampler(21, shuffle=True, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 11  # padded like DistributedSampler
    assert set(shards[0]) | set(shards[1]) == set(range(21))


def test_resumed_loader_continues_where_the_state_was_saved():
    plain = DataLoader(dataset(), batch_size=4, shuffle=True)
    full = ResumableLoader(plain, seed=5)
    full.sampler.set_epoch(2)
    expected = batches(full)

    first = ResumableLoader(plain, seed=5)
    first.sampler.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator)[0].tolist() for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2}

    resumed = ResumableLoader(plain, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == len(full)  # Lightning counts the epoch in full
    assert seen + batches(resumed) == expected
    assert batches(resumed) == expected  # the skip applies once; the next pass is a whole epoch


def test_unshuffled_loader_keeps_order_and_eval_sharding():
    loader = DataLoader(dataset(8), batch_size=3)
    assert batches(ResumableLoader(loader, seed=0)) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    sharded = make_sharded(loader, rank=1, world_size=2)
    assert batches(sharded) == [[1, 3, 5], [7]]
    assert batches(make_sharded(loader, rank=0, world_size=1)) == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_loader_options_reach_the_rebuilt_loaders():
    """pin_memory / persistent_workers / prefetch_factor from the trainer section are set on the loaders
    the engine builds; worker settings only where the task's loader has workers."""
    from crrg.training.sampling import LoaderOptions, make_resumable

    options = LoaderOptions(pin_memory=True, persistent_workers=True, prefetch_factor=4)
    with_workers = make_resumable(DataLoader(dataset(), batch_size=4, shuffle=True, num_workers=1), seed=0, rank=0,
                                  world_size=1, options=options).loader
    assert with_workers.persistent_workers and with_workers.prefetch_factor == 4 and with_workers.pin_memory
    val = make_sharded(DataLoader(dataset(), batch_size=4, num_workers=1), rank=0, world_size=1, options=options)
    assert val.persistent_workers and val.prefetch_factor == 4 and val.pin_memory
    plain = make_resumable(DataLoader(dataset(), batch_size=4, num_workers=0), seed=0, rank=0, world_size=1,
                           options=options).loader
    assert not plain.persistent_workers and plain.prefetch_factor is None  # no workers: nothing to keep alive
    default = make_resumable(DataLoader(dataset(), batch_size=4, num_workers=1), seed=0, rank=0, world_size=1).loader
    assert not default.persistent_workers and not default.pin_memory and default.prefetch_factor == 2


def test_engine_pins_memory_only_for_cuda_unless_told():
    from types import SimpleNamespace

    from crrg.training.config import TrainerConfig, load_config
    from crrg.training.engine import _wrap_dataloaders, loader_options
    from crrg.training.toy import ToyTask

    cfg = TrainerConfig.from_config(load_config(None, ["trainer.max_steps=1"]))
    assert loader_options(cfg, on_cuda=True).pin_memory and not loader_options(cfg, on_cuda=False).pin_memory
    assert loader_options(cfg, on_cuda=True).persistent_workers  # the default
    off = TrainerConfig.from_config(load_config(None, ["trainer.max_steps=1", "trainer.pin_memory=false",
                                                       "trainer.persistent_workers=false"]))
    assert not loader_options(off, on_cuda=True).pin_memory and not loader_options(off, on_cuda=True).persistent_workers

    config = load_config(None, ["trainer.max_steps=1", "trainer.num_workers=2", "trainer.prefetch_factor=3"])
    data = ToyTask().build_datamodule(config)
    data.setup()
    _wrap_dataloaders(data, TrainerConfig.from_config(config))
    data.trainer = SimpleNamespace(global_rank=0, world_size=1, strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    train, val = data.train_dataloader().loader, data.val_dataloader()
    for loader in (train, val):
        assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 3 and loader.pin_memory
