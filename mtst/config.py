"""Configuration as frozen dataclasses; override with ``dataclasses.replace``."""

import os
from dataclasses import dataclass, field

HUB_MODEL_ID = "sentence-transformers/all-mpnet-base-v2"
AG_NEWS_OFFICIAL_TRAIN_ROWS = 120_000  # the official train split; fractions are of this size


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class ModelConfig:
    """The shared encoder and its heads."""

    model_name: str = field(default_factory=lambda: _env("MTST_MODEL", HUB_MODEL_ID))
    """Hub id or local folder of the backbone (env ``MTST_MODEL``)."""
    pooling: str = "mean"
    """Sentence pooling: ``mean`` (masked), ``cls`` or ``max``."""
    normalize: bool = False
    """L2-normalise sentence embeddings in ``encode`` (the classifier sees raw pooled states)."""
    max_seq_length: int = 384
    """Longer inputs are truncated (and reported); 384 as in the model card."""
    ner_scheme: str = "iob2"
    """``iob2``: the 9 CoNLL labels (needed for entity F1); ``coarse``: O/PER/ORG/LOC/MISC."""
    head_dropout: float = 0.1
    """Dropout before each task head."""

    def __post_init__(self):
        if self.pooling not in ("mean", "cls", "max"):
            raise ValueError(f"pooling must be mean, cls or max, got {self.pooling!r}")
        if self.ner_scheme not in ("iob2", "coarse"):
            raise ValueError(f"ner_scheme must be iob2 or coarse, got {self.ner_scheme!r}")
        if self.max_seq_length < 2:
            raise ValueError(f"max_seq_length must be >= 2, got {self.max_seq_length}")


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
    seed: int = 42
    """Seed of the stratified sample and split."""
    max_length: int = 128
    """Training-time truncation, in sub-tokens."""

    def __post_init__(self):
        if self.source not in ("auto", "local", "hub"):
            raise ValueError(f"source must be auto, local or hub, got {self.source!r}")
        if self.ag_train_fraction is not None and not 0 < self.ag_train_fraction <= 1:
            raise ValueError(f"ag_train_fraction must be in (0, 1], got {self.ag_train_fraction}")
        if not 0 < self.ag_val_fraction < 1:
            raise ValueError(f"ag_val_fraction must be in (0, 1), got {self.ag_val_fraction}")
