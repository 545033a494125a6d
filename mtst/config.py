"""Configuration as frozen dataclasses; override with ``dataclasses.replace``."""

import os
from dataclasses import dataclass, field

from .assets import model_spec

AG_NEWS_OFFICIAL_TRAIN_ROWS = 120_000  # the official train split; fractions are of this size


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class ModelConfig:
    """The shared encoder and its heads."""

    model_name: str = field(default_factory=model_spec)
    """Hub id, local folder or ``mtst:tiny`` of the backbone (default: env ``MTST_MODEL``, else all-mpnet-base-v2)."""
    pooling: str = "mean"
    """Sentence pooling: ``mean`` (masked), ``cls`` or ``max``."""
    normalize: bool | None = None
    """L2-normalise sentence embeddings in ``encode``; None follows the model folder's ``modules.json``
    as sentence-transformers does (the classifier always sees raw pooled states)."""
    max_seq_length: int = 384
    """Longer inputs are truncated (and reported); 384 as in the model card."""
    ner_scheme: str = "iob2"
    """``iob2``: the 9 CoNLL labels (needed for entity F1); ``coarse``: O/PER/ORG/LOC/MISC."""
    head_dropout: float = 0.1
    """Dropout before each task head."""
    ner_shape_dim: int = 0
    """Width of the learned word-shape (casing) embedding joined to each token state before the NER
    classifier (0: the reference's plain linear head). The encoder lowercases; this gives case back."""
    attention: str = "sdpa"
    """MPNet attention: ``sdpa`` (fused ``scaled_dot_product_attention``, bias and padding mask built
    once per forward; ``mtst.attention``) or ``eager`` (the stock Hugging Face code); same result."""

    def __post_init__(self):
        if self.pooling not in ("mean", "cls", "max"):
            raise ValueError(f"pooling must be mean, cls or max, got {self.pooling!r}")
        if self.ner_scheme not in ("iob2", "coarse"):
            raise ValueError(f"ner_scheme must be iob2 or coarse, got {self.ner_scheme!r}")
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length must be >= 2, got {self.max_seq_length}")
        if self.attention not in ("sdpa", "eager"):
            raise ValueError(f"attention must be sdpa or eager, got {self.attention!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how AG News is sampled (the reference protocol)."""

    data_dir: str | None = field(default_factory=lambda: _env("MTST_DATA_DIR"))
    """Folder laid out like ``shared/data`` (env ``MTST_DATA_DIR``); None means the hub."""
    source: str = "auto"
    """``auto``: the data folder when one is set, else the hub; ``local`` or ``hub`` to force."""
    ag_train_fraction: float | None = 0.1
    """Fraction of the 120,000-row official train split to sample (None: every row available)."""
    ag_val_fraction: float = 0.2
    """Share of the sample held out for validation (stratified)."""
    conll_train_fraction: float | None = None
    """Seeded sample of the CoNLL train sentences (None: all 14,041); for budgeted comparisons."""
    eval_limit: int | None = None
    """Seeded sample of at most this many validation and test rows per task (None: all). Only
    for budgeted comparisons: official test scores use every row."""
    seed: int = 42
    """Seed of the stratified sample and split."""
    max_length: int = 128
    """Training-time truncation, in sub-tokens."""

    def __post_init__(self):
        if self.source not in ("auto", "local", "hub"):
            raise ValueError(f"source must be auto, local or hub, got {self.source!r}")
        if self.ag_train_fraction is not None and not 0 < self.ag_train_fraction <= 1:
            raise ValueError(f"ag_train_fraction must be in (0, 1], got {self.ag_train_fraction}")
        if self.conll_train_fraction is not None and not 0 < self.conll_train_fraction <= 1:
            raise ValueError(f"conll_train_fraction must be in (0, 1], got {self.conll_train_fraction}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"eval_limit must be >= 1, got {self.eval_limit}")
        if not 0 < self.ag_val_fraction < 1:
            raise ValueError(f"ag_val_fraction must be in (0, 1), got {self.ag_val_fraction}")


FREEZE_STRATEGIES = ("none", "cls_head", "ner_head", "gradual", "lora")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop (Tasks 3-4)."""

    epochs: int = 3
    """Passes over the data; one epoch visits every batch of both tasks once."""
    batch_size: int = 16
    """Examples per task batch (the reference design uses 16)."""
    eval_batch_size: int = 64
    """Examples per batch at evaluation."""
    lr: float = 2e-5
    """Peak learning rate of the encoder."""
    head_lr: float = 1e-3
    """Peak learning rate of the task heads (and the uncertainty weights)."""
    layer_lr_decay: float = 1.0
    """Layer-wise LR decay: layer i of n gets ``lr * decay ** (n - i)``; 1.0 turns it off."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    warmup_ratio: float = 0.1
    """Share of the steps with linear warm-up; then linear decay to zero."""
    grad_clip: float = 1.0
    """Max gradient norm (0 turns clipping off)."""
    sampling: str = "both"
    """``both`` (reference: one batch of each task per step, losses summed), ``round_robin``,
    ``proportional`` or ``temperature``."""
    temperature: float = 2.0
    """T of the ``temperature`` sampling strategy."""
    loss_weighting: str = "static"
    """``static`` (``task_weights``) or ``uncertainty`` (learned, Kendall et al. 2018)."""
    task_weights: tuple[float, float] = (1.0, 1.0)
    """Static loss weights of (cls, ner)."""
    trainable_layers: int | None = None
    """How deep the encoder trains: None, all of it (embeddings included); k, its top k layers, the
    frozen bottom running once over the data and cached (``mtst.prefix``); 0, a frozen encoder
    (a linear probe on its states)."""
    freeze: str = "none"
    """Task 3 strategy on top of ``trainable_layers``: ``none``; ``cls_head`` / ``ner_head`` (that
    head frozen); ``gradual`` (epoch 0 trains the heads, each later epoch one more layer from the
    top); ``lora`` (adapters on the attention projections of the trainable layers)."""
    init_from: str | None = None
    """Start from a saved model (``best/`` or an artifact) instead of fresh heads."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    precision: str = "auto"
    """``auto``: bf16 autocast on GPUs and CPUs that support it (AVX512-BF16 / AMX), fp16 +
    GradScaler on older GPUs, fp32 on other CPUs; or force ``fp32``, ``bf16`` or ``fp16``."""
    patience: int = 3
    """Early stopping: epochs without improvement of ``monitor`` before stopping."""
    monitor: str = "val_loss"
    """``val_loss`` (summed, as the reference), ``cls_accuracy``, ``entity_f1`` or ``mean_score``
    (their mean)."""
    seed: int = 42
    """Seeds the weights of the heads, dropout, batch order and task sampling."""
    stop_after_steps: int | None = None
    """Stop (saving a resumable checkpoint) after this many steps; the LR schedule is unchanged."""
    max_steps_per_epoch: int | None = None
    """Cap on the steps of one epoch (smoke runs); also shortens the LR schedule."""
    log_every: int = 20
    """Steps between history records."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""

    def __post_init__(self):
        from .sampling import STRATEGIES

        if self.sampling not in STRATEGIES:
            raise ValueError(f"sampling must be one of {STRATEGIES}, got {self.sampling!r}")
        if self.freeze not in FREEZE_STRATEGIES:
            raise ValueError(f"freeze must be one of {FREEZE_STRATEGIES}, got {self.freeze!r}")
        if self.loss_weighting not in ("static", "uncertainty"):
            raise ValueError(f"loss_weighting must be static or uncertainty, got {self.loss_weighting!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.monitor not in ("val_loss", "cls_accuracy", "entity_f1", "mean_score"):
            raise ValueError(f"unknown monitor {self.monitor!r}")
        if self.trainable_layers is not None and self.trainable_layers < 0:
            raise ValueError(f"trainable_layers must be None or >= 0, got {self.trainable_layers}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
