"""Data-parallel training over ``torch.distributed`` processes (``torchrun``), on one node or several.

Every rank holds the whole dataset and draws the same global batch (the same seeded generators); rank
``r`` of ``W`` runs its shard of that batch, ``index.tensor_split(W)[r]``, through the network. Two
ways make the step equal to the single-process step on the global batch:

- :func:`gather`: the ranks' outputs (features, logits) joined along the batch with gradients
  (``torch.distributed.nn.all_gather``), so a loss of the whole batch (MMD, CORAL, a cross-entropy
  mean) has the same value on every rank;
- :func:`average_gradients` after ``backward``: every gradient summed over ranks and divided by
  ``W``, as ``DistributedDataParallel`` does. A rank's local gradient of a gathered loss is ``W``
  times its share (all_gather's backward sums the ranks' gradients), so the average is the gradient of
  the global loss; for a loss computed on the shard alone, pass ``weight`` = shard size / global batch
  size so the sum is the gradient of the global mean.

Outside ``torchrun`` (no process group) every function is the identity of one process: rank 0 of 1.
Rank 0 writes the outputs (:func:`is_main`); :func:`main_first` lets it create a shared file that the
other ranks then read.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

__all__ = ["average_gradients", "barrier", "broadcast_parameters", "check_resume", "gather", "init_from_env",
           "is_main", "main_first", "process_group", "rank", "shard", "world_size"]


def init_from_env() -> bool:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...).

    Returns whether the run is distributed (``WORLD_SIZE`` > 1). CPU tensors go through gloo; with
    CUDA available, CUDA tensors go through NCCL and each rank's current GPU is ``LOCAL_RANK`` (where
    the node has that many). Calling it again is harmless.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "gloo"
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local < torch.cuda.device_count():
                torch.cuda.set_device(local)
            backend = "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend)
    return True


@contextlib.contextmanager
def process_group() -> Iterator[bool]:
    """:func:`init_from_env` for the block (yields whether the run is distributed); a group it joined is
    left at the end, one joined before is kept."""
    joined = not (dist.is_available() and dist.is_initialized())
    distributed = init_from_env()
    try:
        yield distributed
    finally:
        if joined and distributed and dist.is_initialized():
            dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    return dist.get_rank() if _active() else 0


def is_main() -> bool:
    """Whether this process writes the outputs (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. simulates and writes a data file); the others then run it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shard(index: torch.Tensor) -> torch.Tensor:
    """This rank's part of a global batch ``index`` (B,): ``index.tensor_split(W)[rank]`` (sizes differ by <= 1)."""
    return index.tensor_split(world_size())[rank()] if _active() else index


def gather(local: torch.Tensor) -> torch.Tensor:
    """The ranks' ``local`` (B_r, ...) joined in rank order along dim 0, (sum B_r, ...), with gradients.

    Shards may differ in size (by :func:`shard`); they are padded to the largest for the collective and
    cut back after it. A loss that adds a term of the gathered batch to terms of the shard alone must
    scale the shard's terms by (shard size / global batch size) x W and take the plain
    :func:`average_gradients`: the gathered term's backward already sums every rank's gradient.
    """
    if not _active():
        return local
    sizes = torch.zeros(world_size(), dtype=torch.int64, device=local.device)
    sizes[rank()] = local.shape[0]
    dist.all_reduce(sizes)
    sizes = sizes.tolist()
    most = max(sizes)
    padded = local
    if local.shape[0] < most:
        padded = torch.cat([local, local.new_zeros((most - local.shape[0], *local.shape[1:]))])
    from torch.distributed import nn as dist_nn

    with warnings.catch_warnings():  # torch >= 2.13 points to its private _functional_collectives instead
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_nn.all_gather(padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def check_resume(done: int, folder, *, owner: str, device: torch.device | str = "cpu") -> None:
    """Raise on every rank unless every rank resumes after the same ``done`` epochs (they all read
    ``folder``'s checkpoints: several nodes need a shared filesystem); ``owner`` starts the message."""
    found = gather(torch.tensor([done], device=device))
    if bool((found != done).any()):
        raise RuntimeError(f"{owner}: the processes resume after epochs {found.tolist()}; every process must see "
                           f"the checkpoints in {folder} (a shared filesystem)")


def average_gradients(parameters: Iterable[torch.nn.Parameter], *, weight: float | None = None) -> None:
    """Sum every parameter's ``.grad`` over the ranks and divide by W (or multiply by ``weight`` first and
    do not divide). Parameters without a gradient are left out (as the optimisers skip them): every
    rank must compute the same losses, so that the same parameters have gradients everywhere. One flat
    all_reduce per dtype and device."""
    if not _active():
        return
    params = [p for p in parameters if p.grad is not None]
    groups: dict[tuple, list[torch.nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for group in groups.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        if weight is not None:
            flat.mul_(weight)
        dist.all_reduce(flat)
        if weight is None:
            flat.div_(world_size())
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (start every rank from the same weights)."""
    if not _active():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)
