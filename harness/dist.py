"""Where a process stands in a distributed run (torch.distributed placement)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Dist:
    """torch.distributed placement from the usual env vars (torchrun, or submitit's
    TorchDistributedEnvironment for multi-task jobs). world == 1: plain single process.

    The global batch is ``batch_size``; rank r trains on rows r, r+world, ... of every batch
    (each rank draws the same permutation and augmentation, so no sampler state can drift).
    Only rank 0 writes records and checkpoints.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @staticmethod
    def from_env() -> "Dist":
        env = os.environ
        return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                    int(env.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, *tensors: torch.Tensor) -> None:
        if self.world > 1:
            for t in tensors:
                torch.distributed.all_reduce(t)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.world == 1 else x[self.rank::self.world]

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers on every rank. Each rank updates BN statistics from its own shard;
        DDP copies rank 0's to the others before every forward, not after the last one, so
        without this the ranks would evaluate with different statistics than rank 0 saves."""
        if self.world > 1:
            for b in model.buffers():
                torch.distributed.broadcast(b, 0)


