"""Encode speed: mtst ``SentenceTransformer.encode`` against ``sentence_transformers`` in the same run.

Both embed the same first ``--n`` AG News test texts at the same batch size. Each contender is
timed ``--repeats`` times, in an order that rotates every round so drift (thermal, other load)
hits them alike; sentences/s is the median. Every mode of ours is compared with fp32
sentence-transformers embeddings: max abs diff and min cosine over all texts.

    python bench/encode.py                 # real model, 2,000 texts, CPU or CUDA
    python bench/encode.py --tiny          # tiny random model, a few batches (CI)

Writes ``results/bench/encode-<device>.json`` (``encode-tiny-<device>.json`` with ``--tiny``,
``encode-<device>-<tag>.json`` with ``--tag``: side experiments, e.g. ``--modes exact,exact-eager``).
"""

import argparse
import copy
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# Our modes: (weights dtype, autocast dtype, counts as exact, attention). "exact" must match fp32 ST
# to 1e-5; "exact-eager" is the same with the stock attention, to show what SDPA brings.
MODES = {
    "exact": (torch.float32, None, True, "sdpa"),
    "exact-eager": (torch.float32, None, True, "eager"),
    "bf16-autocast": (torch.float32, torch.bfloat16, False, "sdpa"),
    "bf16": (torch.bfloat16, None, False, "sdpa"),
    "fp16-autocast": (torch.float32, torch.float16, False, "sdpa"),
    "fp16": (torch.float16, None, False, "sdpa"),
}
DEFAULT_MODES = {"cpu": "exact,bf16-autocast", "cuda": "exact,bf16-autocast,bf16,fp16"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: mtst.assets.resolve_model())")
    p.add_argument("--data", help="AG News test.csv (default: $MTST_DATA_DIR or ../shared/data)")
    p.add_argument("--n", type=int, default=2000, help="first N texts of test.csv")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per contender")
    p.add_argument("--modes", help=f"comma list of {sorted(MODES)}; default per device {DEFAULT_MODES}")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    p.add_argument("--tag", help="suffix of the result file (side experiments stay out of the summary)")
    p.add_argument("--tiny", action="store_true", help="tiny random model and fixture texts (seconds)")
    return p.parse_args(argv)


