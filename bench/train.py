"""Training speed: mtst's ``train_step`` against the reference design's loop, same data, same run.

Ours: pre-tokenised features, length-bucketed batches padded to their longest row, ``train_step``
(one AG News batch and one CoNLL batch per step, each backpropagated on its own), SDPA attention,
bf16 autocast on a GPU. The reference: ``bench/reference_loop.py`` (tokenises in ``forward``, CoNLL
padded to 128, fp16 + GradScaler on a GPU, fp32 on the CPU, batch 16).

Each configuration runs ``--warmup`` steps, then ``--steps`` timed steps. Reported: samples/s,
real (non-pad) and processed tokens/s, padding fraction, model TFLOP/s and MFU
(6 x non-embedding params x processed tokens/s / device bf16 peak), peak memory, and the projected
wall time of one reference-protocol epoch (9,600 AG News + 14,041 CoNLL examples): the epoch's
processed tokens, counted exactly from the data under each design's batching, divided by the
measured processed tokens/s.

    python bench/train.py                       # real model and data, CPU or CUDA
    python bench/train.py --batch-sizes 32,128  # ours at several batch sizes per task
    python bench/train.py --tiny                # tiny random model, fixture data (CI)

Writes ``results/bench/train-<device>.json`` (``train-tiny-<device>.json`` with ``--tiny``).
"""

import argparse
import dataclasses
import gc
import json
import logging
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from reference_loop import MAX_LENGTH, build_reference, reference_evaluate, reference_step

ROOT = Path(__file__).resolve().parents[1]
# Dense bf16 peak TFLOP/s by device name; H200 as the issue gives it (790), H100 SXM 989.
PEAK_BF16_TFLOPS = {"H200": 790.0, "H100": 989.0, "A100": 312.0}
EPOCH_EXAMPLES = {"cls": 9_600, "ner": 14_041}  # the reference protocol's train rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: mtst.assets.resolve_model())")
    p.add_argument("--data-dir", help="folder laid out like shared/data (default: $MTST_DATA_DIR or ../shared/data)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-sizes", help="ours, examples per task batch (default: 16 on CPU, 32,128,256,512 on CUDA)")
    p.add_argument("--reference-batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, help="timed steps per configuration (10 CPU, 30 CUDA; 200 with --real)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: 2 CPU, 5 CUDA; 5 with --real)")
    p.add_argument("--precision", default="auto", help="ours: auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--attention", default="sdpa", choices=("sdpa", "eager"))
    p.add_argument("--also-eager", action="store_true", help="ours with eager attention too, at the first batch size")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    p.add_argument("--tiny", action="store_true", help="tiny random model and fixture data (seconds)")
    p.add_argument("--real", action="store_true", help="measured, not projected: --steps (default 200) per "
                   "configuration with validation scores, and one real epoch of the cpu profile")
    return p.parse_args(argv)


def device_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        from mtst.runs import environment

        return environment()["cpu"], None
    name = torch.cuda.get_device_name(device)
    return name, next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def non_embedding_params(backbone: torch.nn.Module, heads: torch.nn.Module) -> int:
    """Parameters that cost 6 FLOPs per token in training (embedding lookups cost none)."""
    embed = {id(p) for p in backbone.get_input_embeddings().parameters()}
    embed |= {id(p) for n, p in backbone.named_parameters() if "position_embeddings" in n}
    return sum(p.numel() for p in backbone.parameters() if id(p) not in embed) + \
        sum(p.numel() for p in heads.parameters())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS so far


def summarise(name: str, times: list[float], samples: int, real: int, processed: int, epoch_tokens: int,
              n_params: int, peak: float | None, device: torch.device, extra: dict) -> dict:
    seconds = sum(times)
    processed_rate = processed / seconds
    tflops = 6 * n_params * processed_rate / 1e12
    row = {
        "name": name, **extra, "steps": len(times), "seconds": seconds,
        "step_seconds_median": statistics.median(times),
        "samples_per_s": samples / seconds, "real_tokens_per_s": real / seconds,
        "processed_tokens_per_s": processed_rate, "padding_fraction": 1 - real / processed,
        "model_tflops": tflops, "mfu": tflops / peak if peak else "n/a",
        "useful_tflops": 6 * n_params * real / seconds / 1e12,
        "peak_memory_mb": peak_memory_mb(device),
        "epoch_processed_tokens": epoch_tokens, "epoch_seconds": epoch_tokens / processed_rate,
    }
    mfu = f"{row['mfu']:.1%}" if peak else "n/a"
    print(f"{name:28s} {row['samples_per_s']:8.1f} samples/s  {row['real_tokens_per_s']:9.0f} real tok/s  "
          f"pad {row['padding_fraction']:.0%}  {tflops:6.2f} TFLOP/s  MFU {mfu}  "
          f"epoch {row['epoch_seconds']:8.1f} s", file=sys.stderr)
    return row


