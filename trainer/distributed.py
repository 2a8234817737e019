"""PyTorch DDP for ``turnwise train`` under ``torchrun``: nothing home-made beyond picking the backend.

``torchrun --nproc-per-node N turnwise train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; the
trainer then joins the process group (gloo on CPU, NCCL on GPU), wraps the student in
``DistributedDataParallel`` (gradients averaged across ranks every step), gives each rank its shard of
the dialogues, and lets rank 0 alone write checkpoints and logs. Decisions that must agree across
ranks (bf16 or not, the validation score that drives early stopping) are made on rank 0 and
broadcast. Without ``torchrun`` this is a world of one and every call is a no-op.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.broadcast(t, src=0)
        return float(t.item())

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def join(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (a world of one without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    backend = "nccl" if device.type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, backend=backend)


def rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank on its own GPU (``cuda:LOCAL_RANK``); CPU ranks share the CPU."""
    return torch.device("cuda", world.local_rank) if world.distributed and device.type == "cuda" else device


def wrap(model: nn.Module, world: World) -> nn.Module:
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.local_rank] if world.backend == "nccl" else None
    return DistributedDataParallel(model, device_ids=ids)


def weights_digest(model: nn.Module) -> str:
    """sha256 over the state dict (names and bytes, in order): equal on ranks that hold equal weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def leave(world: World) -> None:
    """Every rank reaches the end before the group is torn down (a rank that destroys it while another
    still writes can leave the pair hanging at exit), and no Python object still holds gloo work when
    it is: collect them first, so the group's destructor never waits on a gloo thread that needs the GIL."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()
