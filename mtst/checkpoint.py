"""Checkpoints that survive a crash: written to a temporary path, fsynced, then renamed."""

import os
import shutil
import tempfile
from pathlib import Path

import torch

from .model import MultiTaskSentenceTransformer


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


def save_model_atomic(model: MultiTaskSentenceTransformer, dest) -> None:
    """``save_pretrained`` into a sibling temp folder, fsync, then swap it into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    model_to_save = model
    backbone = model.encoder.backbone
    if hasattr(backbone, "merge_and_unload"):  # LoRA: save the merged weights, keep training the adapters
        import copy

        model_to_save = copy.deepcopy(model)
        model_to_save.encoder.backbone = model_to_save.encoder.backbone.merge_and_unload()
    model_to_save.save_pretrained(tmp)
    _fsync_tree(tmp)
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


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
    """Load a training state without unpickling arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)
