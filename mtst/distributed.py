"""More than one process (``torchrun``): DDP, sharded batches, rank-0 writes, gathered metrics.

With one process every function here is a no-op, so the training code has a single path.
"""

import os

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel


def init_from_env() -> None:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch_dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def active() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    return torch_dist.get_rank() if active() else 0


def world_size() -> int:
    return torch_dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        torch_dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP when several processes run; each step may use one head only, hence unused parameters."""
    if not active():
        return model
    ids = [device.index or 0] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def gather_eval(loss_sum: float, count: int, preds: dict) -> tuple[float, int, dict]:
    """Sum losses and counts and merge per-row predictions over all ranks."""
    if not active():
        return loss_sum, count, preds
    parts = [None] * world_size()
    torch_dist.all_gather_object(parts, (loss_sum, count, preds))
    merged = {}
    for _, _, p in parts:
        merged.update(p)
    return sum(p[0] for p in parts), sum(p[1] for p in parts), merged


def no_sync(model: torch.nn.Module, last: bool):
    """Skip DDP's gradient all-reduce except on the last backward of a step."""
    import contextlib

    if isinstance(model, DistributedDataParallel) and not last:
        return model.no_sync()
    return contextlib.nullcontext()
