"""The ``linear_probe`` strategy: heads trained on cached features of the frozen encoder.

The encoder runs once over every split (the expensive part, cached on disk); the heads then
train for many epochs in seconds, even on a CPU. The NER head only ever sees the state of each
word's first sub-token (the only positions with a label), so only those are cached.
"""

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .checkpoint import save_model_atomic
from .config import TrainConfig
from .data import IGNORE_INDEX
from .features import TaskFeatures, bucket_batches, collate
from .model import MultiTaskSentenceTransformer
from .train import BEST, History, TaskSplits, autocast_dtype, monitor_score, resolve_device, score_task

logger = logging.getLogger(__name__)


def _cache_key(model: MultiTaskSentenceTransformer, features: TaskFeatures, precision: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([model.encoder.backbone.config.name_or_path, model.encoder.pooling, precision,
                         features.task]).encode())
    for ids in features.input_ids:
        h.update(np.asarray(ids, dtype=np.int32).tobytes())
    for p in list(model.encoder.parameters())[:3]:  # different weights, different features
        h.update(p.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:24]


@torch.no_grad()
def encoder_features(model: MultiTaskSentenceTransformer, features: TaskFeatures, batch_size: int = 64,
                     precision: str = "auto", cache_dir=None) -> dict[str, torch.Tensor]:
    """Frozen-encoder features of one split: ``x`` (N, H) and ``y`` (N,); for NER one row per word
    read, with ``row`` giving its sentence. Cached in ``cache_dir`` when given; ``seconds`` is the
    time the encoding took (when it ran, even if this call read the cache) and ``cached`` says which.
    """
    path = Path(cache_dir) / f"{features.task}-{_cache_key(model, features, precision)}.safetensors" \
        if cache_dir else None
    if path is not None and path.is_file():
        logger.info("features from cache %s", path)
        with safe_open(str(path), "pt") as f:
            seconds = float(f.metadata()["seconds"])
        return {**load_file(str(path)), "seconds": seconds, "cached": True}
    start = time.perf_counter()
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, precision)
    model.eval()
    xs, ys, rows_out = [], [], []
    for rows in tqdm(bucket_batches(features.lengths, batch_size), desc=f"encode {features.task}", disable=None):
        batch = collate(features, rows, model.tokenizer.pad_token_id)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model.encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        if features.task == "cls":
            xs.append(out["sentence_embedding"].float().cpu())
            ys.append(batch["labels"])
            rows_out.append(torch.tensor(rows))
        else:
            keep = batch["labels"] != IGNORE_INDEX  # (B, T): each word's first sub-token
            xs.append(out["token_embeddings"].float().cpu()[keep])
            ys.append(batch["labels"][keep])
            rows_out.append(torch.tensor(rows)[:, None].expand_as(keep)[keep])
    result = {"x": torch.cat(xs), "y": torch.cat(ys), "row": torch.cat(rows_out)}
    # Restore row order (batches were sorted by length); the order of words within a row is kept.
    order = torch.sort(result["row"], stable=True).indices
    result = {k: v[order].contiguous() for k, v in result.items()}
    seconds = time.perf_counter() - start
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(result, str(path), metadata={"seconds": f"{seconds:.3f}"})
    return {**result, "seconds": seconds, "cached": False}


def _evaluate_cached(model, features: TaskFeatures, cached: dict) -> dict:
    head = model.heads[features.task].eval()
    with torch.no_grad():
        logits = head(cached["x"].to(next(head.parameters()).device)).float().cpu()
    loss = torch.nn.functional.cross_entropy(logits, cached["y"]).item()
    best = logits.argmax(-1)
    preds: dict = {}
    if features.task == "cls":
        preds = {int(r): int(p) for r, p in zip(cached["row"], best)}
    else:
        for r, p in zip(cached["row"].tolist(), best.tolist()):
            preds.setdefault(r, []).append(p)
        preds.update({r: [] for r in range(len(features)) if r not in preds})
    return score_task(model, features, preds, loss)


def fit_probe(model: MultiTaskSentenceTransformer, data: dict[str, TaskSplits], cfg: TrainConfig, run_dir,
              cache_dir=None, recorder=None) -> tuple[History, dict]:
    """Train the heads on cached frozen features; keep the best heads by ``cfg.monitor``.

    Returns:
        The history, and the test metrics; ``history.encode_seconds`` is the time the encoder took
        over all splits (measured when the features were computed) and ``history.features_cached``
        whether this run read them from the cache.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    model.encoder.requires_grad_(False)
    cached = {t: {split: encoder_features(model, getattr(d, split), cfg.eval_batch_size, cfg.precision, cache_dir)
                  for split in ("train", "val", "test")} for t, d in data.items()}
    history = History()
    history.encode_seconds = sum(c[s]["seconds"] for c in cached.values() for s in c)
    history.features_cached = all(c[s]["cached"] for c in cached.values() for s in c)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.AdamW(model.heads.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    best_state, bad = None, 0
    n_batches = {t: -(-len(c["train"]["y"]) // cfg.batch_size) for t, c in cached.items()}
    for epoch in range(cfg.epochs):
        model.heads.train()
        perms = {t: rng.permutation(len(c["train"]["y"])) for t, c in cached.items()}
        sums = {t: 0.0 for t in cached}
        for i in range(max(n_batches.values())):
            optimizer.zero_grad(set_to_none=True)
            for t, c in cached.items():
                j = i % n_batches[t]
                idx = torch.from_numpy(perms[t][j * cfg.batch_size:(j + 1) * cfg.batch_size])
                loss = torch.nn.functional.cross_entropy(model.heads[t](c["train"]["x"][idx].to(device)),
                                                         c["train"]["y"][idx].to(device))
                loss.backward()
                sums[t] += loss.item()
            optimizer.step()
        steps = max(n_batches.values())
        val = {t: _evaluate_cached(model, data[t].val, c["val"]) for t, c in cached.items()}
        val["loss"] = sum(val[t]["loss"] for t in cached)
        score = monitor_score(val, cfg.monitor)
        improved = history.best_score is None or score > history.best_score
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps,
                  **{f"train_{t}_loss": sums[t] / steps for t in cached},
                  "val_loss": val["loss"], **{f"val_{t}_loss": val[t]["loss"] for t in cached},
                  "val_cls_accuracy": val["cls"]["accuracy"], "val_entity_f1": val["ner"]["entity_f1"],
                  "val_token_accuracy": val["ner"]["token_accuracy"], "score": score, "improved": improved}
        history.steps.append({k: record[k] for k in ("step", "epoch", "train_cls_loss", "train_ner_loss")})
        history.epochs.append(record)
        if recorder:
            recorder.log_step(history.steps[-1])
            recorder.log_epoch(record)
        logger.info("probe epoch %d: val cls acc %.4f, entity F1 %.4f", epoch + 1, record["val_cls_accuracy"],
                    record["val_entity_f1"])
        if improved:
            history.best_epoch, history.best_score, bad = epoch + 1, score, 0
            best_state = {k: v.detach().clone() for k, v in model.heads.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                history.stopped_early = True
                break
    model.heads.load_state_dict(best_state)
    save_model_atomic(model, Path(run_dir) / BEST)
    history.checkpoint = str(Path(run_dir) / BEST)
    test = {t: _evaluate_cached(model, data[t].test, c["test"]) for t, c in cached.items()}
    return history, test
