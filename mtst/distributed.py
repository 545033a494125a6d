"""Where the work runs: the device and its autocast precision, and more than one process (``torchrun``):
DDP, sharded batches, rank-0 writes, gathered metrics.

With one process every process function here is a no-op, so the training code has a single path.
"""

import os

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``TrainConfig.device`` names: ``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype that ``TrainConfig.precision`` means on ``device`` (None: fp32, no autocast).

    ``auto``: bf16 on GPUs and CPUs that support it, fp16 (with a GradScaler) on older GPUs,
    fp32 on other CPUs. Otherwise the named precision.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def init_from_env() -> None:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch_dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def active() -> bool:
    """Whether a process group is running (several processes)."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    """This process's index among all of them (0 with one process)."""
    return torch_dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes train together (1 without torchrun)."""
    return torch_dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process is the one that writes files and logs (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process to get here (no-op with one process)."""
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
