"""Named configurations: ``smoke`` (tiny model, fixtures, seconds), ``cpu`` (the most honest result
2 CPU cores finish in under 30 minutes), ``gpu`` (full fine-tuning on the reference protocol).

Each is a dict of overrides per config section; ``load_configs`` applies a profile, then a JSON
config file, then ``section.field=value`` overrides.
"""

import dataclasses
import json
from pathlib import Path

from .config import DataConfig, ModelConfig, TrainConfig

FIXTURE_DATA = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "data"

PROFILES: dict[str, dict[str, dict]] = {
    "smoke": {
        "model": {"model_name": "mtst:tiny"},
        "data": {"data_dir": str(FIXTURE_DATA), "ag_train_fraction": None},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "log_every": 2, "head_lr": 3e-3},
    },
    # A CPU fine-tune of the top 8 layers (the embeddings and first 4 run once and are cached)
    # with the reference's alternating loop, under bf16 autocast where the CPU has it; the NER
    # head sees each word's casing (the encoder lowercases).
    "cpu": {
        "model": {"ner_shape_dim": 16},
        "data": {"max_length": 128},
        "train": {"trainable_layers": 8, "epochs": 2, "batch_size": 32, "eval_batch_size": 64, "lr": 5e-5,
                  "head_lr": 1e-3, "warmup_ratio": 0.06, "monitor": "mean_score", "patience": 2,
                  "log_every": 10, "device": "cpu"},
    },
    # Full fine-tuning of encoder and heads, as the reference design, with our loop.
    "gpu": {
        "model": {},
        "data": {"max_length": 128},
        "train": {"epochs": 4, "batch_size": 32, "eval_batch_size": 256, "lr": 5e-5, "head_lr": 5e-4,
                  "warmup_ratio": 0.06, "monitor": "mean_score", "patience": 2, "log_every": 10},
    },
}


def _coerce(value: str, current):
    """Parse a command-line override to the type of the field's current value."""
    if value in ("None", "null"):
        return None
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(current, tuple):
        return tuple(float(v) for v in value.split(","))
    for kind in (int, float):
        if isinstance(current, kind):
            return kind(value)
    try:
        return json.loads(value)
    except ValueError:
        return value


def load_configs(profile: str | None = None, config_file=None,
                 overrides=()) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """Build the three configs from a profile, an optional JSON file and ``section.field=value`` strings."""
    sections = {"model": {}, "data": {}, "train": {}}
    if profile:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
        for k, v in PROFILES[profile].items():
            sections[k].update(v)
    if config_file:
        loaded = json.loads(Path(config_file).read_text())
        unknown = set(loaded) - set(sections)
        if unknown:
            raise ValueError(f"{config_file}: unknown sections {sorted(unknown)}; expected model, data, train")
        for k, v in loaded.items():
            sections[k].update(v)
    classes = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in classes:
            raise ValueError(f"override {item!r} must look like train.epochs=3")
        fields = {f.name: f for f in dataclasses.fields(classes[section])}
        if name not in fields:
            raise ValueError(f"override {item!r}: {section} has no field {name!r}")
        default = sections[section].get(name, getattr(classes[section](), name))
        sections[section][name] = _coerce(value, default)
    for section, cls in classes.items():
        names = {f.name for f in dataclasses.fields(cls)}
        bad = set(sections[section]) - names
        if bad:
            raise ValueError(f"{section} config has no fields {sorted(bad)}")
    return ModelConfig(**sections["model"]), DataConfig(**sections["data"]), TrainConfig(**sections["train"])
