"""Task 3: which parameters train, and the frozen bottom of the encoder, run once and cached.

A strategy is a set of trainable parameters, never another loop. ``TrainConfig.trainable_layers``
says how deep the encoder trains: None, all of it (embeddings included); ``k``, only its top ``k``
layers (0: the encoder is frozen, a linear probe). ``TrainConfig.freeze`` adds the other strategies:
``gradual`` unfreezes those ``k`` layers one at a time from the top, in ``k + 1`` equal stages of
the run, ``lora`` trains adapters instead of the layers' weights, ``cls_head`` / ``ner_head`` keep
that head frozen.

When the embeddings and the first ``n`` layers are frozen, their output for a given sentence never
changes during training. ``prefix_states`` computes it once per split (in eval mode, so no dropout)
and caches it on disk, keyed by everything it depends on: the frozen weights themselves, the token
ids (the data, the tokenizer and the truncation), ``n`` and the precision. A stale cache can
therefore never be read. ``run_layers`` then continues from those states through the trainable
layers; a forward from cached states equals the full forward in eval mode (tests/test_prefix.py).
"""

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers.masking_utils import create_bidirectional_mask

from .attention import SdpaMPNetEncoder, combined_mask
from .config import TrainConfig
from .encoder import pad_batch

logger = logging.getLogger(__name__)


def mpnet(backbone: nn.Module) -> nn.Module:
    """The ``MPNetModel`` inside ``backbone`` (itself, or the model under a peft wrapper)."""
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


def num_layers(backbone: nn.Module) -> int:
    """How many transformer layers the backbone has."""
    return len(mpnet(backbone).encoder.layer)


def bottom_parameters(backbone: nn.Module, n: int) -> list[nn.Parameter]:
    """Parameters that the output of the embeddings and the first ``n`` layers depends on."""
    model = mpnet(backbone)
    params = list(model.embeddings.parameters())
    if n > 0:  # the relative-position bias is shared by every layer
        params += list(model.encoder.relative_attention_bias.parameters())
    for layer in model.encoder.layer[:n]:
        params += list(layer.parameters())
    return params


def run_layers(backbone: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
               start: int, stop: int | None = None, outputs: list | None = None) -> torch.Tensor:
    """Continue the backbone from ``hidden`` (B, T, H), the output of its first ``start`` layers,
    through layers ``start:stop``; same arithmetic as the backbone's own forward. Each layer's output
    is also appended to ``outputs`` when it is given.
    """
    model = mpnet(backbone)
    encoder = model.encoder
    mask = create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=attention_mask)
    layers = encoder.layer[start:stop]
    if isinstance(encoder, SdpaMPNetEncoder):
        mask = combined_mask(encoder, hidden, mask)
        for layer in layers:
            hidden = layer(hidden, attention_mask=None, position_bias=mask)[0]
            if outputs is not None:
                outputs.append(hidden)
    else:
        bias = encoder.compute_position_bias(hidden)
        for layer in layers:
            hidden = layer(hidden, mask, bias)[0]
            if outputs is not None:
                outputs.append(hidden)
    return hidden


def bottom_states(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  n: int) -> torch.Tensor:
    """Output of the embeddings and the first ``n`` layers, (B, T, H)."""
    hidden = mpnet(backbone).embeddings(input_ids=input_ids)
    return run_layers(backbone, hidden, attention_mask, 0, n) if n else hidden


@dataclass
class PrefixStates:
    """Cached bottom states of one split: row ``r`` is ``states[offsets[r]:offsets[r + 1]]``, (T_r, H)."""

    states: torch.Tensor  # (total tokens, H)
    offsets: torch.Tensor  # (rows + 1,)
    layers: int  # how many encoder layers (after the embeddings) produced them

    def batch(self, rows, width: int) -> torch.Tensor:
        """The states of ``rows`` right-padded with zeros to ``width`` tokens, (B, width, H)."""
        out = self.states.new_zeros((len(rows), width, self.states.shape[1]))
        for b, r in enumerate(rows):
            start, stop = int(self.offsets[r]), int(self.offsets[r + 1])
            out[b, : stop - start] = self.states[start:stop]
        return out


