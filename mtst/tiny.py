"""A tiny random MPNet (2 layers, hidden 32) in sentence-transformers layout.

Tests, the ``smoke`` profile and CI use it so that everything runs offline in seconds. Its
vocabulary is a committed slice of all-mpnet-base-v2's, so the tokenisation behaves the same.
"""

import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

from .encoder import SentenceTransformer
from .model import save_encoder

VOCAB = Path(__file__).parent / "resources" / "tiny_vocab.txt"


def build_tiny_model(dest, seed: int = 0, pooling: str = "mean") -> Path:
    """Write a tiny random MPNet to ``dest`` (idempotent) and return the folder."""
    dest = Path(dest)
    if (dest / "modules.json").is_file():
        return dest
    words = VOCAB.read_text(encoding="utf-8").splitlines()
    tokenizer = MPNetTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    config = MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=514)
    torch.manual_seed(seed)
    backbone = MPNetModel(config, add_pooling_layer=False).eval()
    # Build beside dest and rename, so processes building at once (torchrun) never see half a model.
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    save_encoder(SentenceTransformer(backbone, tokenizer, pooling, max_seq_length=384), tmp)
    try:
        os.rename(tmp, dest)
    except OSError:  # another process won the race; its model is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
