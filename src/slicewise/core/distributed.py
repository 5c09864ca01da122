"""Scale-out on torchrun: each rank predicts its own share of the inputs, written exactly once.

``torchrun --standalone --nproc-per-node N -m slicewise predict DIR --out OUT`` (or a multi-node
torchrun) starts N processes with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; ``Run`` joins them in a
process group (NCCL when the ranks use GPUs, gloo on CPUs), gives rank r the inputs r, r+N, r+2N, …
of the sorted list, so every input belongs to exactly one rank, and sums per-rank figures (Dice
counts) for rank 0 to print. Without torchrun it is one rank holding everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world: int = 1
    device: str = "auto"  # the device this rank predicts on ("cuda:1" for local rank 1 on a GPU node)

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every ``world``-th, starting at ``rank``."""
        return list(items[self.rank :: self.world])

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over all ranks (every rank gets the sums)."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch.distributed as dist

        on = torch.device(self.device) if dist.get_backend() == "nccl" else torch.device("cpu")
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=on)
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()


def _launched() -> bool:
    """Started by torchrun (even as one process, so one GPU still forms an NCCL group), or by another
    launcher that sets WORLD_SIZE > 1 and the rendezvous variables."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def run(device: str = "auto") -> Iterator[Run]:
    """Join torchrun's process group when launched by it (else a single ``Run``); leave it when done.

    device: as for ``load_model``; with GPUs, each rank takes the GPU of its local rank.
    """
    if not _launched():
        yield Run(device=device)
        return
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    gpu = device != "cpu" and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(local % torch.cuda.device_count())
        device = f"cuda:{torch.cuda.current_device()}"
    dist.init_process_group("nccl" if gpu and dist.is_nccl_available() else "gloo")
    try:
        yield Run(rank=rank, world=world, device=device)
        dist.barrier()  # rank 0 returns only when every rank has written its share
    finally:
        dist.destroy_process_group()
