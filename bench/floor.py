"""How far the fast mode could go: its bf16 matrix products alone against the time the fast target allows, and
what int8 activations, the one way to make those products cheaper, do to the embeddings.

The fast target (bench/encode.py) asks for 1.5x the fastest sentence-transformers backend of the encode record
at min cosine >= 0.999. On the record's texts and batch size this script measures:

* the fast mode's pass under the torch profiler: the seconds its linear layers (the bf16 GEMMs) take, against
  the seconds the target allows for the same texts (n / (1.5 x the fastest backend's sentences/s in the
  record, which must come from this CPU));
* the min and mean cosine to sentence-transformers fp32 of the exact mode with int8 fake quantisation (weights
  per output channel, activations per tensor or per token, rounded to int8 and back) on every linear, and on
  every linear but the feed-forward ones: what any int8 GEMM built on these scales would at best give.

    python bench/floor.py           # real model, the encode record's texts; writes results/bench/floor-cpu.json
    python bench/floor.py --tiny    # tiny random model, a few texts (CI)
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from encode import FAST_MODE, MODES, TARGETS, compare, default_ag_test
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
LINEAR_KERNELS = ("mkldnn::_linear_pointwise", "aten::addmm", "aten::mm", "aten::bmm_for_linear")
# int8 schemes: name -> (activation scale per "tensor" or per "token", linears left in fp32 by name)
SCHEMES = {"per-tensor": ("tensor", ()), "per-token": ("token", ()),
           "per-token, feed-forward kept": ("token", ("intermediate.dense", "output.dense"))}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: mtst.assets.resolve_model())")
    p.add_argument("--record", default=str(ROOT / "results" / "bench" / "encode-cpu.json"),
                   help="the encode record whose texts, batch size and fastest backend set the budget")
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    p.add_argument("--tiny", action="store_true", help="tiny random model and fixture texts (seconds)")
    return p.parse_args(argv)


def int8_codes(x: torch.Tensor, per: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as symmetric int8 codes (still float) and their scale: one per tensor, per row (``token``) or per
    output channel (``channel``, for a weight)."""
    scale = x.abs().amax() if per == "tensor" else x.abs().amax(-1, keepdim=True)
    scale = scale.clamp(min=1e-12) / 127
    return (x / scale).round().clamp(-127, 127), scale


def fake_int8(x: torch.Tensor, per: str) -> torch.Tensor:
    """``x`` rounded to int8 and back (``int8_codes``)."""
    codes, scale = int8_codes(x, per)
    return codes * scale


def int8_cosines(model, texts: list[str], ref: np.ndarray, batch_size: int) -> dict:
    """Each scheme's embeddings against ``ref``: the exact mode with its linears fake-quantised."""
    out = {}
    for name, (per, kept) in SCHEMES.items():
        linears = [(n, m) for n, m in model.backbone.named_modules()
                   if isinstance(m, nn.Linear) and not any(n.endswith(k) for k in kept)]
        weights = {m: m.weight.data for _, m in linears}
        hooks = [m.register_forward_pre_hook(lambda _, args, per=per: (fake_int8(args[0], per),))
                 for _, m in linears]
        try:
            for m in weights:
                m.weight.data = fake_int8(weights[m], "channel")
            emb = model.encode(texts, batch_size=batch_size, show_progress_bar=False)
        finally:
            for m, w in weights.items():
                m.weight.data = w
            for h in hooks:
                h.remove()
        out[name] = {"linears_quantised": len(linears), **compare(emb, ref)}
        print(f"int8 {name:30s} min cos {out[name]['min_cosine']:.5f}", file=sys.stderr)
    return out


def gemm_seconds(model, texts: list[str], batch_size: int) -> dict:
    """One fast-mode pass under the profiler: its linear kernels' seconds and the whole pass's."""
    from mtst.attention import use_sdpa

    _, autocast, _, attention = MODES[FAST_MODE]
    use_sdpa(model.backbone, attention == "sdpa")
    model.encode(texts[: 2 * batch_size], batch_size=batch_size, autocast_dtype=autocast)  # warm-up, packing
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model.encode(texts, batch_size=batch_size, autocast_dtype=autocast, show_progress_bar=False)
    use_sdpa(model.backbone, False)
    events = prof.key_averages()
    linears = [e for e in events if e.key in LINEAR_KERNELS]
    linear = sum(e.self_cpu_time_total for e in linears) / 1e6
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    return {"mode": FAST_MODE, "linear_seconds": linear, "profiled_seconds": total,
            "linear_share": linear / total, "kernels": [e.key for e in linears]}


