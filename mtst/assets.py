"""Which model a name means, where its folder is, and whether its weights are the genuine ones.

A model spec is a hub id (all-mpnet-base-v2 unless ``$MTST_MODEL`` names another), a local folder,
or ``mtst:tiny``, a tiny random MPNet built on first use. The default hub model resolves to its
verified local copy when there is one (``make model`` fetches it: ``scripts/fetch.py``); the sha256
of its ``model.safetensors`` is checked once and remembered in a marker file beside it.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

HUB_MODEL_ID = "sentence-transformers/all-mpnet-base-v2"
TINY_MODEL = "mtst:tiny"
"""A tiny random MPNet (2 layers, hidden 32), built on first use: tests, the ``smoke`` profile, CI."""
MODEL_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
"""sha256 of the genuine ``model.safetensors``."""
WEIGHTS_NAME = "model.safetensors"
MODEL_WEIGHTS = (WEIGHTS_NAME, "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
"""One of these makes a folder a model folder."""
MARKER_NAME = ".mtst-verified.json"
"""Holds the verified sha256 with the weights' size and mtime: the next check is a ``stat``
instead of hashing 440 MB."""
TINY_VOCAB = Path(__file__).parent / "resources" / "tiny_vocab.txt"
"""The tiny model's vocabulary: a committed slice of all-mpnet-base-v2's, so it tokenises the same."""

_CHUNK = 8 << 20


class AssetError(RuntimeError):
    """The model could not be found or failed verification; the message says what to do."""


def model_spec() -> str:
    """The model to use when none is named: ``$MTST_MODEL``, else all-mpnet-base-v2 on the hub."""
    return os.environ.get("MTST_MODEL") or HUB_MODEL_ID


def default_model_dir() -> Path:
    """Where the verified copy of the hub model lives: ``$MTST_MODEL_DIR`` or ``~/.cache/mtst/...``."""
    env = os.environ.get("MTST_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mtst" / "all-mpnet-base-v2"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, with a progress bar."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    desc = f"sha256 {path.name}"
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=desc, leave=False)
    with bar, open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def folder_sha256(folder: Path) -> dict[str, str]:
    """The sha256 of each file directly in ``folder`` (an artifact: which model a figure was measured on)."""
    return {f.name: sha256_file(f) for f in sorted(Path(folder).iterdir()) if f.is_file()}


def verify_sha256(path: Path, expected: str) -> None:
    """Check a file against its expected sha256.

    Args:
        path: File to check.
        expected: Expected hex digest.

    Raises:
        AssetError: The file is missing or its digest differs; the message names the file,
            the expected and the actual digest.
    """
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path} does not exist (expected sha256 {expected})")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise AssetError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")


def _marker_for(weights: Path) -> dict:
    stat = weights.stat()
    return {"sha256": MODEL_SHA256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_marker(folder: Path) -> None:
    """Remember that ``folder/model.safetensors`` is genuine, so the next check need not hash it."""
    try:
        (folder / MARKER_NAME).write_text(json.dumps(_marker_for(folder / WEIGHTS_NAME)))
    except OSError as err:  # a read-only copy is still usable, just hashed again next time
        log.debug("Could not write %s in %s: %s", MARKER_NAME, folder, err)


def is_verified(folder: Path) -> bool:
    """Whether ``folder/model.safetensors`` has sha256 ``MODEL_SHA256``.

    A matching marker file answers without hashing; otherwise the file is hashed and, if
    genuine, the marker is written.
    """
    weights = Path(folder) / WEIGHTS_NAME
    if not weights.is_file():
        return False
    try:
        if json.loads((weights.parent / MARKER_NAME).read_text()) == _marker_for(weights):
            return True
    except (OSError, ValueError):
        pass  # no marker or a broken one: hash instead
    try:
        verify_sha256(weights, MODEL_SHA256)
    except AssetError as err:
        log.warning("%s", err)
        return False
    write_marker(weights.parent)
    return True


def weights_sha256(folder: Path) -> str:
    """The sha256 of a model folder's weights, for an artifact's record; the verified base is not hashed again."""
    return MODEL_SHA256 if is_verified(folder) else sha256_file(Path(folder) / WEIGHTS_NAME)


def verify_weights(folder: Path, expected: str) -> None:
    """Raise ``AssetError`` unless a folder's weights have sha256 ``expected`` (the verified base: no re-hash)."""
    if expected.lower() != MODEL_SHA256 or not is_verified(folder):
        verify_sha256(Path(folder) / WEIGHTS_NAME, expected)


