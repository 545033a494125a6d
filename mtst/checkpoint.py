"""Checkpoints that survive a crash (written to a temporary path, fsynced, then swapped in), and the
training state a resumed run continues from."""

import ctypes
import errno
import os
import pickle
import shutil
import sys
import uuid
import zipfile
from pathlib import Path

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read; the message names it and says what to do."""


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False where the system or filesystem cannot do it.
    """
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def save_model_atomic(model: nn.Module, dest) -> None:
    """Save a ``MultiTaskSentenceTransformer`` so that ``dest`` always holds a whole model, old or new.

    ``save_pretrained`` goes into a sibling temp folder, which is fsynced, then swapped into place.
    On Linux the old and new folders are exchanged in one step, so ``dest`` is never missing nor
    half written; elsewhere two renames leave it missing for an instant. Leftovers of a save that
    was killed half-way (``.best.*`` beside ``best``) are removed first.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir()  # unlike tempfile.mkdtemp (0700), this honours the umask, as the files inside do
    model_to_save = model
    backbone = model.encoder.backbone
    if hasattr(backbone, "merge_and_unload"):  # LoRA: save the merged weights, keep training the adapters
        import copy

        model_to_save = copy.deepcopy(model)
        model_to_save.encoder.backbone = model_to_save.encoder.backbone.merge_and_unload()
    model_to_save.save_pretrained(tmp)
    _fsync_tree(tmp)
    if not (dest.exists() and _exchange(tmp, dest)):
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        tmp = old
    shutil.rmtree(tmp, ignore_errors=True)  # the previous folder


def save_state_atomic(state: dict, dest) -> None:
    """``torch.save`` of tensors and plain containers only (loaded with ``weights_only=True``)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def load_state(path) -> dict:
    """Load a training state without unpickling arbitrary objects.

    Raises:
        CheckpointError: the file is empty, truncated or otherwise not a training state.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        reason = "it is empty" if Path(path).stat().st_size == 0 else f"{type(err).__name__}: {str(err)[:120]}"
        raise CheckpointError(f"{path}: not a readable training state ({reason}); it is damaged or truncated "
                              "(a crash while copying it?): restore it, or delete it and train again without "
                              "--resume") from None


RNG_KEYS = ("torch_rng", "cuda_rng")


def training_state(parts: dict, streams: dict, **progress) -> dict:
    """What ``last.pt`` holds, so that a resumed run continues exactly where this one stopped.

    Each part's ``state_dict()`` (model, optimizer, ...), each batch stream's position, the RNGs,
    and ``progress`` (step, epoch, history so far).
    """
    return {**{name: part.state_dict() for name, part in parts.items()},
            "streams": {task: stream.state_dict() for task, stream in streams.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            **progress}


def restore_training_state(state: dict, parts: dict, streams: dict) -> dict:
    """Load a ``training_state()`` back into ``parts``, ``streams`` and the RNGs; returns its ``progress``."""
    for name, part in parts.items():
        part.load_state_dict(state[name])
    for task, stream in streams.items():
        stream.load_state_dict(state["streams"][task])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return {k: v for k, v in state.items() if k not in parts and k not in ("streams", *RNG_KEYS)}
