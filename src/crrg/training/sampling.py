"""Deterministic, sharded, resumable data loading.

Resuming after a kill must give the same weights as never stopping, so the resumed run has to see
exactly the batches the uninterrupted run would have seen, in the same order, on every rank. Lightning
restores the step counters and optimizer state; it saves a train loader's position only when the
loader is *stateful* (``state_dict`` / ``load_state_dict``). :class:`ResumableLoader` is such a loader:

- the order of an epoch is a pure function of ``(seed, epoch)`` (:class:`ShardSampler`), the same
  shard-by-rank scheme as ``DistributedSampler``, so no global RNG is consumed;
- it counts the batches handed out in the current epoch (Lightning fetches sized loaders without
  prefetching, so that is the number trained on when a checkpoint is written) and, after
  ``load_state_dict``, skips that many batches by index, without loading their samples;
- every sample is loaded under a seed derived from ``(seed, epoch, index)`` (:class:`SeededDataset`):
  augmentation and other random draws while loading are then the same in a resumed run, with or
  without loader workers, whatever was drawn before.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from crrg.training.seeding import seeded, step_seed

log = logging.getLogger(__name__)
SAMPLE_SEED_RANK = -1  # sample seeds do not depend on the rank: an index is the same sample everywhere


@dataclass(frozen=True)
class LoaderOptions:
    """What the engine adds to every task's loader so a GPU is not left waiting (from the trainer
    section, see :func:`crrg.training.engine.loader_options`): pinned host memory for fast, asynchronous
    copies to the GPU; workers kept alive across epochs and validations instead of re-started (and the
    dataset re-pickled) each time; how many batches each worker loads ahead. A task's loader keeps
    whatever it set itself; worker settings apply only when it has workers."""

    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None


class ShardSampler(Sampler[int]):
    """Indices of one rank's shard of an epoch; the permutation depends only on seed and epoch."""

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 tag_epoch: bool = False) -> None:
        self.size = size
        self.tag_epoch = tag_epoch  # yield (epoch, index) for a SeededDataset
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0  # samples of this shard to skip in the next iteration (resume)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.size // self.world_size
        return math.ceil(self.size / self.world_size)

    def shard(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        total = len(self) * self.world_size
        if total > len(order):  # pad by wrapping around, as DistributedSampler does
            order += (order * math.ceil(total / max(len(order), 1)))[: total - len(order)]
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Any]:
        start, self.start = self.start, 0
        indices = self.shard()[start:]
        if self.tag_epoch:  # the epoch travels with each index, so workers never see a stale one
            return iter([(self.epoch, i) for i in indices])
        return iter(indices)


class SeededDataset(Dataset):
    """Loads sample ``index`` of epoch ``epoch`` (keys from a tagging :class:`ShardSampler`) with
    Python, NumPy and torch seeded from ``(seed, epoch, index)``, so a sample's augmentation does not
    depend on what was drawn before it (in a resumed run, the loader's start-up and the earlier
    samples differ)."""

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with seeded(step_seed(self.seed, epoch, index, SAMPLE_SEED_RANK)):
            return self.dataset[index]


class ResumableLoader:
    """A stateful wrapper around a task's DataLoader with a :class:`ShardSampler` in place of its sampler."""

    def __init__(self, loader: DataLoader, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool | None = None,
                 options: LoaderOptions = LoaderOptions()) -> None:
        if shuffle is None:
            shuffle = isinstance(loader.sampler, RandomSampler)
        if loader.batch_size is None:
            raise ValueError("ResumableLoader needs a DataLoader built with batch_size (not a batch_sampler)")
        self.batch_size = loader.batch_size
        self.sampler = ShardSampler(len(loader.dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                                    drop_last=False, tag_epoch=True)
        self.seed = seed
        self._dataset = loader.dataset
        self._generator = torch.Generator()  # worker seeds come from here, never from the global RNG
        self.loader = _rebuild(loader, self.sampler, self._generator, dataset=SeededDataset(loader.dataset, seed), options=options)
        self._consumed = 0
        self._skip = 0

    @property
    def dataset(self) -> Any:
        return self._dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        self.sampler.start = skip * self.batch_size
        self._consumed = skip
        # Worker seeds are a function of (seed, epoch, position) so a resumed epoch matches too.
        self._generator.manual_seed(self.seed * 1_000_003 + self.sampler.epoch * 1009 + skip)
        for batch in self.loader:
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self._skip = int(state["batches"])
        if self._skip >= len(self):  # the epoch had ended: the next iteration is a new epoch
            self._skip = 0
        log.info("resuming data at epoch %d after %d batches", state["epoch"], self._skip)


def _rebuild(loader: DataLoader, sampler: Sampler, generator: torch.Generator | None = None, dataset: Any = None,
             options: LoaderOptions = LoaderOptions()) -> DataLoader:
    workers = loader.num_workers > 0
    return DataLoader(
        loader.dataset if dataset is None else dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory or options.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if loader.num_workers else None,
        generator=generator,
        prefetch_factor=(options.prefetch_factor or loader.prefetch_factor) if workers else None,
        persistent_workers=workers and (loader.persistent_workers or options.persistent_workers),
    )


def _is_plain(loader: Any) -> bool:
    return (
        isinstance(loader, DataLoader)
        and loader.batch_size is not None
        and not isinstance(loader.dataset, torch.utils.data.IterableDataset)
    )


def make_sharded(loader: Any, *, rank: int, world_size: int, options: LoaderOptions = LoaderOptions()) -> Any:
    """An evaluation loader that gives each rank its own, unshuffled part of the data (DDP)."""
    if _is_plain(loader):
        # Own generator: starting an evaluation loader must not draw from the global RNG.
        sampler = ShardSampler(len(loader.dataset), shuffle=False, seed=0, rank=rank, world_size=world_size)
        return _rebuild(loader, sampler, torch.Generator().manual_seed(0), options=options)
    if world_size == 1:
        return loader
    if isinstance(loader, (list, tuple)):
        return type(loader)(make_sharded(item, rank=rank, world_size=world_size, options=options) for item in loader)
    if isinstance(loader, dict):
        return {key: make_sharded(item, rank=rank, world_size=world_size, options=options) for key, item in loader.items()}
    log.warning("evaluation loader %s is not a plain DataLoader; every rank evaluates all of it", type(loader).__name__)
    return loader


def make_resumable(loader: Any, *, seed: int, rank: int, world_size: int, shuffle: bool | None = None,
                   options: LoaderOptions = LoaderOptions()) -> Any:
    """Wrap a plain DataLoader; anything else (custom batch samplers, iterables) is returned as is."""
    if _is_plain(loader):
        return ResumableLoader(loader, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle, options=options)
    if isinstance(loader, (list, tuple)):
        return type(loader)(make_resumable(item, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle, options=options)
                            for item in loader)
    if isinstance(loader, dict):
        return {key: make_resumable(item, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle, options=options)
                for key, item in loader.items()}
    log.warning("train loader %s is not a plain DataLoader; a resumed run restarts its epoch from the beginning", type(loader).__name__)
    return loader
