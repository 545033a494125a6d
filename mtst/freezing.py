"""Task 3: which parameters train. A strategy is a set of trainable parameters, never another loop.

``TrainConfig.trainable_layers`` says how deep the encoder trains: None, all of it (embeddings
included); ``k``, only its top ``k`` layers (0: the encoder is frozen, a linear probe). Whatever is
frozen at the bottom runs once and is cached (``mtst.prefix``). ``TrainConfig.freeze`` adds the
other strategies: ``gradual`` unfreezes those ``k`` layers one per epoch from the top, ``lora``
trains adapters instead of the layers' weights, ``cls_head`` / ``ner_head`` keep that head frozen.
"""

import logging

from torch import nn

from .config import TrainConfig
from .model import MultiTaskSentenceTransformer
from .prefix import mpnet, num_layers

logger = logging.getLogger(__name__)


def layer_groups(model: MultiTaskSentenceTransformer) -> list[list[nn.Parameter]]:
    """Backbone parameters from the bottom up: embeddings (+ relative position bias), then each layer."""
    backbone = mpnet(model.encoder.backbone)
    bottom = list(backbone.embeddings.parameters()) + list(backbone.encoder.relative_attention_bias.parameters())
    return [bottom] + [list(layer.parameters()) for layer in backbone.encoder.layer]


def prefix_layers(model: MultiTaskSentenceTransformer, cfg: TrainConfig) -> int | None:
    """How many encoder layers stay frozen for the whole run (their output is cached); None when
    the embeddings train too, so nothing can be cached.
    """
    if cfg.trainable_layers is None:
        return None
    return num_layers(model.encoder.backbone) - min(cfg.trainable_layers, num_layers(model.encoder.backbone))


def trainable_now(model: MultiTaskSentenceTransformer, cfg: TrainConfig, epoch: int) -> int | None:
    """Top layers training in ``epoch`` (None: all, embeddings included); ``gradual`` adds one per epoch."""
    total = num_layers(model.encoder.backbone)
    k = total if cfg.trainable_layers is None else min(cfg.trainable_layers, total)
    if cfg.freeze == "gradual":
        return min(epoch, k)
    return None if cfg.trainable_layers is None else k


def add_lora(model: MultiTaskSentenceTransformer, r: int, alpha: int, trainable_layers: int | None = None) -> None:
    """Wrap the attention projections (q, k, v, o) of the top ``trainable_layers`` layers (all when
    None) with LoRA adapters (peft).
    """
    from peft import LoraConfig, get_peft_model

    total = num_layers(model.encoder.backbone)
    layers = None if trainable_layers is None else list(range(total - trainable_layers, total))
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.1, target_modules=["q", "k", "v", "o"],
                        layers_to_transform=layers, layers_pattern="layer" if layers else None)
    model.encoder.backbone = get_peft_model(model.encoder.backbone, config)


def apply_freezing(model: MultiTaskSentenceTransformer, cfg: TrainConfig, epoch: int = 0) -> None:
    """Set ``requires_grad`` of every parameter for ``cfg`` at the start of ``epoch``."""
    k = trainable_now(model, cfg, epoch)
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
    logger.info("freeze=%s, trainable_layers=%s, epoch %d: %s of %s parameters train", cfg.freeze,
                cfg.trainable_layers, epoch, f"{trainable:,}", f"{sum(p.numel() for p in model.parameters()):,}")