def cache_key(backbone: nn.Module, input_ids: list[list[int]], n: int, dtype: torch.dtype | None) -> str:
    """A digest of everything the cached states depend on."""
    h = hashlib.sha256(f"mtst-prefix-v1 layers={n} dtype={dtype}".encode())
    for p in bottom_parameters(backbone, n):
        h.update(p.detach().float().cpu().numpy().tobytes())
    h.update(np.asarray([len(ids) for ids in input_ids], dtype=np.int64).tobytes())
    h.update(np.asarray([i for ids in input_ids for i in ids], dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


@torch.no_grad()
def prefix_states(backbone: nn.Module, input_ids: list[list[int]], pad_id: int, n: int,
                  dtype: torch.dtype | None = None, cache_dir=None, batch_size: int = 64,
                  desc: str = "prefix", keep: tuple[int, ...] = ()) -> tuple[PrefixStates, bool]:
    """The bottom states of every row, computed (and cached under ``cache_dir``) or read from the cache.

    Args:
        backbone: the Hugging Face MPNet model (its bottom ``n`` layers must be frozen).
        input_ids: the split's token ids.
        n: encoder layers in the prefix (0: the embeddings only).
        dtype: autocast dtype (and storage dtype) of the states; None: fp32.
        keep: shallower depths whose states the same pass also caches, as they are met on the way
            up: bit for bit what a run at that depth computes itself, so a study of several depths
            runs the frozen layers once.

    Returns:
        The states, and whether they came from the cache.
    """
    paths = {}
    if cache_dir is not None:
        paths = {m: Path(cache_dir) / f"{desc}-{cache_key(backbone, input_ids, m, dtype)}.safetensors"
                 for m in sorted({n, *keep}) if m <= n}
        if paths[n].is_file() and all(p.is_file() for p in paths.values()):
            logger.info("prefix states from cache %s", paths[n])
            saved = load_file(str(paths[n]))
            return PrefixStates(saved["states"], saved["offsets"], n), True
    depths = sorted({m for m in keep if m < n} | {n})
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    store = dtype or torch.float32
    lengths = [len(ids) for ids in input_ids]
    offsets = torch.zeros(len(input_ids) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths).cumsum(0)
    states = {m: torch.empty((int(offsets[-1]), mpnet(backbone).config.hidden_size), dtype=store) for m in depths}
    start = time.perf_counter()
    order = np.argsort(-np.asarray(lengths), kind="stable")  # longest first: little padding
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    for rows in tqdm(batches, desc=f"cache {desc} (layers 0-{n})", disable=None):
        ids, mask = pad_batch([input_ids[r] for r in rows], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            hidden, done = mpnet(backbone).embeddings(input_ids=ids), 0
            for m in depths:  # the same layers as bottom_states(..., m), met on the way up to n
                hidden = run_layers(backbone, hidden, mask, done, m) if m > done else hidden
                done = m
                out = hidden.to(store).cpu()
                for b, r in enumerate(rows):
                    states[m][offsets[r]:offsets[r + 1]] = out[b, : lengths[r]]
    backbone.train(was_training)
    logger.info("prefix states of %s: %d rows in %.1f s", desc, len(input_ids), time.perf_counter() - start)
    for m, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"states": states[m], "offsets": offsets}, str(tmp))
        tmp.replace(path)
    return PrefixStates(states[n], offsets, n), False


def cache_prefix(model: nn.Module, data: dict, n: int | None, dtype: torch.dtype | None, cache_dir=None,
                 batch_size: int = 64, keep: tuple[int, ...] = ()) -> bool | None:
    """Attach to every split of ``data`` (``{task: TaskSplits}``) the cached output of the frozen
    embeddings and first ``n`` layers, so that training and evaluation run only the layers above
    (``keep``: shallower depths cached by the same pass, see ``prefix_states``).

    Returns:
        Whether every split was read from the cache (None when nothing is cached: ``n`` is None).
    """
    if n is None:
        return None
    hits = []
    for task, splits in data.items():
        for split in ("train", "val", "test"):
            features = getattr(splits, split)
            features.prefix, hit = prefix_states(model.encoder.backbone, features.input_ids,
                                                 model.tokenizer.pad_token_id, n, dtype, cache_dir, batch_size,
                                                 desc=f"{task}-{split}", keep=keep)
            hits.append(hit)
    return all(hits)


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Backbone parameters from the bottom up: embeddings (+ relative position bias), then each layer."""
    backbone = mpnet(model.encoder.backbone)
    bottom = list(backbone.embeddings.parameters()) + list(backbone.encoder.relative_attention_bias.parameters())
    return [bottom] + [list(layer.parameters()) for layer in backbone.encoder.layer]


def prefix_layers(model: nn.Module, cfg: TrainConfig) -> int | None:
    """How many encoder layers stay frozen for the whole run (their output is cached); None when
    the embeddings train too, so nothing can be cached.
    """
    if cfg.trainable_layers is None:
        return None
    total, mix = num_layers(model.encoder.backbone), model.heads["ner"].mix
    n = total - min(cfg.trainable_layers, total)
    if mix > 1 and n > total - mix + 1:
        raise ValueError(f"the NER head mixes the last {mix} layers' states (model.ner_layer_mix), so at least "
                         f"{mix - 1} layers must run above the cached prefix: train.trainable_layers >= {mix - 1}")
    return n


def trainable_now(model: nn.Module, cfg: TrainConfig, step: int = 0, total_steps: int = 1) -> int | None:
    """Top layers training at ``step`` of ``total_steps`` (None: all, embeddings included). ``gradual``
    splits the run into ``k + 1`` equal stages: the heads alone, then one more layer from the top each
    stage, so every budget (one epoch too) ends with all ``k`` layers training.
    """
    total = num_layers(model.encoder.backbone)
    k = total if cfg.trainable_layers is None else min(cfg.trainable_layers, total)
    if cfg.freeze == "gradual":
        return min(k, step * (k + 1) // max(1, total_steps))
    return None if cfg.trainable_layers is None else k


def add_adapters(model: nn.Module, cfg: TrainConfig) -> None:
    """Under ``lora``, wrap the attention projections (q, k, v, o) of the top ``trainable_layers``
    layers (all when None) with LoRA adapters (peft); before the optimizer is built.
    """
    if cfg.freeze != "lora":
        return
    from peft import LoraConfig, get_peft_model

    total = num_layers(model.encoder.backbone)
    layers = None if cfg.trainable_layers is None else list(range(total - cfg.trainable_layers, total))
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.1, target_modules=["q", "k", "v", "o"],
                        layers_to_transform=layers, layers_pattern="layer" if layers else None)
    model.encoder.backbone = get_peft_model(model.encoder.backbone, config)


def layer_lrs(model: nn.Module, cfg: TrainConfig) -> dict[int, float]:
    """The learning rate of each backbone parameter (by ``id``) under layer-wise decay: the embeddings
    at depth 0 and layer ``i`` of ``n`` at ``lr * layer_lr_decay ** (n - i)``. Empty without decay,
    and under ``lora``, whose adapters all train at ``lr``.
    """
    if cfg.layer_lr_decay == 1.0 or cfg.freeze == "lora":
        return {}
    groups = layer_groups(model)  # embeddings at depth 0, the top layer at depth len - 1
    top = len(groups) - 1
    return {id(p): cfg.lr * cfg.layer_lr_decay ** (top - depth) for depth, group in enumerate(groups) for p in group}


def apply_freezing(model: nn.Module, cfg: TrainConfig, step: int = 0, total_steps: int = 1) -> None:
    """Set ``requires_grad`` of every parameter for ``cfg`` at ``step`` of ``total_steps``."""
    k = trainable_now(model, cfg, step, total_steps)
    model.encoder.requires_grad_(False)
    if cfg.freeze == "lora":
        for name, p in model.encoder.named_parameters():
            p.requires_grad = "lora_" in name
    elif k is None:
        model.encoder.requires_grad_(True)
    elif k:
        for group in layer_groups(model)[-k:]:  # the top k layers (index 0 is the embeddings)
            for p in group:
                p.requires_grad = True
    for task, head in model.heads.items():
        head.requires_grad_(cfg.freeze != f"{task}_head")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("freeze=%s, trainable_layers=%s, step %d: %s of %s parameters train", cfg.freeze,
                cfg.trainable_layers, step, f"{trainable:,}", f"{sum(p.numel() for p in model.parameters()):,}")