def int8_gemm(tokens: int, hidden: int, repeats: int = 20) -> dict:
    """Median seconds of one feed-forward-shaped product (``tokens x hidden`` by ``hidden x 4 hidden``) in bf16
    with a packed weight (what the fast mode runs) and in int8 through oneDNN's quantised linear, where it exists."""
    x, w = torch.randn(tokens, hidden), torch.randn(4 * hidden, hidden) / hidden ** 0.5
    bf16 = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16())
    runs = {"bf16": lambda: torch.ops.mkldnn._linear_pointwise(x.bfloat16(), bf16, None, "none", [], "")}
    if hasattr(torch.ops, "onednn") and hasattr(torch.ops.onednn, "qlinear_pointwise"):
        (xq, x_scale), (wq, w_scale) = int8_codes(x, "tensor"), int8_codes(w, "channel")
        xq, x_scale, w_scale = xq.to(torch.int8), x_scale.item(), w_scale.squeeze(1)
        wq = torch.ops.onednn.qlinear_prepack(wq.to(torch.int8), [tokens, hidden])
        w_zero = torch.zeros(4 * hidden, dtype=torch.long)
        runs["int8"] = lambda: torch.ops.onednn.qlinear_pointwise(xq, x_scale, 0, wq, w_scale, w_zero, None, 1.0, 0,
                                                                  torch.bfloat16, "none", [], "")
    seconds = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            seconds[name] = statistics.median(times)
    return {"tokens": tokens, "hidden": hidden, "repeats": repeats, "seconds": seconds,
            "speedup_vs_bf16": seconds["bf16"] / seconds["int8"] if "int8" in seconds else None}


def budget(record: dict, linear_seconds: float, n: int, cpu: str) -> dict:
    """The seconds the fast target allows for ``n`` texts (1.5x the encode record's fastest sentence-transformers
    backend) and the share of them the bf16 products alone take; they compare only if ``cpu`` ran the record."""
    best = record["targets"]["best_st_sentences_per_s"]
    seconds = n / (TARGETS["fast_vs_best_st"] * best)
    return {"best_st_backend": record["targets"]["best_st_backend"], "best_st_sentences_per_s": best,
            "seconds": seconds, "linear_share_of_budget": linear_seconds / seconds,
            "same_cpu": record["environment"]["cpu"] == cpu}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from sentence_transformers import SentenceTransformer as STModel

    from mtst import SentenceTransformer
    from mtst.assets import resolve_model
    from mtst.data import read_ag_news
    from mtst.runs import environment

    record = None if args.tiny else json.loads(Path(args.record).read_text())
    if args.tiny:
        from mtst.assets import build_tiny_model
        from mtst.config import TINY_DATA

        folder = str(build_tiny_model(Path(tempfile.gettempdir()) / "mtst-bench-tiny-mpnet"))
        texts_path, n, batch_size = TINY_DATA / "ag_news" / "test.csv", 40, 8
    else:
        folder = str(resolve_model(args.model))
        texts_path = default_ag_test(None)
        n, batch_size = record["settings"]["n"], record["settings"]["batch_size"]
    texts = [e.text for e in read_ag_news(texts_path)][:n]
    ref = STModel(folder, device="cpu").encode(texts, batch_size=batch_size)
    model = SentenceTransformer.from_pretrained(folder)
    env = environment(torch.device("cpu"))
    out = {"bench": "floor", "tiny": args.tiny, "environment": env, "budget": None,
           "thresholds": {k: TARGETS[k] for k in ("fast_vs_best_st", "fast_min_cosine")},
           "settings": {"model": folder, "texts": str(texts_path), "n": len(texts), "batch_size": batch_size,
                        "record": None if args.tiny else args.record,
                        "int8": "fake quantisation: weights per output channel, activations per tensor or per "
                                "token, symmetric, rounded to int8 and back, on the exact mode; cosines against "
                                "sentence-transformers fp32"},
           "gemm": gemm_seconds(model, texts, batch_size), "int8": int8_cosines(model, texts, ref, batch_size),
           "int8_gemm": int8_gemm(batch_size * round(np.mean([len(t) for t in model.tokenize(texts).input_ids])),
                                  model.hidden_size)}
    if record:
        out["budget"] = budget(record, out["gemm"]["linear_seconds"], len(texts), env["cpu"])
    folder_out = Path(args.out)
    folder_out.mkdir(parents=True, exist_ok=True)
    path = folder_out / f"floor-{'tiny-' if args.tiny else ''}cpu.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
