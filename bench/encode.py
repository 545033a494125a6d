"""Encode speed and quality: mtst's modes against sentence-transformers and its ONNX / OpenVINO backends, one run.

Every contender embeds the same first ``--n`` AG News test texts at the same batch size, tokenisation
included. Plain sentence-transformers (torch) and our modes run in this process; the peer backends run in
their own environments (``bash bench/peers.sh`` makes them) as worker processes (bench/peer.py) that load
once and encode on request, so all contenders are timed in the same rounds: ``--repeats`` rounds, the order
rotating every round so drift (thermal, other load) hits them alike; sentences/s is n / median seconds.

Quality, for every contender: max abs diff and min cosine of its embeddings against fp32 sentence-transformers
over all texts. Downstream, for each of our modes (once, not timed): the shipped heads' AG News accuracy and
CoNLL-2003 entity F1 on the official test sets, by ``mtst.train.evaluate`` with the encoder in that mode.

    bash bench/peers.sh                    # once: .venv-openvino, .venv-onnx
    python bench/encode.py                 # real model, 2,000 texts, peers whose environment exists
    python bench/encode.py --tiny          # tiny random model, a few batches, no peers (CI)

Writes ``results/bench/encode-<device>.json`` (``encode-tiny-<device>.json`` with ``--tiny``,
``encode-<device>-<tag>.json`` with ``--tag``: side runs, e.g. ``--modes exact,exact-sdpa`` or another CPU, shown
under the main record in ``summary.md``).
"""

import argparse
import copy
import dataclasses
import gc
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "sentence-transformers"

# Our modes: (weights dtype, autocast dtype, counts as exact, attention). "exact" must match fp32 ST
# to 1e-5: the stock attention, as ST runs it; "exact-sdpa" is the same with SDPA, to show what it brings
# (and that on long texts its fp32 rounding is further from ST than 1e-5).
MODES = {
    "exact": (torch.float32, None, True, "eager"),
    "exact-sdpa": (torch.float32, None, True, "sdpa"),
    "bf16-autocast": (torch.float32, torch.bfloat16, False, "sdpa"),
    "bf16": (torch.bfloat16, None, False, "sdpa"),
    "fp16-autocast": (torch.float32, torch.float16, False, "sdpa"),
    "fp16": (torch.float16, None, False, "sdpa"),
}
DEFAULT_MODES = {"cpu": "exact,bf16-autocast,bf16", "cuda": "exact,bf16-autocast,bf16,fp16"}
FAST_MODE = "bf16-autocast"  # the mode the demo and the targets call "fast" (where the CPU has bf16)
NO_BF16 = ("this CPU has neither AVX512-BF16 nor AMX, so bf16 matrix products are emulated and slower than fp32: "
           "the demo runs the exact mode here, so the fast mode is exact, and the bf16 modes run only when --modes "
           "asks for them")