def default_ag_test(data: str | None) -> Path:
    import os

    if data:
        return Path(data)
    folder = os.environ.get("MTST_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    return Path(folder) / "ag_news" / "test.csv"


def timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def compare(ours: np.ndarray, ref: np.ndarray) -> dict:
    """Max abs diff and cosines of each row of ``ours`` vs ``ref`` (both (N, H), unnormalised)."""
    ours, ref = ours.astype(np.float64), ref.astype(np.float64)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    return {"max_abs_diff": float(np.abs(ours - ref).max()), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean())}


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from sentence_transformers import SentenceTransformer as STModel

    from mtst import SentenceTransformer
    from mtst.assets import resolve_model
    from mtst.attention import use_sdpa
    from mtst.data import read_ag_news
    from mtst.runs import environment

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        from mtst.assets import build_tiny_model
        from mtst.config import TINY_DATA

        folder = str(build_tiny_model(Path(tempfile.gettempdir()) / "mtst-bench-tiny-mpnet"))
        texts_path = TINY_DATA / "ag_news" / "test.csv"
        n, repeats = min(args.n, 96), 1
    else:
        folder = str(resolve_model(args.model))
        texts_path = default_ag_test(args.data)
        n, repeats = args.n, args.repeats
    texts = [e.text for e in read_ag_news(texts_path)][:n]
    modes = (args.modes or DEFAULT_MODES.get(device.type, "exact,bf16-autocast")).split(",")
    bs = args.batch_size
    encode_kw = {"batch_size": bs, "show_progress_bar": False}
    # Ours returns what ST returns from this folder: L2-normalised when it has a Normalize module.
    modules = json.loads((Path(folder) / "modules.json").read_text())
    normalize = any(m["type"].endswith("Normalize") for m in modules)

    # The baseline exactly as a user gets it, and fp32 ST embeddings as the accuracy reference
    # (the baseline's own timed output when it loaded in fp32: its result is deterministic).
    st = STModel(folder, device=str(device))
    st_dtype = next(st.parameters()).dtype
    reference = None
    if st_dtype != torch.float32:
        st_ref = STModel(folder, device=str(device), model_kwargs={"dtype": torch.float32})
        reference = st_ref.encode(texts, convert_to_numpy=True, **encode_kw)
        del st_ref
        gc.collect()

    model = SentenceTransformer.from_pretrained(folder).to(device).eval()
    contenders = {"sentence-transformers": lambda xs: st.encode(xs, convert_to_numpy=True, **encode_kw)}
    copies = {(torch.float32, "sdpa"): model}
    for mode in modes:
        weights, autocast, _, attention = MODES[mode]
        if (weights, attention) not in copies:  # whole model in half precision, or the stock attention
            m = copies[weights, attention] = copy.deepcopy(model).to(weights)
            use_sdpa(m.backbone, attention == "sdpa")
        m = copies[weights, attention]
        contenders[mode] = lambda xs, m=m, a=autocast: m.encode(xs, autocast_dtype=a, normalize=normalize,
                                                                **encode_kw)

    # Warm up each contender (allocator, oneDNN / cuBLAS plans) on a slice, then time in rounds.
    for fn in contenders.values():
        fn(texts[: 2 * bs])
    seconds = {name: [] for name in contenders}
    outputs = {}
    names = list(contenders)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            elapsed, outputs[name] = timed(lambda fn=contenders[name]: fn(texts), device)
            seconds[name].append(elapsed)
            print(f"round {r + 1}: {name:22s} {len(texts) / elapsed:8.1f} sentences/s", file=sys.stderr)

    if reference is None:
        reference = outputs["sentence-transformers"]
    base_rate = len(texts) / statistics.median(seconds["sentence-transformers"])
    results = {"sentence-transformers": {
        "dtype": str(st_dtype).removeprefix("torch."), "seconds": seconds["sentence-transformers"],
        "sentences_per_s": base_rate, **compare(outputs["sentence-transformers"], reference)}}
    for mode in modes:
        weights, autocast, exact, attention = MODES[mode]
        rate = len(texts) / statistics.median(seconds[mode])
        results[mode] = {"weights": str(weights).removeprefix("torch."),
                         "autocast": str(autocast).removeprefix("torch.") if autocast else None,
                         "attention": attention,
                         "exact": exact, "seconds": seconds[mode], "sentences_per_s": rate,
                         "speedup_vs_st": rate / base_rate, **compare(outputs[mode], reference)}

    lengths = [len(ids) for ids in model.tokenize(texts).input_ids]
    record = {
        "bench": "encode", "tiny": args.tiny, "device": device.type,
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else environment()["cpu"],
        "environment": environment(device),
        "settings": {"model": folder, "texts": str(texts_path), "n": len(texts), "batch_size": bs,
                     "repeats": repeats, "normalize": normalize,
                     "threads": torch.get_num_threads(),
                     "mean_tokens": float(np.mean(lengths)), "max_tokens": int(max(lengths)),
                     "rate": "n / median seconds of the timed passes; each pass includes tokenisation",
                     "accuracy_reference": "sentence-transformers in fp32 on the same folder"},
        "baseline": "sentence-transformers",
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"encode-{'tiny-' if args.tiny else ''}{device.type}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    for name, res in results.items():
        print(f"{name:22s} {res['sentences_per_s']:8.1f} sentences/s  x{res.get('speedup_vs_st', 1.0):.2f}  "
              f"max|diff| {res['max_abs_diff']:.2e}  min cos {res['min_cosine']:.6f}")
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
