"""One call from configs to a finished, recorded run: data, model, fit (or probe), test metrics."""

import dataclasses
import logging
import time
from pathlib import Path

import torch

from . import distributed as dist
from .assets import MODEL_SHA256, is_verified, sha256_file
from .config import DataConfig, ModelConfig, TrainConfig
from .data import load_ag_news, load_conll
from .features import classification_features, ner_features
from .model import MultiTaskSentenceTransformer
from .runs import RunRecorder, environment, plot_confusion, plot_losses
from .train import BEST, TaskSplits, evaluate, fit, resolve_device

logger = logging.getLogger(__name__)

TINY_MODEL = "mtst:tiny"  # model_name that builds the tiny random MPNet (smoke runs, CI)


def build_model(cfg: ModelConfig, seed: int, cache_dir="cache") -> MultiTaskSentenceTransformer:
    """The encoder from ``cfg.model_name`` (or the tiny test model) with seeded fresh heads."""
    if cfg.model_name == TINY_MODEL:
        from .tiny import build_tiny_model

        folder = Path(cache_dir) / "tiny-mpnet"
        if dist.is_main():  # transformers writes weights on rank 0 only
            build_tiny_model(folder)
        dist.barrier()
        cfg = dataclasses.replace(cfg, model_name=str(folder))
    torch.manual_seed(seed)
    return MultiTaskSentenceTransformer.from_config(cfg)


def _save_artifact(model: MultiTaskSentenceTransformer, cfg: ModelConfig, folder: Path) -> None:
    """The encoder stayed frozen, so the heads alone (a few KB) plus the base model reproduce the
    model; the base model's weights checksum travels with them.
    """
    source = Path(model.encoder.backbone.config.name_or_path)
    sha = None
    if source.is_dir():  # the verified default base already carries its checksum: no re-hash
        sha = MODEL_SHA256 if is_verified(source) else sha256_file(source / "model.safetensors")
    base = cfg.model_name if cfg.model_name != TINY_MODEL else str(source)
    model.save_heads(folder, base_model=base, base_sha256=sha)


def build_task_data(model: MultiTaskSentenceTransformer, data_cfg: DataConfig) -> tuple[dict[str, TaskSplits], dict]:
    """Load AG News and CoNLL-2003 and pre-tokenise every split; also return the data record."""
    ag, conll = load_ag_news(data_cfg), load_conll(data_cfg)
    tok, n = model.tokenizer, data_cfg.max_length
    eval_n = model.encoder.max_seq_length  # evaluation reads whole sentences where it can
    data = {
        "cls": TaskSplits(classification_features(tok, ag.train, n), classification_features(tok, ag.val, eval_n),
                          classification_features(tok, ag.test, eval_n)),
        "ner": TaskSplits(*(ner_features(tok, split, model.ner_labels, m)
                            for split, m in ((conll.train, n), (conll.val, eval_n), (conll.test, eval_n)))),
    }
    record = {
        "sources": {"ag_news_train": ag.source, "conll_train": conll.source},
        "train_rows": {"ag_news": len(ag.train), "conll": len(conll.train)},
        "val_rows": {"ag_news": len(ag.val), "conll": len(conll.val)},
        "test_rows": {"ag_news": len(ag.test), "conll": len(conll.test)},
        "truncated": {f"{t}_{s}": getattr(d, s).truncated for t, d in data.items() for s in ("train", "val", "test")},
    }
    return data, record


def run_experiment(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig, name: str,
                   runs_dir="runs", record_dir=None, cache_dir="cache", resume: bool = False,
                   profile: str | None = None) -> dict:
    """Train, pick the best epoch on validation, score it on the official test sets, record it all.

    Checkpoints go to ``runs_dir/name``; the record (config, environment, history, metrics, plots)
    to ``record_dir`` (default: the same folder).

    Returns:
        The metrics written to ``metrics.json``.
    """
    dist.init_from_env()
    run_dir = Path(runs_dir) / name
    record_dir = Path(record_dir) if record_dir else run_dir
    device = resolve_device(train_cfg.device)
    start = time.perf_counter()
    model = build_model(model_cfg, train_cfg.seed, cache_dir)
    data, data_record = build_task_data(model, data_cfg)
    configs = {"name": name, "profile": profile, "model": model_cfg, "data": data_cfg, "train": train_cfg,
               **data_record}
    recorder = RunRecorder(record_dir, configs, device, resume) if dist.is_main() else None

    if train_cfg.freeze == "linear_probe":
        from .probe import fit_probe

        history, test = fit_probe(model, data, train_cfg, run_dir, Path(cache_dir) / "features", recorder)
    else:
        history = fit(model, data, train_cfg, run_dir, resume=resume, recorder=recorder)
        if history.interrupted:
            return {"interrupted": True, "step": history.steps[-1]["step"] if history.steps else 0}
        best = MultiTaskSentenceTransformer.from_pretrained(run_dir / BEST).to(device)
        test = evaluate(best, {t: d.test for t, d in data.items()}, train_cfg.eval_batch_size, train_cfg.precision)
    if not dist.is_main():
        return {}
    best_val = next(e for e in history.epochs if e["epoch"] == history.best_epoch)
    wall = time.perf_counter() - start
    metrics = {
        "name": name, "profile": profile, "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else environment()["cpu"],
        "wall_seconds": wall, "cold_wall_seconds": wall + (history.encode_seconds if history.features_cached else 0),
        "epochs_run": len(history.epochs),
        "best_epoch": history.best_epoch, "stopped_early": history.stopped_early,
        "freeze": train_cfg.freeze, **data_record,
        # A probe reading cached features skips the encoder: its cold wall time adds the encoding
        # time measured when the cache was built.
        "features_cached": history.features_cached, "encode_seconds": history.encode_seconds,
        "val": best_val, "test": {"cls": test["cls"], "ner": test["ner"]},
    }
    if train_cfg.freeze in ("linear_probe", "backbone"):
        _save_artifact(model, model_cfg, record_dir / "artifact")
        metrics["artifact"] = str(record_dir / "artifact")
    recorder.write_json("metrics.json", metrics)
    plot_losses(history.steps, history.epochs, record_dir / "loss_plot.png", title=name)
    plot_confusion(test["cls"]["confusion_matrix"], model.class_labels, record_dir / "confusion_matrix.png")
    logger.info("%s: AG News test accuracy %.4f, CoNLL test entity F1 %.4f (token accuracy %.4f)", name,
                test["cls"]["accuracy"], test["ner"]["entity_f1"], test["ner"]["token_accuracy"])
    return metrics

