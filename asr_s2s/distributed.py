"""Where training runs: the device, and the process group when ``torchrun`` started several processes.

The one data-parallel design: every process builds the same global batches (a function of the seed and the
epoch) and takes its share of each (:func:`shard`); the loss is normalised by the global token count, so N
processes take the same optimisation steps as one. Resuming needs nothing more than the number of global
batches of the epoch already trained, the same on every rank.

Single-process runs pay nothing: every collective below returns at once when ``world == 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun)."""
    return int(os.environ.get("RANK", 0))


def setup(device: str, threads: int | None = None, amp: str = "none") -> Dist:
    """Pick the device (``auto`` | ``cpu`` | ``cuda``), join the process group under torchrun (gloo on CPU,
    NCCL on GPU) and set the thread count."""
    rank, world, local = env_rank(), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        dev = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(f"cuda:{local}" if device == "cuda" else device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if threads:
        torch.set_num_threads(threads)
    if amp == "bf16" and dev.type == "cpu":
        # oneDNN caches a primitive per input shape (up to 1024), and length-bucketed batches come in
        # hundreds of shapes: with bf16 ones the AN4 recipe's peak RSS was 1.84 GB, 1.47 GB with 256 kept
        # (fp32: 1.11 GB; 3-minute runs). 32 kept saved more (1.23 GB) but cost the reference model 12%
        # of its speed; 256 cost nothing measurable. Read when oneDNN makes its first primitive.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    return Dist(rank, world, dev)


def shard(batches: list[list[int]], d: Dist) -> list[list[int]]:
    """This rank's share of every global batch. Batches too small to give every rank an utterance are dropped,
    identically on all ranks (``len(batches) - len(result)`` of them)."""
    if d.world == 1:
        return batches
    return [b[d.rank :: d.world] for b in batches if len(b) >= d.world]


def all_sum(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """``x`` summed over the ranks, in place."""
    if d.world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank when it is true on one (all ranks must then take the same branch)."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=d.device)  # NCCL reduces only GPU tensors
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_ranks(flag: torch.Tensor, d: Dist) -> bool:
    """True on every rank when the one-element tensor ``flag`` (any device) is non-zero on all of them."""
    flag = flag.float().reshape(1)
    if d.world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() >= 1)


def from_main(flag: bool, d: Dist) -> bool:
    """Rank 0's ``flag`` on every rank (for decisions that only rank 0 can make, e.g. by its clock or dev score)."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=d.device)
    dist.broadcast(t, 0)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