# Peer backends: name -> (environment folder, bench/peer.py --backend, --variant).
PEERS = {
    "st-openvino-fp32": (".venv-openvino", "openvino", "fp32"),
    "st-openvino-int8": (".venv-openvino", "openvino", "int8"),
    "st-onnx-fp32": (".venv-onnx", "onnx", "fp32"),
    "st-onnx-int8": (".venv-onnx", "onnx", "int8"),
}
TARGETS = {"fast_vs_best_st": 1.5, "fast_min_cosine": 0.999, "fast_downstream_points": 0.1,
           "exact_vs_st": 1.3, "exact_max_abs_diff": 1e-5}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: mtst.assets.resolve_model())")
    p.add_argument("--artifact", default=str(ROOT / "results" / "runs" / "cpu-s42" / "artifact"),
                   help="trained model whose heads score the downstream tasks (default: the shipped one)")
    p.add_argument("--data", help="AG News test.csv (default: $MTST_DATA_DIR or ../shared/data)")
    p.add_argument("--n", type=int, default=2000, help="first N texts of test.csv")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per contender")
    p.add_argument("--modes", help=f"comma list of {sorted(MODES)}; default per device {DEFAULT_MODES}")
    p.add_argument("--peers", default="auto",
                   help=f"comma list of {sorted(PEERS)}, 'none', or 'auto' (those whose environment exists; "
                        "none with --tiny)")
    p.add_argument("--downstream", default="auto",
                   help="our modes to score on the test sets: comma list, 'none', or 'auto' (every fp32-weight mode)")
    p.add_argument("--downstream-limit", type=int,
                   help="score a fixed random subset of this many rows of each test set (default: the full sets)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    p.add_argument("--tag", help="suffix of the result file: a side run, shown under the main record in summary.md")
    p.add_argument("--tiny", action="store_true", help="tiny random model and fixture texts (seconds)")
    return p.parse_args(argv)


def default_ag_test(data: str | None) -> Path:
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


class Peer:
    """A bench/peer.py worker in another environment: started once, asked to encode once per round."""

    def __init__(self, name: str, python: Path, backend: str, variant: str, model: str, texts: Path,
                 calibration: Path, batch_size: int, work: Path, log: Path):
        self.name, self.error, self.ready = name, None, {}
        self.out = work / f"{name}.npy"
        cmd = [str(python), str(ROOT / "bench" / "peer.py"), "--backend", backend, "--variant", variant,
               "--model", model, "--texts", str(texts), "--calibration", str(calibration),
               "--batch-size", str(batch_size), "--work", str(ROOT / "cache" / "bench-peers" / backend)]
        env = {**os.environ, "PYTHONPATH": ""}  # the worker must not import this tree's packages
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"),
                                     text=True, env=env, cwd=ROOT)

    def wait_ready(self) -> None:
        reply = self._read()
        if "ready" in reply:
            self.ready = reply
        else:
            self.error = reply.get("error", "no reply")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"worker exited with {self.proc.wait()}"}
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return {"error": f"worker wrote {line[:200]!r} where a JSON reply belongs"}

    def encode(self) -> tuple[float, np.ndarray]:
        self.proc.stdin.write(json.dumps({"out": str(self.out)}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "seconds" not in reply:
            raise RuntimeError(f"{self.name}: {reply.get('error')}")
        return reply["seconds"], np.load(self.out)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def start_peers(names: list[str], folder: str, texts: list[str], calibration: list[str], bs: int,
                work: Path) -> tuple[dict, list[str]]:
    """Start every peer whose environment exists (in parallel: exports and loading are not timed)."""
    (work / "texts.json").write_text(json.dumps(texts))
    (work / "calibration.json").write_text(json.dumps(calibration))
    peers, skipped = {}, []
    for name in names:
        venv, backend, variant = PEERS[name]
        python = ROOT / venv / "bin" / "python"
        if not (ROOT / venv / ".installed").is_file():
            skipped.append(f"{name}: no {venv} (bash bench/peers.sh makes it)")
            continue
        peers[name] = Peer(name, python, backend, variant, folder, work / "texts.json", work / "calibration.json",
                           bs, work, work / f"{name}.log")
    for name, peer in list(peers.items()):
        peer.wait_ready()
        if peer.error:
            skipped.append(f"{name}: {peer.error}")
            peer.close()
            del peers[name]
    return peers, skipped


def downstream_scores(args, modes: list[str], device: torch.device) -> dict:
    """AG News accuracy and CoNLL entity F1 of the shipped heads on the test sets, the encoder in each mode.

    One ``mtst.train.evaluate`` call per mode (the scorer of the CLI and of every run record).
    """
    from mtst.attention import use_sdpa
    from mtst.config import load_configs
    from mtst.experiment import build_task_data
    from mtst.model import MultiTaskSentenceTransformer
    from mtst.train import evaluate

    if args.tiny:
        from mtst import SentenceTransformer
        from mtst.assets import build_tiny_model

        torch.manual_seed(0)
        folder = build_tiny_model(Path(tempfile.gettempdir()) / "mtst-bench-tiny-mpnet")
        model_cfg, data_cfg, train_cfg = load_configs("smoke")
        model = MultiTaskSentenceTransformer(SentenceTransformer.from_pretrained(str(folder)),
                                             ner_shape_dim=model_cfg.ner_shape_dim)
    else:
        model = MultiTaskSentenceTransformer.from_pretrained(args.artifact)
        _, data_cfg, train_cfg = load_configs("cpu")
    if args.downstream_limit:  # the same seeded subset in every mode (mtst.data.subsample)
        data_cfg = dataclasses.replace(data_cfg, eval_limit=args.downstream_limit)
    model = model.to(device).eval()
    data, _ = build_task_data(model, data_cfg)
    test = {t: d.test for t, d in data.items()}
    scores = {}
    for mode in modes:
        weights, autocast, _, attention = MODES[mode]
        use_sdpa(model.encoder.backbone, attention == "sdpa")
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast]
        start = time.perf_counter()
        result = evaluate(model, test, train_cfg.eval_batch_size, precision)
        scores[mode] = {"ag_news_accuracy": result["cls"]["accuracy"], "conll_entity_f1": result["ner"]["entity_f1"],
                        "ag_news_n": result["cls"]["n"], "conll_n": result["ner"]["n"], "precision": precision,
                        "seconds": time.perf_counter() - start}
        print(f"downstream {mode:16s} AG acc {scores[mode]['ag_news_accuracy']:.5f}  "
              f"CoNLL F1 {scores[mode]['conll_entity_f1']:.5f}", file=sys.stderr)
    use_sdpa(model.encoder.backbone, True)
    ref = scores.get("exact")
    for s in scores.values():
        s["ag_news_accuracy_delta_points"] = None if ref is None else \
            100 * (s["ag_news_accuracy"] - ref["ag_news_accuracy"])
        s["conll_entity_f1_delta_points"] = None if ref is None else \
            100 * (s["conll_entity_f1"] - ref["conll_entity_f1"])
    return scores


def fast_mode(device: torch.device) -> str:
    """The mode the demo serves on ``device``: bf16 autocast where bf16 is native (CUDA, AVX512-BF16, AMX),
    else exact."""
    from mtst.distributed import cpu_has_bf16

    return FAST_MODE if device.type != "cpu" or cpu_has_bf16() else "exact"


def default_modes(device: torch.device, fast: str) -> str:
    """Our modes when --modes is not given: each device's list, only ``exact`` where the fast mode is exact."""
    return DEFAULT_MODES.get(device.type, "exact,bf16-autocast") if fast == FAST_MODE else "exact"


def targets(results: dict, fast: str) -> dict:
    """The issue's targets, each with the measured figure beside the threshold."""
    st_backends = {k: v for k, v in results.items() if v["kind"] in ("baseline", "peer")}
    best = max(st_backends, key=lambda k: st_backends[k]["sentences_per_s"])
    out = {"best_st_backend": best, "best_st_sentences_per_s": st_backends[best]["sentences_per_s"]}
    if fast in results:
        f = results[fast]
        ratio = f["sentences_per_s"] / st_backends[best]["sentences_per_s"]
        down = f["downstream"]
        worst = None if down is None or down["ag_news_accuracy_delta_points"] is None else \
            max(abs(down["ag_news_accuracy_delta_points"]), abs(down["conll_entity_f1_delta_points"]))
        out["fast"] = {"mode": fast, "vs_best_st": ratio, "min_cosine": f["min_cosine"],
                       "worst_downstream_delta_points": worst,
                       "met": bool(ratio >= TARGETS["fast_vs_best_st"] and f["min_cosine"] >= TARGETS["fast_min_cosine"]
                                   and worst is not None and worst <= TARGETS["fast_downstream_points"])}
    if "exact" in results:
        e = results["exact"]
        out["exact"] = {"mode": "exact", "vs_st": e["speedup_vs_st"], "max_abs_diff": e["max_abs_diff"],
                        "met": bool(e["speedup_vs_st"] >= TARGETS["exact_vs_st"]
                                    and e["max_abs_diff"] <= TARGETS["exact_max_abs_diff"])}
    out["thresholds"] = dict(TARGETS)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from sentence_transformers import SentenceTransformer as STModel

    from mtst import SentenceTransformer
    from mtst.assets import folder_sha256, resolve_model
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
        calibration_path = TINY_DATA / "ag_news" / "train_subset_20k.csv"
        n, repeats = min(args.n, 96), 1
    else:
        folder = str(resolve_model(args.model))
        texts_path = default_ag_test(args.data)
        calibration_path = texts_path.with_name("train_subset_20k.csv")
        n, repeats = args.n, args.repeats
    texts = [e.text for e in read_ag_news(texts_path)][:n]
    fast = fast_mode(device)
    modes = (args.modes or default_modes(device, fast)).split(",")
    if args.peers == "auto":
        peer_names = [] if args.tiny or device.type != "cpu" else list(PEERS)
    else:
        peer_names = [] if args.peers == "none" else args.peers.split(",")
    if args.downstream == "auto":
        down_modes = [m for m in modes if MODES[m][0] == torch.float32 and m != "exact-sdpa"]
    else:
        down_modes = [] if args.downstream == "none" else args.downstream.split(",")
    bs = args.batch_size
    encode_kw = {"batch_size": bs, "show_progress_bar": False}
    # Ours returns what ST returns from this folder: L2-normalised when it has a Normalize module.
    modules = json.loads((Path(folder) / "modules.json").read_text())
    normalize = any(m["type"].endswith("Normalize") for m in modules)

    work = Path(tempfile.mkdtemp(prefix="mtst-bench-encode-"))
    peers, skipped = {}, []
    if peer_names:
        calibration = [e.text for e in read_ag_news(calibration_path)][:300]
        peers, skipped = start_peers(peer_names, folder, texts, calibration, bs, work)
        for line in skipped:
            print(f"skipped {line}", file=sys.stderr)

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
    contenders = {BASELINE: lambda: st.encode(texts, convert_to_numpy=True, **encode_kw)}
    copies = {(torch.float32, model.attention): model}
    for mode in modes:
        weights, autocast, _, attention = MODES[mode]
        if (weights, attention) not in copies:  # whole model in half precision, or SDPA attention
            m = copies[weights, attention] = copy.deepcopy(model).to(weights)
            use_sdpa(m.backbone, attention == "sdpa")
        m = copies[weights, attention]
        contenders[mode] = lambda m=m, a=autocast: m.encode(texts, autocast_dtype=a, normalize=normalize,
                                                            **encode_kw)

    # Warm up each in-process contender (allocator, oneDNN / cuBLAS plans; peers warmed up when they
    # loaded), then time in rounds.
    for name in contenders:
        if name == BASELINE:
            st.encode(texts[: 2 * bs], convert_to_numpy=True, **encode_kw)
        else:
            m, a = copies[MODES[name][0], MODES[name][3]], MODES[name][1]
            m.encode(texts[: 2 * bs], autocast_dtype=a, normalize=normalize, **encode_kw)
    names = list(contenders) + list(peers)
    seconds = {name: [] for name in names}
    outputs = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if name in peers:
                elapsed, outputs[name] = peers[name].encode()
            else:
                elapsed, outputs[name] = timed(contenders[name], device)
            seconds[name].append(elapsed)
            print(f"round {r + 1}: {name:22s} {len(texts) / elapsed:8.1f} sentences/s", file=sys.stderr)
    peer_info = {name: p.ready for name, p in peers.items()}
    for p in peers.values():
        p.close()
    shutil.rmtree(work, ignore_errors=True)
    del peers, copies, contenders
    gc.collect()

    if reference is None:
        reference = outputs[BASELINE]
    base_rate = len(texts) / statistics.median(seconds[BASELINE])
    from importlib.metadata import version

    here = [f"{p}=={version(p)}" for p in ("sentence-transformers", "transformers", "torch")]
    results = {}
    for name in names:
        rate = len(texts) / statistics.median(seconds[name])
        if name == BASELINE:
            entry = {"kind": "baseline", "backend": "torch", "precision": str(st_dtype).removeprefix("torch."),
                     "weights": str(st_dtype).removeprefix("torch."), "autocast": None, "attention": None,
                     "exact": True, "environment": ".venv", "versions": here, "file": None}
        elif name in PEERS:
            venv, backend, variant = PEERS[name]
            info = peer_info[name]
            entry = {"kind": "peer", "backend": backend, "precision": variant, "weights": variant, "autocast": None,
                     "attention": None, "exact": False, "environment": venv,
                     "versions": [f"{k}=={v}" for k, v in info["versions"].items()], "file": info["file"]}
        else:
            weights, autocast, exact, attention = MODES[name]
            entry = {"kind": "ours", "backend": "mtst", "precision": name,
                     "weights": str(weights).removeprefix("torch."),
                     "autocast": str(autocast).removeprefix("torch.") if autocast else None,
                     "attention": attention, "exact": exact, "environment": ".venv", "versions": here, "file": None}
        results[name] = {**entry, "seconds": seconds[name], "sentences_per_s": rate,
                         "speedup_vs_st": rate / base_rate, **compare(outputs[name], reference),
                         "downstream": None}
    best_st = max(v["sentences_per_s"] for v in results.values() if v["kind"] != "ours")
    for res in results.values():
        res["speedup_vs_best_st"] = res["sentences_per_s"] / best_st

    from mtst.distributed import cpu_has_bf16

    env = environment(device)
    lengths = [len(ids) for ids in model.tokenize(texts).input_ids]
    record = {
        "bench": "encode", "tiny": args.tiny, "device": device.type,
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else env["cpu"],
        "cpu": {"name": env["cpu"], "features": env.get("cpu_features", []),
                "bf16": "avx512_bf16" in env.get("cpu_features", []) or "amx_bf16" in env.get("cpu_features", []),
                "amx": any(f.startswith("amx") for f in env.get("cpu_features", [])),
                "vnni": "avx512_vnni" in env.get("cpu_features", []), "torch_native_bf16": cpu_has_bf16(),
                "threads": torch.get_num_threads(), "niceness": os.nice(0)},
        "environment": env,
        "settings": {"model": folder, "texts": str(texts_path), "n": len(texts), "batch_size": bs,
                     "repeats": repeats, "normalize": normalize,
                     "threads": torch.get_num_threads(),
                     "mean_tokens": float(np.mean(lengths)), "max_tokens": int(max(lengths)),
                     "rate": "n / median seconds of the timed passes; each pass includes tokenisation",
                     "order": "one round = every contender once, peers included; the order rotates every round",
                     "accuracy_reference": "sentence-transformers (torch) in fp32 on the same folder",
                     "downstream": None if not down_modes else  # --downstream none: nothing scored
                                   "mtst.train.evaluate of --artifact on the AG News and CoNLL-2003 test sets ("
                                   + ("all rows" if args.downstream_limit is None else
                                      f"a seeded sample of {args.downstream_limit} rows each") +
                                   "), the encoder in each mode (autocast as the mode says); not timed",
                     "artifact": None if args.tiny else args.artifact,
                     "artifact_sha256": None if args.tiny else folder_sha256(Path(args.artifact)),
                     "downstream_limit": args.downstream_limit,
                     "peer_calibration": "OpenVINO int8: first 300 texts of " + str(calibration_path)},
        "baseline": BASELINE,
        "fast_mode": fast,
        "fast_mode_note": None if fast == FAST_MODE else NO_BF16,
        "skipped": skipped,
        "targets": targets(results, fast),
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"encode-{'tiny-' if args.tiny else ''}{device.type}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")  # the timings are safe before the long scoring
    if down_modes:
        for name, scores in downstream_scores(args, down_modes, device).items():
            results[name]["downstream"] = scores
        record["targets"] = targets(results, fast)
        path.write_text(json.dumps(record, indent=2) + "\n")
    for name, res in results.items():
        down = res["downstream"]
        extra = f"  AG {down['ag_news_accuracy']:.4f}  F1 {down['conll_entity_f1']:.4f}" if down else ""
        print(f"{name:22s} {res['sentences_per_s']:8.1f} sentences/s  x{res['speedup_vs_st']:.2f}  "
              f"max|diff| {res['max_abs_diff']:.2e}  min cos {res['min_cosine']:.6f}{extra}")
    print(json.dumps(record["targets"], indent=2))
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
