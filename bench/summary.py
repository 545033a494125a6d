"""Gather ``results/bench/{encode,train}-<device>.json`` into ``results/bench/summary.json``, and those and
``floor-<device>.json`` into ``summary.md``, the writeup's speed section: every contender of each run with its
peers named.

Speedups are ratios to a baseline measured in the same run (see bench/encode.py, bench/train.py).
Keys of a device whose file is missing are null, with a note saying so.

    python bench/summary.py [--dir results/bench] [--tiny]
"""

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINE_BATCH = 32  # the gpu profile's batch size per task
GPU_MISSING = "not run: no GPU in this session"
EXACT_PEER_COSINE = 0.99999  # a peer this close to plain sentence-transformers competes with the exact mode
TRAIN_TARGET = 5.0  # the cpu profile's epoch against the reference loop's, same machine, same run (issue 10)


def load(folder: Path, kind: str, device: str, tiny: bool) -> dict | None:
    path = folder / f"{kind}-{'tiny-' if tiny else ''}{device}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def side_records(folder: Path, device: str, tiny: bool) -> list[tuple[str, dict]]:
    """Tagged encode records of ``device`` (``bench/encode.py --tag T``): side runs, such as another CPU or
    other modes. Shown in ``summary.md`` under the main record; of ``summary.json`` they give only the SDPA ratio
    of the ``attention`` run."""
    paths = sorted(folder.glob(f"encode-{'tiny-' if tiny else ''}{device}-*.json"))
    return [(p.name, json.loads(p.read_text())) for p in paths]


def encode_keys(record: dict | None, device: str) -> dict:
    """Our fast and exact modes against plain sentence-transformers and against its best backend (peers named)."""
    keys = {f"encode_speedup_vs_st_{device}": None, f"encode_fast_mode_{device}": None,
            f"encode_fast_sentences_per_s_{device}": None, f"encode_fast_min_cosine_{device}": None,
            f"encode_fast_downstream_delta_points_{device}": None,
            f"encode_best_st_backend_{device}": None, f"encode_best_st_backend_sentences_per_s_{device}": None,
            f"encode_fast_vs_best_st_backend_{device}": None, f"encode_st_sentences_per_s_{device}": None,
            f"encode_exact_speedup_vs_st_{device}": None, f"encode_exact_max_abs_diff_{device}": None,
            f"encode_hardware_{device}": None,
            f"_fast_cosines_{device}": []}
    if record is None:
        return keys
    results = record["results"]
    ours = {k: v for k, v in results.items() if v.get("kind", "ours") == "ours" and k != record["baseline"]}
    fast = {k: v for k, v in ours.items() if not v["exact"]}
    exact = results.get("exact", {})
    name = record.get("fast_mode") if record.get("fast_mode") in ours else \
        (max(fast, key=lambda k: fast[k]["speedup_vs_st"]) if fast else None)
    st = {k: v for k, v in results.items() if k not in ours}  # plain ST and its backends
    best = max(st, key=lambda k: st[k]["sentences_per_s"])
    keys |= {f"encode_best_st_backend_{device}": best,
             f"encode_best_st_backend_sentences_per_s_{device}": st[best]["sentences_per_s"],
             f"encode_st_sentences_per_s_{device}": results[record["baseline"]]["sentences_per_s"],
             f"encode_exact_speedup_vs_st_{device}": exact.get("speedup_vs_st"),
             f"encode_exact_max_abs_diff_{device}": exact.get("max_abs_diff"),
             # one key per contender, its name in the key: the writeup's table shows numbers only
             **{f"encode_sentences_per_s_{device}_{k}": v["sentences_per_s"] for k, v in results.items()},
             f"encode_hardware_{device}": record.get("cpu"),
             f"_fast_cosines_{device}": [v["min_cosine"] for v in fast.values()]}
    if name:
        f = ours[name]  # exact where the CPU has no native bf16 (the record's fast_mode_note)
        down = f.get("downstream") or {}
        deltas = [down.get("ag_news_accuracy_delta_points"), down.get("conll_entity_f1_delta_points")]
        keys |= {f"encode_speedup_vs_st_{device}": f["speedup_vs_st"], f"encode_fast_mode_{device}": name,
                 f"encode_fast_sentences_per_s_{device}": f["sentences_per_s"],
                 f"encode_fast_min_cosine_{device}": f["min_cosine"],
                 f"encode_fast_downstream_delta_points_{device}":
                     None if None in deltas else max(abs(d) for d in deltas),
                 f"encode_fast_vs_best_st_backend_{device}": f["sentences_per_s"] / st[best]["sentences_per_s"]}
    return keys


