"""Task 3: which parameters train. Each strategy is a config value (``TrainConfig.freeze``).

``linear_probe`` is not here: it trains the heads on cached frozen features (``mtst.probe``).
"""

import logging

from torch import nn

from .model import MultiTaskSentenceTransformer

logger = logging.getLogger(__name__)


def layer_groups(model: MultiTaskSentenceTransformer) -> list[list[nn.Parameter]]:
    """Backbone parameters from the bottom up: embeddings (+ relative position bias), then each layer."""
    backbone = model.encoder.backbone
    layers = backbone.encoder.layer
    bottom = list(backbone.embeddings.parameters()) + list(backbone.encoder.relative_attention_bias.parameters())
    return [bottom] + [list(layer.parameters()) for layer in layers]


def add_lora(model: MultiTaskSentenceTransformer, r: int, alpha: int) -> None:
    """Wrap the backbone's attention projections (q, k, v, o) with LoRA adapters (peft)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.1, target_modules=["q", "k", "v", "o"])
    model.encoder.backbone = get_peft_model(model.encoder.backbone, config)


def apply_freezing(model: MultiTaskSentenceTransformer, strategy: str, epoch: int = 0) -> None:
    """Set ``requires_grad`` for ``strategy`` at the start of ``epoch``.

    ``gradual`` unfreezes top-down: epoch 0 trains the heads only, epoch k adds the top k layers
    (the embeddings last).
    """
    for p in model.parameters():
        p.requires_grad = True
    if strategy in ("backbone", "linear_probe"):
        model.encoder.requires_grad_(False)
    elif strategy in ("cls_head", "ner_head"):
        model.heads[strategy.removesuffix("_head")].requires_grad_(False)
    elif strategy == "gradual":
        groups = layer_groups(model)
        for group in groups[: max(len(groups) - epoch, 0)]:
            for p in group:
                p.requires_grad = False
    elif strategy == "lora":
        for name, p in model.encoder.named_parameters():
            p.requires_grad = "lora_" in name
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("freeze=%s epoch %d: %s of %s parameters train", strategy, epoch, f"{trainable:,}",
                f"{sum(p.numel() for p in model.parameters()):,}")
