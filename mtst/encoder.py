"""Task 1: ``SentenceTransformer``, a backbone plus pooling that maps text to fixed-length vectors.

Pooling functions are pure: token states ``(B, T, H)`` and the attention mask ``(B, T)`` (1 for
real tokens, 0 for padding) in, ``(B, H)`` out. Padding never contributes, so a sentence's
embedding does not depend on what else is in its batch.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from .assets import read_st_layout, resolve_model, write_st_layout
from .attention import packed_linears, use_sdpa

logger = logging.getLogger(__name__)


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real (unmasked) token states."""
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)  # (B, T, 1)
    summed = (token_states * mask).sum(dim=1)  # (B, H)
    counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1); a row of all padding stays finite
    return summed / counts


def cls_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """State of the first token (``<s>``, MPNet's CLS)."""
    del attention_mask  # the first token is never padding (right padding)
    return token_states[:, 0]


def max_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over the real token states."""
    padding = attention_mask.unsqueeze(-1) == 0  # (B, T, 1)
    return token_states.masked_fill(padding, torch.finfo(token_states.dtype).min).amax(dim=1)


POOLERS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


@dataclass
class Tokenized:
    """Sentences as sub-token ids, unpadded, with the length each had before truncation."""

    input_ids: list[list[int]]
    full_lengths: list[int]
    max_length: int

    @property
    def truncated(self) -> list[bool]:
        """Whether each sentence was cut to ``max_length``."""
        return [n > self.max_length for n in self.full_lengths]


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> Tokenized:
    """Sub-token ids with special tokens, each truncated to ``max_length``.

    The untruncated lengths are kept so callers can report what was cut.
    """
    if isinstance(texts, str):
        raise TypeError("tokenize takes a list of strings, not one string")
    full = tokenizer([str(t).strip() for t in texts], add_special_tokens=True, truncation=False,
                     verbose=False)["input_ids"]
    # A single sequence truncates by cutting the body and keeping the closing special token,
    # exactly what the tokenizer's own truncation (and sentence-transformers) does.
    ids = [seq if len(seq) <= max_length else seq[: max_length - 1] + seq[-1:] for seq in full]
    return Tokenized(ids, [len(seq) for seq in full], max_length)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest one: returns ``input_ids`` and ``attention_mask``, (B, T)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices in batches, longest sentences first (each batch carries little padding).

    A batch holds at most ``batch_size`` rows and at most ``batch_size`` times the mean length in tokens,
    padding included, so a few long sentences come in smaller batches instead of padding a whole batch of
    short ones. Equal lengths give plain batches of ``batch_size``.
    """
    order = np.argsort([-n for n in lengths], kind="stable")
    budget = batch_size * sum(lengths) / max(len(lengths), 1)
    batches, start = [], 0
    while start < len(order):
        size = int(min(batch_size, max(1, budget // lengths[order[start]])))
        batches.append(order[start:start + size])
        start += size
    return batches


class SentenceTransformer(nn.Module):
    """A transformer backbone with pooling, giving one fixed-length embedding per sentence.

    ``forward`` takes tensors; only ``tokenize`` and ``encode`` see raw text.

    Args:
        backbone: a Hugging Face encoder returning ``last_hidden_state``.
        tokenizer: its tokenizer.
        pooling: ``mean`` (masked), ``cls`` or ``max``.
        normalize: L2-normalise embeddings returned by ``encode`` by default.
        max_seq_length: inputs longer than this (in sub-tokens, specials included) are truncated.
        attention: ``eager`` (the stock MPNet code, which sentence-transformers runs: the default, so fp32
            embeddings match it) or ``sdpa`` (fused, ``mtst.attention``: faster, the training default; in fp32 its
            rounding moves long texts further from sentence-transformers than the 1e-5 the default keeps).
    """

    def __init__(self, backbone: nn.Module, tokenizer, pooling: str = "mean", normalize: bool = False,
                 max_seq_length: int = 384, attention: str = "eager"):
        super().__init__()
        if pooling not in POOLERS:
            raise ValueError(f"pooling must be one of {sorted(POOLERS)}, got {pooling!r}")
        if attention not in ("sdpa", "eager"):
            raise ValueError(f"attention must be sdpa or eager, got {attention!r}")
        use_sdpa(backbone, attention == "sdpa")
        self.attention = attention
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_seq_length = max_seq_length

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, pooling: str | None = None,
                        normalize: bool | None = None, max_seq_length: int = 384,
                        attention: str = "eager") -> "SentenceTransformer":
        """Load a backbone from a hub id, a local folder or ``mtst:tiny``, in eval mode.

        The name is resolved by ``mtst.assets.resolve_model``; eval mode as transformers and
        sentence-transformers do.

        ``pooling`` and ``normalize`` default to the folder's sentence-transformers config
        (``1_Pooling``, a ``Normalize`` module in ``modules.json``), else ``mean`` and no
        normalisation; so ``encode()`` returns what sentence-transformers returns from the folder.
        """
        source = resolve_model(name_or_path)
        logger.info("loading backbone from %s", source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        backbone = AutoModel.from_pretrained(source, dtype=torch.float32, add_pooling_layer=False)
        saved_pooling, saved_normalize = read_st_layout(source)
        normalize = saved_normalize if normalize is None else normalize
        return cls(backbone, tokenizer, pooling or saved_pooling or "mean", normalize, max_seq_length, attention).eval()

    def save_pretrained(self, path) -> None:
        """Write a sentence-transformers folder, loadable by ``sentence_transformers`` and by ``from_pretrained``.

        It holds the backbone, the tokenizer, ``modules.json`` and the pooling config.
        """
        write_st_layout(path, self.backbone, self.tokenizer, self.pooling, self.normalize, self.max_seq_length)

    @property
    def hidden_size(self) -> int:
        """The embedding width ``H`` (768 for all-mpnet-base-v2)."""
        return self.backbone.config.hidden_size

    @property
    def device(self) -> torch.device:
        """Where the weights are; ``encode`` moves its batches there."""
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token states ``(B, T, H)`` and pooled sentence embeddings ``(B, H)``."""
        token_states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return {
            "token_embeddings": token_states,
            "sentence_embedding": POOLERS[self.pooling](token_states, attention_mask),
        }

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> Tokenized:
        """Sub-token ids of ``texts``, truncated to ``max_length`` (default ``max_seq_length``)."""
        return tokenize_texts(self.tokenizer, texts, max_length or self.max_seq_length)

    def encode(self, sentences: str | Sequence[str], batch_size: int = 32, normalize: bool | None = None,
               convert_to: str = "numpy", show_progress_bar: bool | None = None,
               autocast_dtype: torch.dtype | None = None):
        """Embed sentences, in input order.

        Sentences are sorted by token length so each batch carries little padding, and long ones come in
        smaller batches (``length_batches``); the result does not depend on the batching (padding is
        masked out of the pooling).

        Args:
            sentences: one string or a list of strings.
            batch_size: sentences per forward pass (fewer for sentences longer than the mean).
            normalize: L2-normalise (default: the model's ``normalize``).
            convert_to: ``numpy`` (float32 array), ``tensor`` (on CPU) or ``list``.
            show_progress_bar: default on for more than 256 sentences.
            autocast_dtype: e.g. ``torch.bfloat16`` for faster, approximate inference.

        Returns:
            ``(N, H)`` embeddings, or ``(H,)`` when a single string was given.
        """
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if convert_to not in ("numpy", "tensor", "list"):
            raise ValueError(f"convert_to must be numpy, tensor or list, got {convert_to!r}")
        tokens = self.tokenize(texts)
        if any(tokens.truncated):
            logger.info("%d of %d sentences truncated to %d tokens", sum(tokens.truncated), len(texts),
                        tokens.max_length)
        out = self.encode_ids(tokens.input_ids, batch_size, normalize, show_progress_bar, autocast_dtype)
        if single:
            out = out[0]
        if convert_to == "numpy":
            return out.numpy()
        return out if convert_to == "tensor" else out.tolist()

    @torch.inference_mode()
    def encode_ids(self, input_ids: Sequence[Sequence[int]], batch_size: int = 32, normalize: bool | None = None,
                   show_progress_bar: bool | None = None, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """``encode`` for sentences already tokenised (``tokenize(...).input_ids``): ``(N, H)`` on the CPU."""
        normalize = self.normalize if normalize is None else normalize
        # Dropout off for encoding; afterwards every module returns to its own mode (a partly
        # frozen model in training has some modules in eval mode).
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        device = self.device
        out = torch.empty((len(input_ids), self.hidden_size), dtype=torch.float32)
        show = len(input_ids) > 256 if show_progress_bar is None else show_progress_bar
        # disable=None: the bar shows only on a terminal (not in logs or saved notebooks)
        for rows in tqdm(length_batches([len(ids) for ids in input_ids], batch_size), desc="encode",
                         disable=None if show else True):
            batch, mask = pad_batch([input_ids[i] for i in rows], self.tokenizer.pad_token_id)
            # On the CPU bf16 linears multiply by oneDNN-packed weights: same math, faster (bench/encode.py).
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None), \
                    packed_linears(self.backbone, enabled=device.type == "cpu"):
                emb = self(batch.to(device), mask.to(device))["sentence_embedding"]
            emb = emb.float()
            if normalize:
                emb = F.normalize(emb, p=2, dim=-1)
            out[torch.as_tensor(rows)] = emb.cpu()
        for module, training in modes:
            module.training = training
        return out
