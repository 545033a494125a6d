"""Task 4: one train step, one ``evaluate()``, ``fit()`` with AMP, early stopping and resumable checkpoints."""

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import distributed as dist
from .checkpoint import load_state, restore_training_state, save_model_atomic, save_state_atomic, training_state
from .config import TrainConfig
from .data import IGNORE_INDEX
from .distributed import autocast_dtype, resolve_device
from .encoder import length_batches
from .features import (
    BatchStream,
    TaskFeatures,
    TaskSampler,
    TaskSplits,
    collate,
    model_inputs,
    to_device,
)
from .freezing import add_adapters, apply_freezing, cache_prefix, layer_lrs, prefix_layers, trainable_now
from .metrics import monitor_score, score_task
from .model import MultiTaskSentenceTransformer

logger = logging.getLogger(__name__)

BEST, LAST = "best", "last.pt"


@dataclass
class History:
    """What ``fit()`` returns: per-step and per-epoch records, the best epoch and its checkpoint."""

    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    checkpoint: str | None = None
    stopped_early: bool = False
    interrupted: bool = False
    resumed_at_step: int = 0  # 0 unless this call continued an interrupted run
    steps_run: int = 0  # optimisation steps this call performed
    prefix_seconds: float = 0.0  # caching (or reading) the frozen prefix's states
    prefix_from_cache: bool | None = None  # read from an earlier run's cache (None: no prefix)


class LossWeights(nn.Module):
    """How the task losses add up: static weights, or learned uncertainty weighting.

    Kendall, Gal & Cipolla 2018: ``sum_t exp(-s_t) * L_t + s_t / 2``, ``s_t = log sigma_t^2`` learned.
    """

    def __init__(self, mode: str, static: tuple[float, float]):
        super().__init__()
        self.mode = mode
        self.static = dict(zip(("cls", "ner"), static))
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in ("cls", "ner")}) \
            if mode == "uncertainty" else None

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        """Task ``task``'s share of the total loss."""
        if self.log_vars is None:
            return self.static[task] * loss
        return torch.exp(-self.log_vars[task]) * loss + self.log_vars[task] / 2


def train_step(model: nn.Module, batches: dict[str, dict], weights: LossWeights, optimizer, scaler,
               dtype: torch.dtype | None = None, grad_clip: float = 1.0) -> dict[str, float]:
    """One optimisation step on one batch per task in ``batches``; returns each task's loss.

    The gradient of the summed loss is the sum of per-task gradients, so each task backpropagates
    on its own (one graph in memory at a time); under DDP the last one syncs.
    """
    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    losses = {}
    for i, (task, batch) in enumerate(batches.items()):
        batch = to_device(batch, device)
        with dist.no_sync(model, last=i == len(batches) - 1):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(**model_inputs(batch), tasks=(task,))[task]
            loss = getattr(model, "module", model).loss(task, logits, batch["labels"])  # DDP wraps the model
            scaler.scale(weights.term(task, loss)).backward()
        losses[task] = loss.item()
    if grad_clip:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return losses


def build_optimizer(model: MultiTaskSentenceTransformer, weights: LossWeights, cfg: TrainConfig,
                    device: torch.device) -> torch.optim.Optimizer:
    """AdamW with a learning rate and weight decay per parameter group.

    Encoder at ``lr`` (optionally decayed per layer), heads and loss weights at ``head_lr``;
    no weight decay on biases and LayerNorm weights.
    """
    lr_of = layer_lrs(model, cfg)
    param_groups: dict[tuple[float, float], list] = {}
    for module, base_lr in ((model.encoder, cfg.lr), (model.heads, cfg.head_lr), (weights, cfg.head_lr)):
        for name, p in module.named_parameters():
            lr = lr_of.get(id(p), base_lr)
            decay = 0.0 if p.ndim < 2 or "LayerNorm" in name or module is weights else cfg.weight_decay
            param_groups.setdefault((lr, decay), []).append(p)
    groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in param_groups.items()]
    # The fused kernel: one pass over all weights, ~10x faster on the CPU than the per-tensor loop.
    return torch.optim.AdamW(groups, fused=device.type in ("cuda", "cpu"))