def load_train_data(data_dir: Path, seed: int) -> tuple[list, list]:
    """The reference protocol's train rows: 9,600 AG News texts (a seeded sample) and all of CoNLL
    train. Read straight from the files, so the bench needs no scikit-learn.
    """
    from mtst.data import ag_news_train_file, read_ag_news, read_conll

    ag = read_ag_news(ag_news_train_file(data_dir))
    keep = np.random.default_rng(seed).permutation(len(ag))[: EPOCH_EXAMPLES["cls"]]
    return [ag[i] for i in sorted(keep)], read_conll(Path(data_dir) / "conll2003" / "train.txt")


def run_ours(folder: str, data, batch_size: int, attention: str, args, device, peak, n_steps, n_warmup,
             precision: str | None = None, model_cfg=None, train_cfg=None, val=None) -> dict:
    """Time ``n_steps`` of ``train_step`` (after ``n_warmup``), every parameter training (``train_cfg``:
    learning rates and the rest, default ``TrainConfig()``); with ``val`` (AG News rows, CoNLL
    sentences), score the model on them afterwards."""
    from mtst.config import ModelConfig, TrainConfig
    from mtst.distributed import autocast_dtype
    from mtst.features import bucket_batches, classification_features, collate, ner_features
    from mtst.model import MultiTaskSentenceTransformer
    from mtst.train import LossWeights, build_optimizer, evaluate, train_step

    ag, conll = data
    precision = precision or args.precision
    torch.manual_seed(args.seed)
    model_cfg = dataclasses.replace(model_cfg or ModelConfig(), model_name=folder, attention=attention)
    model = MultiTaskSentenceTransformer.from_config(model_cfg)
    model.to(device).train()
    start = time.perf_counter()

    def featurise(tokenizer, ner_labels, ag, conll):
        return {"cls": classification_features(tokenizer, ag, MAX_LENGTH),
                "ner": ner_features(tokenizer, conll, ner_labels, MAX_LENGTH)}

    features = featurise(model.tokenizer, model.ner_labels, ag, conll)
    prep_seconds = time.perf_counter() - start
    cfg = dataclasses.replace(train_cfg or TrainConfig(), batch_size=batch_size, device=device.type,
                              precision=precision, trainable_layers=None, freeze="none")
    weights = LossWeights(cfg.loss_weighting, cfg.task_weights).to(device)
    optimizer = build_optimizer(model, weights, cfg, device)
    dtype = autocast_dtype(device, cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    rng = np.random.default_rng(args.seed)
    batches = {t: bucket_batches(f.lengths, batch_size, rng) for t, f in features.items()}
    # What one epoch processes under this batching: every row padded to its batch's longest.
    epoch_tokens = sum(len(rows) * max(f.lengths[r] for r in rows)
                       for t, f in features.items() for rows in batches[t])
    pad_id = model.tokenizer.pad_token_id
    reset_peak(device)
    times, samples, real, processed = [], 0, 0, 0
    for step in range(n_warmup + n_steps):
        collated = {t: collate(features[t], batches[t][step % len(batches[t])], pad_id) for t in features}
        sync(device)
        t0 = time.perf_counter()
        train_step(model, collated, weights, optimizer, scaler, dtype, cfg.grad_clip)
        sync(device)
        if step >= n_warmup:
            times.append(time.perf_counter() - t0)
            samples += sum(len(b["labels"]) for b in collated.values())
            real += sum(int(b["attention_mask"].sum()) for b in collated.values())
            processed += sum(b["input_ids"].numel() for b in collated.values())
    n_params = non_embedding_params(model.encoder.backbone, model.heads)
    label = dtype_name(dtype)
    row = summarise(f"mtst bs{batch_size} {attention} {label}", times, samples, real, processed, epoch_tokens,
                    n_params, peak, device, {"design": "mtst", "batch_size": batch_size, "attention": attention,
                                             "precision": label, "pretokenise_seconds": prep_seconds,
                                             "non_embedding_params": n_params})
    if val is not None:
        scores = evaluate(model, featurise(model.tokenizer, model.ner_labels, *val), cfg.eval_batch_size,
                          precision)
        row["val"] = {"after_steps": n_warmup + n_steps, "ag_news_accuracy": scores["cls"]["accuracy"],
                      "conll_entity_f1": scores["ner"]["entity_f1"],
                      "conll_coarse_token_accuracy": scores["ner"]["coarse_token_accuracy"]}
    del model, optimizer, weights
    return row


def run_reference(folder: str, data, args, device, peak, n_steps, n_warmup, val=None) -> dict:
    """Time ``n_steps`` of the reference loop (after ``n_warmup``); with ``val``, score it on them."""
    from mtst.data import to_coarse

    ag, conll = data
    bs = args.reference_batch_size
    torch.manual_seed(args.seed)
    coarse = ("O", "PER", "ORG", "LOC", "MISC")  # the reference design's five NER labels
    model, optimizer, scaler, use_fp16 = build_reference(folder, 4, len(coarse), device)
    rng = np.random.default_rng(args.seed)
    ag_order, conll_order = rng.permutation(len(ag)), rng.permutation(len(conll))

    def batch(order, i):
        return [order[(i * bs + j) % len(order)] for j in range(bs)]

    # One epoch: AG batches padded to their longest text, every CoNLL row to 128.
    ag_lengths = np.minimum([len(x) for x in model.tokenizer([e.text for e in ag])["input_ids"]], MAX_LENGTH)
    epoch_tokens = sum(len(c) * int(ag_lengths[c].max()) for c in np.array_split(
        ag_order, math.ceil(len(ag) / bs))) + len(conll) * MAX_LENGTH
    reset_peak(device)
    times, samples, real, processed = [], 0, 0, 0
    for step in range(n_warmup + n_steps):
        cls_rows, ner_rows = batch(ag_order, step), batch(conll_order, step)
        cls_batch = ([ag[r].text for r in cls_rows], [ag[r].label for r in cls_rows])
        ner_batch = ([list(conll[r].tokens) for r in ner_rows],
                     [[coarse.index(t) for t in to_coarse(conll[r].tags)] for r in ner_rows])
        sync(device)
        t0 = time.perf_counter()
        out = reference_step(model, optimizer, scaler, cls_batch, ner_batch, use_fp16)
        sync(device)
        if step >= n_warmup:
            times.append(time.perf_counter() - t0)
            samples += 2 * bs
            real += out["real_tokens"]
            processed += out["padded_tokens"]
    n_params = non_embedding_params(model.backbone, torch.nn.ModuleList([model.cls_head, model.ner_head]))
    row = summarise(f"reference bs{bs}", times, samples, real, processed, epoch_tokens, n_params, peak, device,
                    {"design": "reference", "batch_size": bs, "attention": "eager",
                     "precision": "fp16" if use_fp16 else "fp32", "non_embedding_params": n_params})
    if val is not None:
        scores = reference_evaluate(model, [e.text for e in val[0]], [e.label for e in val[0]], val[1], coarse)
        row["val"] = {"after_steps": n_warmup + n_steps, **scores}
    del model, optimizer
    return row


def run_profile_epoch(profile: str, overrides: list[str], seed: int, device) -> dict:
    """One real epoch of ``profile``'s training run (its config, ``epochs=1``) from an empty prefix
    cache: the epoch's seconds as ``fit`` records them, the prefix caching before it, samples/s and
    real tokens/s, and the validation scores ``fit`` computes after the epoch."""
    from mtst.config import load_configs
    from mtst.distributed import autocast_dtype
    from mtst.experiment import build_model, build_task_data
    from mtst.train import evaluate, fit

    model_cfg, data_cfg, train_cfg = load_configs(profile, None, [*overrides, "train.epochs=1", f"train.seed={seed}"])
    model = build_model(model_cfg, seed)
    start = time.perf_counter()
    data, _ = build_task_data(model, data_cfg)
    prep_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        history = fit(model, data, train_cfg, Path(tmp) / "run", cache_dir=Path(tmp) / "prefix")
    scores = evaluate(model, {t: d.val for t, d in data.items()}, train_cfg.eval_batch_size, train_cfg.precision)
    epoch, examples = history.epochs[0], history.epochs[0]["train_examples"]
    # Each task's examples in the epoch x its train rows' mean length: exact when every row is read
    # equally often (CoNLL, once), a mean otherwise (``both`` cycles the smaller AG News sample).
    real = sum(n * statistics.fmean(data[t].train.lengths) for t, n in examples.items())
    row = {"name": f"mtst {profile} profile epoch", "design": "mtst", "profile": profile,
           "trainable_layers": train_cfg.trainable_layers, "batch_size": train_cfg.batch_size,
           "precision": dtype_name(autocast_dtype(device, train_cfg.precision)), "steps": epoch["step"],
           "epoch_seconds": epoch["seconds"], "prefix_seconds": history.prefix_seconds,
           "pretokenise_seconds": prep_seconds, "samples_per_s": sum(examples.values()) / epoch["seconds"],
           "real_tokens_per_s": real / epoch["seconds"], "examples": examples,
           "val": {"after_steps": epoch["step"], "ag_news_accuracy": scores["cls"]["accuracy"],
                   "conll_entity_f1": scores["ner"]["entity_f1"],
                   "conll_coarse_token_accuracy": scores["ner"]["coarse_token_accuracy"]}}
    print(f"{row['name']:28s} {row['samples_per_s']:8.1f} samples/s  {row['real_tokens_per_s']:9.0f} real tok/s  "
          f"epoch {row['epoch_seconds']:8.1f} s (+ {row['prefix_seconds']:.1f} s caching)", file=sys.stderr)
    return row


def dtype_name(dtype) -> str:
    """An autocast dtype as the records name it: ``bfloat16``, ``float16``, or ``fp32`` for none."""
    return str(dtype).removeprefix("torch.") if dtype else "fp32"


def measured(args, device) -> dict:
    """``--real``: every training configuration timed on the reference protocol's data, each with its
    validation scores: ours fully fine-tuned in fp32 and in bf16 and the reference loop, over
    ``--steps`` steps each; and one real epoch of the cpu profile (the cached-prefix fine-tune)."""
    from mtst.assets import resolve_model
    from mtst.config import load_configs
    from mtst.data import load_ag_news, load_conll

    profile, overrides = ("smoke", ["train.trainable_layers=1"]) if args.tiny else ("cpu", [])
    if args.data_dir and not args.tiny:
        overrides.append(f"data.data_dir={args.data_dir}")
    model_cfg, data_cfg, train_cfg = load_configs(profile, None, overrides)
    folder = str(resolve_model(args.model or model_cfg.model_name))
    n_steps, n_warmup = (args.steps or 200, 5 if args.warmup is None else args.warmup)
    if args.tiny:
        n_steps, n_warmup = min(n_steps, 3), min(n_warmup, 1)
    ag, conll = load_ag_news(data_cfg), load_conll(data_cfg)
    data, val = (ag.train, conll.train), (ag.val, conll.val)
    device_name, peak = device_peak(device)
    settings = {"profile": profile, "model": folder, "device_name": device_name,
                "train_rows": {"ag_news": len(ag.train), "conll": len(conll.train)},
                "val_rows": {"ag_news": len(ag.val), "conll": len(conll.val)}, "steps": n_steps, "warmup": n_warmup,
                "max_length": MAX_LENGTH,
                "epoch": "timed-step rows: the epoch's processed tokens under each design's batching and padding "
                         "(counted exactly from the train rows) / the processed tokens/s of the timed steps; the "
                         "profile row: one real epoch, timed by fit()",
                "val": "each row's validation scores after its own steps (max length 128)"}
    configurations = {
        **{f"mtst {p}": lambda p=p: run_ours(folder, data, train_cfg.batch_size, "sdpa", args, device, peak, n_steps,
                                            n_warmup, precision=p, model_cfg=model_cfg, train_cfg=train_cfg,
                                            val=val)
           for p in ("fp32", "bf16")},
        "reference": lambda: run_reference(folder, data, args, device, peak, n_steps, n_warmup, val=val),
        "profile epoch": lambda: run_profile_epoch(profile, overrides, args.seed, device)}
    # A long run on a CPU may be interrupted: each finished configuration is kept in a partial record
    # (same settings, same CPU) and not run again; each row says when it was measured.
    partial = Path(args.out) / f"train-real-{'tiny-' if args.tiny else ''}{device.type}.partial.json"
    kept = json.loads(partial.read_text()) if partial.is_file() else {}
    done = kept.get("rows", {}) if kept.get("settings") == settings else {}
    for name, run in configurations.items():
        if name not in done:
            done[name] = {**run(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"settings": settings, "rows": done}, indent=2) + "\n")
    *rows, reference, epoch = (done[name] for name in configurations)
    for row in (*rows, epoch):
        row["speedup_vs_reference"] = reference["epoch_seconds"] / row["epoch_seconds"]
        row["samples_per_s_ratio_vs_reference"] = row["samples_per_s"] / reference["samples_per_s"]
    epoch["speedup_vs_reference_with_caching"] = reference["epoch_seconds"] / (epoch["epoch_seconds"]
                                                                               + epoch["prefix_seconds"])
    partial.unlink()
    return {"rows": [*rows, reference, epoch], "settings": settings}


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from mtst.assets import resolve_model
    from mtst.runs import environment

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.real:
        result = measured(args, device)
        record = {"bench": "train-real", "tiny": args.tiny, "device": device.type,
                  "device_name": result["settings"]["device_name"], "environment": environment(device),
                  "settings": result["settings"], "results": result["rows"]}
        path = Path(args.out) / f"train-real-{'tiny-' if args.tiny else ''}{device.type}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")
        return record
    cpu = device.type == "cpu"
    n_steps = args.steps or (10 if cpu else 30)
    n_warmup = args.warmup if args.warmup is not None else (2 if cpu else 5)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("16" if cpu else "32,128,256,512")).split(",")]
    if args.tiny:
        from mtst.assets import build_tiny_model
        from mtst.config import TINY_DATA

        folder = str(build_tiny_model(Path(tempfile.gettempdir()) / "mtst-bench-tiny-mpnet"))
        data_dir = TINY_DATA
        n_steps, n_warmup = min(n_steps, 3), min(n_warmup, 1)
        batch_sizes = [min(b, 8) for b in batch_sizes]
    else:
        folder = str(resolve_model(args.model))
        data_dir = Path(args.data_dir or os.environ.get("MTST_DATA_DIR") or ROOT.parent / "shared" / "data")
    data = load_train_data(data_dir, args.seed)
    device_name, peak = device_peak(device)

    rows = []
    for bs in batch_sizes:
        rows.append(run_ours(folder, data, bs, args.attention, args, device, peak, n_steps, n_warmup))
    if args.also_eager:
        rows.append(run_ours(folder, data, batch_sizes[0], "eager", args, device, peak, n_steps, n_warmup))
    reference = None
    if not args.no_reference:
        reference = run_reference(folder, data, args, device, peak, n_steps, n_warmup)
        rows.append(reference)
        for row in rows:
            if row["design"] == "mtst":
                row["speedup_vs_reference"] = reference["epoch_seconds"] / row["epoch_seconds"]
                row["samples_per_s_ratio_vs_reference"] = row["samples_per_s"] / reference["samples_per_s"]

    record = {
        "bench": "train", "tiny": args.tiny, "device": device.type, "device_name": device_name,
        "peak_bf16_tflops": peak if peak else "n/a", "environment": environment(device),
        "settings": {"model": folder, "data_dir": str(data_dir), "train_rows": {"cls": len(data[0]),
                     "ner": len(data[1])}, "steps": n_steps, "warmup": n_warmup, "precision": args.precision,
                     "max_length": MAX_LENGTH, "epoch_examples": EPOCH_EXAMPLES,
                     "speedup": "reference epoch_seconds / ours epoch_seconds (same examples, each design's "
                                "batching and padding, measured processed tokens/s)",
                     "mfu": "6 x non-embedding params x processed tokens/s / peak_bf16_tflops",
                     "peak_memory": "CUDA max allocated per configuration" if not cpu
                                    else "process peak RSS so far (CPU: cumulative over configurations)"},
        "results": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"train-{'tiny-' if args.tiny else ''}{device.type}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