def train_keys(record: dict | None, device: str) -> dict:
    keys = {f"train_speedup_vs_reference_{device}": None, f"epoch_seconds_{device}": None,
            f"reference_epoch_seconds_{device}": None, f"train_batch_size_{device}": None}
    if device == "gpu":
        keys |= {"train_mfu_gpu": None, "train_mfu_gpu_batch_size": None,
                 "train_speedup_vs_reference_gpu_best": None, "train_speedup_vs_reference_gpu_best_batch_size": None}
    if record is None:
        return keys
    ours = [r for r in record["results"] if r["design"] == "mtst" and r.get("attention") == "sdpa"]
    reference = next((r for r in record["results"] if r["design"] == "reference"), None)
    if not ours:
        return keys
    head = next((r for r in ours if r["batch_size"] == HEADLINE_BATCH), ours[0])
    keys |= {f"train_speedup_vs_reference_{device}": head.get("speedup_vs_reference"),
             f"epoch_seconds_{device}": head["epoch_seconds"],
             f"reference_epoch_seconds_{device}": reference["epoch_seconds"] if reference else None,
             f"train_batch_size_{device}": head["batch_size"]}
    if device == "gpu":
        with_mfu = [r for r in ours if isinstance(r["mfu"], float)]
        if with_mfu:
            top = max(with_mfu, key=lambda r: r["mfu"])
            keys |= {"train_mfu_gpu": top["mfu"], "train_mfu_gpu_batch_size": top["batch_size"]}
        if reference:
            fastest = max(ours, key=lambda r: r["speedup_vs_reference"])
            keys |= {"train_speedup_vs_reference_gpu_best": fastest["speedup_vs_reference"],
                     "train_speedup_vs_reference_gpu_best_batch_size": fastest["batch_size"]}
    return keys


def epoch_and_reference(record: dict) -> tuple[dict, dict]:
    """A ``--real`` record's two rows the target compares: the profile's real epoch and the reference loop."""
    rows = record["results"]
    return next(r for r in rows if "profile" in r), next(r for r in rows if r["design"] == "reference")


def measured_train_keys(record: dict | None, device: str) -> dict:
    """``bench/train.py --real``: the cpu profile's real epoch against the reference loop's timed steps,
    and every row's validation scores beside its speed."""
    keys = {f"train_measured_speedup_vs_reference_{device}": None,
            f"train_measured_speedup_vs_reference_with_caching_{device}": None,
            f"train_measured_epoch_seconds_{device}": None, f"train_measured_reference_epoch_seconds_{device}": None,
            f"train_measured_reference_steps_{device}": None}
    if record is None:
        return keys
    epoch, reference = epoch_and_reference(record)
    keys |= {f"train_measured_speedup_vs_reference_{device}": epoch["speedup_vs_reference"],
             f"train_measured_speedup_vs_reference_with_caching_{device}": epoch["speedup_vs_reference_with_caching"],
             f"train_measured_epoch_seconds_{device}": epoch["epoch_seconds"],
             f"train_measured_reference_epoch_seconds_{device}": reference["epoch_seconds"],
             f"train_measured_reference_steps_{device}": reference["steps"]}
    for row in record["results"]:  # one key per configuration, its name in the key
        tag = row["name"].replace(" ", "-")
        keys |= {f"train_measured_samples_per_s_{device}_{tag}": row["samples_per_s"],
                 f"train_measured_real_tokens_per_s_{device}_{tag}": row["real_tokens_per_s"],
                 **{f"train_measured_val_{k}_{device}_{tag}": row["val"][k]
                    for k in ("ag_news_accuracy", "conll_entity_f1", "conll_coarse_token_accuracy")}}
    return keys


def load_records(folder: Path, tiny: bool) -> dict:
    """Every record by (kind, device); None where its file is missing."""
    return {(kind, dev): load(folder, kind, dev, tiny) for kind in ("encode", "train", "train-real")
            for dev in ("cpu", "cuda")}