def read_st_layout(source: str) -> tuple[str | None, bool]:
    """How a sentence-transformers folder pools and whether it normalises, read from its config files.

    The pooling mode is in ``1_Pooling/config.json``, a ``Normalize`` module in ``modules.json``;
    ``(None, False)`` for what is not such a folder (a hub id).
    """
    folder = Path(source)
    pooling, normalize = None, False
    if (folder / "1_Pooling" / "config.json").is_file():
        cfg = json.loads((folder / "1_Pooling" / "config.json").read_text())
        modes = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}
        pooling = next((mode for mode, key in modes.items() if cfg.get(key)), None)
    if (folder / "modules.json").is_file():
        modules = json.loads((folder / "modules.json").read_text())
        normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    return pooling, normalize


def write_st_layout(path, backbone, tokenizer, pooling: str, normalize: bool, max_seq_length: int) -> None:
    """Write a folder that ``sentence_transformers.SentenceTransformer(path)`` loads.

    It holds the backbone's weights, the tokenizer, ``modules.json`` and the pooling config.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2))
    (path / "1_Pooling").mkdir(exist_ok=True)
    config = {
        "word_embedding_dimension": backbone.config.hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (path / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2))


def build_tiny_model(dest, seed: int = 0, pooling: str = "mean") -> Path:
    """Write the tiny random MPNet (``TINY_MODEL``) to ``dest`` (idempotent) and return the folder."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    dest = Path(dest)
    if (dest / "modules.json").is_file():
        return dest
    words = TINY_VOCAB.read_text(encoding="utf-8").splitlines()
    tokenizer = MPNetTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    config = MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=514)
    torch.manual_seed(seed)
    backbone = MPNetModel(config, add_pooling_layer=False).eval()
    # Build beside dest and rename, so processes building at once (torchrun) never see half a model.
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    write_st_layout(tmp, backbone, tokenizer, pooling, normalize=False, max_seq_length=384)
    try:
        os.rename(tmp, dest)
    except OSError:  # another process won the race; its model is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _looks_like_path(spec: str) -> bool:
    """Whether ``spec`` means a folder rather than a hub id (``name`` or ``namespace/name``)."""
    return spec.startswith((".", "~", os.sep)) or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec)


def resolve_model(spec: str | None = None) -> str:
    """What to hand to ``from_pretrained`` for a model spec.

    Args:
        spec: A local folder, a hub id or ``TINY_MODEL``; ``model_spec()`` when None.

    Returns:
        An existing local folder as given; for ``TINY_MODEL``, its folder under ``~/.cache/mtst``
        (built on first use); for ``HUB_MODEL_ID``, the verified copy at ``default_model_dir()``
        when there is one (so offline machines work); else the hub id, which transformers resolves
        from the hub or its cache (honouring ``HF_HUB_OFFLINE``).

    Raises:
        AssetError: ``spec`` is a path to no folder, or a folder without model files.
    """
    spec = spec or model_spec()
    if spec == TINY_MODEL:
        return str(build_tiny_model(Path.home() / ".cache" / "mtst" / "tiny-mpnet"))
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file() or not any((folder / w).is_file() for w in MODEL_WEIGHTS):
            raise AssetError(f"{folder}: folder has no model files (config.json and {WEIGHTS_NAME}); give the "
                             "folder a model was saved to, or a hub id")
        return str(folder)
    if folder.exists() or _looks_like_path(spec):
        problem = "not a folder" if folder.exists() else "no such folder"
        raise AssetError(f"{folder}: {problem}; give a model folder, or a hub id such as {HUB_MODEL_ID} "
                         "(`make model` makes a local copy of it)")
    if spec == HUB_MODEL_ID and is_verified(default_model_dir()):
        log.info("Using the verified local copy at %s", default_model_dir())
        return str(default_model_dir())
    return spec