def linear_schedule(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate warmed up linearly over ``warmup`` steps, then decayed linearly to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(model: MultiTaskSentenceTransformer, data: dict[str, TaskFeatures], batch_size: int = 64,
             precision: str = "auto") -> dict:
    """Loss and metrics of each task on ``data`` (validation or test), shards gathered across ranks.

    NER is scored per word at its first sub-token (the reference's token accuracy counts exactly
    these positions); words cut off by truncation count as predicted ``O``.
    """
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, precision)
    was_training = model.training
    model.eval()
    pad_id = model.tokenizer.pad_token_id
    results: dict = {}
    for task, features in data.items():
        batches = [b.tolist() for b in length_batches(features.lengths, batch_size)][dist.rank()::dist.world_size()]
        loss_sum, count, preds = 0.0, 0, {}
        for rows in tqdm(batches, desc=f"eval {task}", leave=False,
                         disable=None if dist.is_main() else True):  # None: off when not a terminal
            batch = to_device(collate(features, rows, pad_id), device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(**model_inputs(batch), tasks=(task,))[task]
            n = len(rows) if task == "cls" else int((batch["labels"] != IGNORE_INDEX).sum())
            loss_sum += model.loss(task, logits, batch["labels"]).item() * n
            count += n
            if task == "cls":
                preds.update(zip(rows, logits.argmax(-1).tolist()))
            else:  # one row of label log-probabilities per word read
                logprobs = F.log_softmax(logits.float(), dim=-1).cpu()
                keep = batch["labels"].cpu() != IGNORE_INDEX
                preds.update((r, logprobs[b][keep[b]].numpy()) for b, r in enumerate(rows))
        loss_sum, count, preds = dist.gather_eval(loss_sum, count, preds)
        results[task] = score_task(model, features, preds, loss_sum / max(count, 1))
    results["loss"] = sum(results[t]["loss"] for t in data)
    model.train(was_training)
    return results


def fit(model: MultiTaskSentenceTransformer, data: dict[str, TaskSplits], cfg: TrainConfig, run_dir,
        resume: bool = False, recorder=None, cache_dir=None) -> History:
    """Train both tasks together; keep the best checkpoint by ``cfg.monitor``; stop early.

    Args:
        model: the model; it is moved to the configured device.
        data: ``{"cls": TaskSplits, "ner": TaskSplits}``.
        cfg: the training configuration.
        run_dir: where ``best/`` (the best model) and ``last.pt`` (the resumable state) go.
        resume: continue from ``run_dir/last.pt``; the result equals an uninterrupted run.
        recorder: optional ``RunRecorder`` receiving every history record.
        cache_dir: where the frozen prefix's states are cached (None: computed, not kept).

    Returns:
        The ``History``; the model holds the last weights (load ``best/`` for the best).
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # heads were built before; re-seeding keeps dropout reproducible
    add_adapters(model, cfg)  # LoRA's, before the optimizer sees the parameters
    model.to(device).train()
    dtype = autocast_dtype(device, cfg.precision)
    history, start = History(), time.perf_counter()
    history.prefix_from_cache = cache_prefix(model, data, prefix_layers(model, cfg), dtype, cache_dir,
                                             cfg.eval_batch_size)
    history.prefix_seconds = time.perf_counter() - start
    weights = LossWeights(cfg.loss_weighting, cfg.task_weights).to(device)
    ddp_model = dist.wrap(model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    streams = {t: BatchStream(d.train, cfg.batch_size, cfg.seed + i, dist.rank(), dist.world_size())
               for i, (t, d) in enumerate(data.items())}
    sampler = TaskSampler({t: len(d.train) for t, d in data.items()}, cfg.sampling, cfg.temperature, cfg.seed)
    steps_per_epoch = sampler.steps_per_pass({t: len(s) for t, s in streams.items()})
    steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch or steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    optimizer = build_optimizer(model, weights, cfg, device)
    scheduler = linear_schedule(optimizer, math.ceil(cfg.warmup_ratio * total), total)

    parts = {"model": model, "weights": weights, "optimizer": optimizer, "scheduler": scheduler,
             "scaler": scaler, "sampler": sampler}
    step, bad_epochs, start_epoch = 0, 0, 0
    if resume:
        progress = restore_training_state(load_state(run_dir / LAST), parts, streams)
        step, bad_epochs, start_epoch = progress["step"], progress["bad_epochs"], progress["epoch"]
        history.steps, history.epochs = progress["history_steps"], progress["history_epochs"]
        history.best_epoch, history.best_score = progress["best_epoch"], progress["best_score"]
        if recorder:  # drop what was logged after this state was saved: it is about to be redone
            recorder.rewrite(history.steps, history.epochs)
        logger.info("resumed from %s at step %d", run_dir / LAST, step)
    history.resumed_at_step = step

    def save_last(epoch: int) -> None:
        progress = dict(step=step, epoch=epoch, bad_epochs=bad_epochs, history_steps=history.steps,
                        history_epochs=history.epochs, best_epoch=history.best_epoch, best_score=history.best_score)
        if dist.is_main():
            save_state_atomic(training_state(parts, streams, **progress), run_dir / LAST)

    pad_id = model.tokenizer.pad_token_id
    depth = -1  # how many top layers train now (None: all); gradual unfreezing changes it as it goes
    for epoch in range(start_epoch, cfg.epochs):
        epoch_start, seen, running = time.perf_counter(), {t: 0 for t in data}, {t: [] for t in data}
        bar = tqdm(total=steps_per_epoch, initial=step - epoch * steps_per_epoch, desc=f"epoch {epoch + 1}",
                   disable=None if dist.is_main() else True)
        while step < (epoch + 1) * steps_per_epoch:
            if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps:
                save_last(epoch)
                history.interrupted = True
                bar.close()
                return history
            if (now := trainable_now(model, cfg, step, total)) != depth:
                apply_freezing(model, cfg, step, total)
                depth = now
            tasks = sampler.next()
            rows = {task: streams[task].next() for task in tasks}
            batches = {task: collate(data[task].train, rows[task], pad_id) for task in tasks}
            losses = train_step(ddp_model, batches, weights, optimizer, scaler, dtype, cfg.grad_clip)
            scheduler.step()
            step += 1
            history.steps_run += 1
            for task in tasks:
                seen[task] += len(rows[task])
            for t, v in losses.items():
                running[t].append(v)
            bar.update()
            if step % cfg.log_every == 0:
                record = {"step": step, "epoch": epoch + 1, "lr": scheduler.get_last_lr()[0],
                          **{f"train_{t}_loss": float(np.mean(v)) for t, v in running.items() if v}}
                history.steps.append(record)
                if recorder:
                    recorder.log_step(record)
                bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.endswith("loss")})
                running = {t: [] for t in data}
        bar.close()

        val = evaluate(model, {t: d.val for t, d in data.items()}, cfg.eval_batch_size, cfg.precision)
        score = monitor_score(val, cfg.monitor)
        improved = history.best_score is None or score > history.best_score
        cls, ner = val.get("cls", {}), val.get("ner", {})  # a single-task run scores one task
        record = {"epoch": epoch + 1, "step": step, "seconds": time.perf_counter() - epoch_start,
                  "train_examples": seen, "world_size": dist.world_size(), "val_loss": val["loss"],
                  **{f"val_{t}_loss": val[t]["loss"] for t in data},
                  "val_cls_accuracy": cls.get("accuracy"), "val_cls_macro_f1": cls.get("macro_f1"),
                  "val_entity_f1": ner.get("entity_f1"), "val_token_accuracy": ner.get("token_accuracy"),
                  "monitor": cfg.monitor, "score": score, "improved": improved}
        if weights.log_vars is not None:
            record["log_vars"] = {t: v.item() for t, v in weights.log_vars.items()}
        history.epochs.append(record)
        if recorder:
            recorder.log_epoch(record)
        logger.info("epoch %d: val loss %.4f, cls acc %s, entity F1 %s%s", epoch + 1, val["loss"],
                    record["val_cls_accuracy"], record["val_entity_f1"], " (best)" if improved else "")
        if improved:
            history.best_epoch, history.best_score, bad_epochs = epoch + 1, score, 0
            if dist.is_main():
                save_model_atomic(model, run_dir / BEST)
        else:
            bad_epochs += 1
        save_last(epoch + 1)
        dist.barrier()
        if bad_epochs >= cfg.patience:
            history.stopped_early = True
            logger.info("early stop: %d epochs without improvement", bad_epochs)
            break
    history.checkpoint = str(run_dir / BEST)
    return history