def summarise(folder: Path, tiny: bool = False) -> dict:
    records = load_records(folder, tiny)
    keys = {}
    for dev, name in (("cuda", "gpu"), ("cpu", "cpu")):
        keys |= encode_keys(records["encode", dev], name)
        keys |= train_keys(records["train", dev], name)
        keys |= measured_train_keys(records["train-real", dev], name)
    cosines = keys.pop("_fast_cosines_gpu") + keys.pop("_fast_cosines_cpu")
    sides = {dev: dict(side_records(folder, dev, tiny)) for dev in ("cuda", "cpu")}
    for dev, name in (("cuda", "gpu"), ("cpu", "cpu")):  # side run: --modes exact,exact-sdpa --tag attention
        res = sides[dev].get(f"encode-{'tiny-' if tiny else ''}{dev}-attention.json", {}).get("results", {})
        if "exact" in res and "exact-sdpa" in res:
            keys[f"encode_sdpa_vs_eager_{name}"] = res["exact-sdpa"]["sentences_per_s"] / \
                res["exact"]["sentences_per_s"]
    notes = {}
    if all(records[kind, "cuda"] is None for kind in ("encode", "train", "train-real")):
        notes["gpu"] = GPU_MISSING
    summary = {
        "train_speedup_vs_reference_gpu": keys.pop("train_speedup_vs_reference_gpu"),
        "train_mfu_gpu": keys.pop("train_mfu_gpu"),
        "epoch_seconds_gpu": keys.pop("epoch_seconds_gpu"),
        "encode_speedup_vs_st_gpu": keys.pop("encode_speedup_vs_st_gpu"),
        "encode_speedup_vs_st_cpu": keys.pop("encode_speedup_vs_st_cpu"),
        "encode_min_cosine": min(cosines) if cosines else None,
        "encode_exact_speedup_vs_st_cpu": keys.pop("encode_exact_speedup_vs_st_cpu"),
        "train_speedup_vs_reference_cpu": keys.pop("train_speedup_vs_reference_cpu"),
        **keys,
        "notes": {
            **notes,
            "encode_speedup": "our fast mode (bench/encode.py FAST_MODE) vs plain sentence-transformers (torch fp32) "
                              "on the same folder, texts, batch size; encode_fast_vs_best_st_backend: vs the fastest "
                              "of sentence-transformers' torch, ONNX and OpenVINO backends (fp32 and int8) in the "
                              "same run, named in encode_best_st_backend",
            "encode_fast_downstream_delta_points": "worst |AG News accuracy or CoNLL entity F1 change| in points, "
                                                   "fast mode vs exact, shipped heads, on the test rows the record's "
                                                   "settings.downstream names",
            "encode_min_cosine": "worst per-text cosine vs fp32 sentence-transformers over every non-exact mode",
            "train_speedup": f"reference epoch seconds / ours at batch {HEADLINE_BATCH} per task when measured "
                             "(else the first batch size); projected from measured processed tokens/s",
            "train_measured": "bench/train.py --real: the cpu profile's real epoch (timed by fit) against the "
                              "reference loop's epoch, extrapolated from its timed steps by processed tokens; "
                              "_with_caching adds the prefix pass to ours; val scores after each row's own steps",
        },
        "sources": sorted([f"{kind}-{'tiny-' if tiny else ''}{dev}.json"
                           for (kind, dev), rec in records.items() if rec is not None]
                          + [file for files in sides.values() for file in files]),
    }
    return summary


def _cpu(cpu: dict) -> str:
    flags = ", ".join(f"{name} {'yes' if cpu[key] else 'no'}" for key, name in
                      (("bf16", "bf16"), ("amx", "AMX"), ("vnni", "VNNI")))
    return f"{cpu['name']}, {flags}, {cpu['threads']} threads"


def artifact_note(settings: dict, root: Path = ROOT) -> str:
    """Whether the artifact the record ran with is still the one in this checkout (same path under ``results/``)."""
    if settings.get("artifact") is None:
        return ""
    parts = Path(settings["artifact"]).parts
    here = root.joinpath(*parts[parts.index("results"):])
    if settings.get("artifact_sha256") is None:
        return (" The record does not say which version of the artifact it ran with (it predates the checksums); "
                "re-run `bench/encode.py` to measure the one in this checkout.")
    from mtst.assets import folder_sha256

    if not here.is_dir() or folder_sha256(here) != settings["artifact_sha256"]:
        return (f" The artifact at `{here.relative_to(root)}` has changed since this record: re-run "
                "`bench/encode.py` to measure it.")
    return ""


def fastest_at(results: dict, min_cosine: float, kinds: tuple[str, ...]) -> str | None:
    """The fastest contender of these kinds whose min cosine to sentence-transformers fp32 reaches ``min_cosine``."""
    good = [k for k, r in results.items() if r["kind"] in kinds and r["min_cosine"] >= min_cosine]
    return max(good, key=lambda k: results[k]["sentences_per_s"], default=None)


