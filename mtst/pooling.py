"""Pooling: turn token states into one fixed-length vector per sentence.

Each function is pure, takes token states ``(B, T, H)`` and the attention mask ``(B, T)``
(1 for real tokens, 0 for padding) and returns ``(B, H)``. Padding never contributes, so a
sentence's embedding does not depend on what else is in its batch.
"""

import torch


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