def encode_markdown(record: dict, root: Path = ROOT, title: str = "Encoding") -> list[str]:
    """One encode run: its machine and settings, a row per contender, then the issue's targets."""
    s, results, t = record["settings"], record["results"], record["targets"]
    where = _cpu(record["cpu"]) if record["device"] == "cpu" else record["device_name"]
    lines = [f"**{title} on {where}**: {s['n']} texts of `{Path(s['texts']).name}` ({s['mean_tokens']:.0f} tokens on "
             f"average), batch {s['batch_size']}, {s['repeats']} timed passes per contender, interleaved; "
             "sentences/s = texts / median pass seconds, tokenisation included.", "",
             "| contender | backend, precision | sentences/s | passes (s) | × plain ST | × fastest ST backend "
             "| min cosine to ST fp32 | AG / F1 change (points) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        down = r["downstream"]
        change = "–" if not down else \
            f"{down['ag_news_accuracy_delta_points']:+.2f} / {down['conll_entity_f1_delta_points']:+.2f}"
        passes = "–".join(f"{x:.1f}" for x in (min(r["seconds"]), max(r["seconds"])))
        lines.append(f"| `{name}` ({r['kind']}) | {r['backend']}, {r['precision']} | {r['sentences_per_s']:.2f} "
                     f"| {passes} | {r['speedup_vs_st']:.2f} | {r['speedup_vs_best_st']:.2f} "
                     f"| {r['min_cosine']:.4f} | {change} |")
    lines += ["", "AG / F1 change: not scored in this run (`--downstream none`)." if s["downstream"] is None else
              f"AG / F1 change: the artifact's AG News accuracy and CoNLL entity F1 against the exact mode, on "
              f"{s['downstream']}." + artifact_note(s, root)]
    th = t["thresholds"]
    if f := t.get("fast"):
        bar, peer = th["fast_min_cosine"], t["best_st_backend"]
        same = fastest_at(results, bar, ("baseline", "peer"))
        lines.append(f"\nFast mode (`{f['mode']}`): {f['vs_best_st']:.2f}× the fastest sentence-transformers backend "
                     f"(`{peer}`, min cosine {results[peer]['min_cosine']:.4f}); target ≥ {th['fast_vs_best_st']}× "
                     f"at min cosine ≥ {bar} with AG / F1 within {th['fast_downstream_points']} points: "
                     f"{'met' if f['met'] else 'not met'}." + (
                         f" Against the fastest sentence-transformers backend that keeps min cosine ≥ {bar} "
                         f"(`{same}`): {results[f['mode']]['sentences_per_s'] / results[same]['sentences_per_s']:.2f}×."
                         if same else ""))
    if not any(r["kind"] == "peer" for r in results.values()):
        lines.append("No sentence-transformers backend but plain torch ran in this run (`--peers none`).")
    if note := record.get("fast_mode_note"):
        lines.append(f"Why the fast mode is `{record['fast_mode']}` on this machine: {note}.")
    if e := t.get("exact"):
        # Round by round (each round times every contender once) the ratio shows how much the machine's noise moves it.
        rounds = [st / ours for st, ours in zip(results[record["baseline"]]["seconds"], results["exact"]["seconds"])]
        lines.append(f"Exact mode: {e['vs_st']:.2f}× plain sentence-transformers (per round {min(rounds):.2f}–"
                     f"{max(rounds):.2f}) at max abs difference "
                     f"{e['max_abs_diff']:.1e}; target ≥ {th['exact_vs_st']}× at ≤ {th['exact_max_abs_diff']:.0e}: "
                     f"{'met' if e['met'] else 'not met'}.")
        # The target is plain sentence-transformers; a user after exact vectors may pick a faster backend.
        if top := fastest_at(results, EXACT_PEER_COSINE, ("peer",)):
            lines.append(f"Against the fastest sentence-transformers backend at min cosine ≥ {EXACT_PEER_COSINE} "
                         f"(`{top}`, max abs difference {results[top]['max_abs_diff']:.1e}): "
                         f"{results['exact']['sentences_per_s'] / results[top]['sentences_per_s']:.2f}×.")
    return lines


def train_markdown(real: dict | None, device: str) -> list[str]:
    """``bench/train.py --real`` rows: measured speed beside each row's validation scores."""
    if real is None:
        return [f"**Training speed ({device})**: not measured yet (`python bench/train.py --real --device {device}`)."]
    lines = [f"**Training on {real['device_name']}, {real['environment'].get('cpu_threads', '?')} threads** "
             f"(epoch seconds: {real['settings']['epoch']}):", "",
             "| configuration | steps | samples/s | real tokens/s | epoch s | × reference | val AG acc "
             "| val entity F1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in real["results"]:
        speed = r.get("speedup_vs_reference")
        lines.append(f"| {r['name']} | {r['steps']} | {r['samples_per_s']:.1f} | {r['real_tokens_per_s']:,.0f} "
                     f"| {r['epoch_seconds']:,.0f} | {'–' if speed is None else f'{speed:.2f}'} "
                     f"| {100 * r['val']['ag_news_accuracy']:.2f} | {100 * r['val']['conll_entity_f1']:.2f} |")
    epoch, reference = epoch_and_reference(real)
    lines.append(f"\nThe {epoch['profile']} profile's epoch: {epoch['speedup_vs_reference']:.2f}× the reference loop's "
                 f"({epoch['speedup_vs_reference_with_caching']:.2f}× with its prefix pass of "
                 f"{epoch['prefix_seconds']:,.0f} s), the reference's epoch extrapolated from its {reference['steps']} "
                 f"timed steps; target ≥ {TRAIN_TARGET:g}×: "
                 f"{'met' if epoch['speedup_vs_reference'] >= TRAIN_TARGET else 'not met'}.")
    return lines


def floor_markdown(floor: dict) -> list[str]:
    """``bench/floor.py``: the fast mode's bf16 GEMMs against the time the fast target allows, and what int8
    activations, the way to cheaper GEMMs, do to the embeddings."""
    s, g, b, bar = floor["settings"], floor["gemm"], floor["budget"], floor["thresholds"]["fast_min_cosine"]
    lines = [f"**How far the fast mode can go on {floor['environment']['cpu']}** (`bench/floor.py`, the same "
             f"{s['n']} texts, batch {s['batch_size']}): in a profiled pass of `{g['mode']}` its linear layers, the "
             f"bf16 matrix products, take {g['linear_seconds']:.2f} s of {g['profiled_seconds']:.2f} s "
             f"({g['linear_share']:.0%})."]
    if b is not None:
        lines[0] += (f" {floor['thresholds']['fast_vs_best_st']}× `{b['best_st_backend']}` "
                     f"({b['best_st_sentences_per_s']:.2f} sentences/s) leaves {b['seconds']:.2f} s for these texts: "
                     f"the bf16 products alone take {b['linear_share_of_budget']:.0%} of it" +
                     ("." if b["same_cpu"] else ", but the encode record ran on another CPU: they do not compare."))
    speed = floor["int8_gemm"]["speedup_vs_bf16"]
    lines.append(("int8 products would be cheaper" if speed is None else
                  f"An int8 product of the feed-forward's shape runs {speed:.2f}× the bf16 one (oneDNN, median of "
                  f"{floor['int8_gemm']['repeats']})") + ", but int8 activations move the embeddings: min cosine to "
                 "sentence-transformers fp32 " + ", ".join(f"{r['min_cosine']:.4f} ({name}, {r['linears_quantised']} "
                                                          f"linears)" for name, r in floor["int8"].items())
                 + f", against the target's {bar}.")
    return lines


def markdown(folder: Path, tiny: bool = False) -> str:
    """The writeup's speed section from the same records as ``summarise``."""
    records, lines = load_records(folder, tiny), []
    for dev, name in (("cpu", "cpu"), ("cuda", "gpu")):
        if records["encode", dev] is not None:
            lines += encode_markdown(records["encode", dev]) + [""]
        if dev == "cpu" and (floor := load(folder, "floor", dev, tiny)) is not None:
            lines += floor_markdown(floor) + [""]
        for file, side in side_records(folder, dev, tiny):
            lines += encode_markdown(side, title=f"Side run `{file}`, not the figures above: encoding") + [""]
        if dev == "cpu" or records["train-real", dev] is not None:
            lines += train_markdown(records["train-real", dev], name) + [""]
    if all(records[kind, "cuda"] is None for kind in ("encode", "train", "train-real")):
        lines.append(f"GPU: {GPU_MISSING}.")
    return "\n".join(lines).strip() + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default=str(ROOT / "results" / "bench"))
    p.add_argument("--tiny", action="store_true", help="summarise the --tiny result files")
    args = p.parse_args(argv)
    folder = Path(args.dir)
    summary = summarise(folder, args.tiny)
    path = folder / f"summary{'-tiny' if args.tiny else ''}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(folder, args.tiny))
    print(json.dumps({k: v for k, v in summary.items() if k != "notes"}, indent=2))
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
