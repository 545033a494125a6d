"""Task 3 by measurement: every freezing strategy on one budget (``make study``).

Each row trains the ``cpu`` profile (reference protocol: 9,600 / 2,400 AG News rows, all CoNLL
train, official test sets) for the same budget, ``EPOCHS`` epoch(s) at batch ``BATCH`` per task,
changing only what trains. The frozen bottom of the encoder runs once for the whole study: the
first step caches the deepest prefix any row needs and, from the same pass, every shallower depth another row needs
(``mtst.freezing.prefix_states``, ``keep``), bit for bit what each run would compute itself.

Each run is ``python -m mtst train --reuse``: a finished row is kept, an interrupted one resumes,
so the study spans interruptions. Records go to ``results/runs/task3/<row>-s<seed>/``. The whole study (every
row but those run ``APART``, every seed, and the prefix pass) has a budget of 3 hours on the 2-core CPU; ``--report``
adds up the records and its conclusions (in the writeup) say whether it kept to it.

    python scripts/study.py                 # every row but those APART, in the order below
    python scripts/study.py --only top2 top4
    python scripts/study.py --only no-casing crf layer-mix full   # the rows run apart, outside the budget
    python scripts/study.py --list
    python scripts/study.py --cache-only    # only the shared prefix pass (its cost: prefix-cache.json)
    python scripts/study.py --report        # results/task3.png, after python -m mtst report

The study writes ``plan.json`` (its rows, in order) beside the records; ``python -m mtst report`` makes
the writeup's Task 3 table from the records and that plan, and ``--report`` draws ``results/task3.png``
(test scores against trainable parameters and against wall time, one point per row) from
``results/summary.json``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 1
PROFILE = "cpu"
BATCH = 32  # per task: the study ran at the cpu profile's batch size then (the profile now takes 16)

BASE = "top4"  # the strategy the sampling, weighting and single-task rows vary (see the writeup)
KEY_SEEDS = (42, 43, 44)  # the rows the conclusions rest on get three seeds
TOP4 = ["train.trainable_layers=4"]

# name -> (what it shows, overrides on top of the cpu profile, seeds). Order: what the conclusions
# rest on first; every row at seed 42 runs before any second seed.
ROWS = {
    "probe": ("encoder frozen, heads only (linear probe)", ["train.trainable_layers=0"], KEY_SEEDS),
    "top2": ("top 2 layers train", ["train.trainable_layers=2"], KEY_SEEDS),
    "top4": ("top 4 layers train", TOP4, KEY_SEEDS),
    "top6": ("top 6 layers train", ["train.trainable_layers=6"], KEY_SEEDS),
    "ag-only": ("single task: AG News alone, top 4", [*TOP4, "train.tasks=cls"], KEY_SEEDS),
    "ner-only": ("single task: CoNLL NER alone, top 4", [*TOP4, "train.tasks=ner"], KEY_SEEDS),
    "lora": ("LoRA r=8 on the top 4 layers' attention (lr 5e-4, the usual LoRA rate)",
             [*TOP4, "train.freeze=lora", "train.lr=5e-4"], (42,)),
    "gradual": ("gradual unfreezing of the top 4, one layer per fifth of the run", [*TOP4, "train.freeze=gradual"],
                (42,)),
    "cls-head-frozen": ("topic head frozen, from the probe's trained heads, top 4",
                        [*TOP4, "train.freeze=cls_head", "train.init_from={runs}/study-probe-s{seed}/best"], (42,)),
    "ner-head-frozen": ("NER head frozen, from the probe's trained heads, top 4",
                        [*TOP4, "train.freeze=ner_head", "train.init_from={runs}/study-probe-s{seed}/best"], (42,)),
    "round-robin": ("round-robin task sampling, top 4", [*TOP4, "train.sampling=round_robin"], KEY_SEEDS),
    "temperature": ("temperature sampling (T=2), top 4", [*TOP4, "train.sampling=temperature"], KEY_SEEDS),
    "uncertainty": ("uncertainty loss weights (Kendall et al.), top 4", [*TOP4, "train.loss_weighting=uncertainty"],
                    KEY_SEEDS),
    "no-casing": ("NER head ablation: no word-shape (casing) features, top 4", [*TOP4, "model.ner_shape_dim=0"],
                  (42,)),
    "crf": ("NER head ablation: a CRF over the word labels, top 4", [*TOP4, "model.ner_crf=true"], (42,)),
    "layer-mix": ("NER head ablation: a learned mix of the last 4 layers, top 4", [*TOP4, "model.ner_layer_mix=4"],
                  (42,)),
    "full": ("full fine-tune (embeddings too), run apart: outside the study's budget", ["train.trainable_layers=None"],
             KEY_SEEDS),
}


# Rows run apart, outside the study's budget: plain `make study` leaves them out, `--only` runs them, and the
# conclusions count their seconds apart, by group. The NER-head ablations answer a question of their own (how to
# build the NER head), not Task 3's. The full fine-tune was asked for "if it fits the budget": its epoch fits a
# row's budget, but its three seeds cost several times what top4's do, more than the 3 hours leave beside the rest.
APART = {"no-casing": "the NER-head ablations", "crf": "the NER-head ablations", "layer-mix": "the NER-head ablations",
         "full": "the full fine-tune"}
BUDGET_HOURS = 3  # the whole study: every row but those APART, every seed, and the prefix pass, on the 2-core CPU

# Rows that keep the base strategy's trainable parameters and change something else.
VARIANTS = {row for row, (_, sets, _) in ROWS.items() if sets[: len(TOP4)] == TOP4 and row != BASE
            and not any(o.startswith("train.freeze=") for o in sets)}


def overrides(row: str, seed: int, runs: Path = ROOT / "runs") -> list[str]:
    """The ``--set`` arguments of one run (``runs``: where the checkpoints are, for ``init_from``)."""
    return [f"train.epochs={EPOCHS}", f"train.batch_size={BATCH}", f"train.seed={seed}",
            *(o.format(seed=seed, runs=runs) for o in ROWS[row][1])]


def warm_cache(rows: list[str], profile: str, cache_dir: Path, out: Path) -> None:
    """Cache the deepest frozen prefix the rows need, keeping every shallower depth on the way; its
    cost (shared by every row, so in no row's wall time) goes to ``out/prefix-cache.json``."""
    import time

    from mtst.config import load_configs
    from mtst.distributed import autocast_dtype, resolve_device
    from mtst.experiment import build_model, build_task_data
    from mtst.freezing import cache_prefix, prefix_layers
    from mtst.runs import environment

    start, cpu_start = time.perf_counter(), time.process_time()

    configs = [load_configs(profile, None, [o for o in overrides(row, 42) if "init_from" not in o]) for row in rows]
    model_cfg, data_cfg, train_cfg = configs[0]  # the rows differ only in what trains
    model = build_model(model_cfg, train_cfg.seed)
    needed = sorted({n for *_, cfg in configs if (n := prefix_layers(model, cfg)) is not None})
    if not needed:
        return
    data, _ = build_task_data(model, data_cfg)
    device = resolve_device(train_cfg.device)
    hit = cache_prefix(model.to(device), data, needed[-1], autocast_dtype(device, train_cfg.precision),
                       cache_dir / "prefix", train_cfg.eval_batch_size, keep=tuple(needed[:-1]))
    record = {"depths": needed, "from_cache": hit, "wall_seconds": time.perf_counter() - start,
              "cpu_seconds": time.process_time() - cpu_start, "environment": environment(device)}
    if not hit:  # a read from the cache costs seconds: only the pass that built it is the study's cost
        (out / "prefix-cache.json").write_text(json.dumps(record, indent=2) + "\n")


def write_plan(out: Path) -> None:
    """``plan.json`` beside the records: every row, what it changes and its seeds (the writeup's order)."""
    out.mkdir(parents=True, exist_ok=True)
    plan = {row: {"what": what, "overrides": list(sets), "seeds": list(seeds), "epochs": EPOCHS, "profile": PROFILE,
                  "apart": APART.get(row)} for row, (what, sets, seeds) in ROWS.items()}
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")


def plot(summary_file: Path, path: Path) -> bool:
    """Test scores against trainable parameters and against wall time, one point per finished row
    (its mean score and median wall time over seeds), from ``results/summary.json`` (``python -m mtst report``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = json.loads(summary_file.read_text())
    rows = {g.removeprefix("task3/"): (g, stats) for g, stats in summary["groups"].items() if g.startswith("task3/")}
    if not rows:
        return False
    params = {row: summary["runs"][stats["runs"][0]]["trainable_parameters"] for row, (_, stats) in rows.items()}
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex="col")
    for i, (key, name) in enumerate((("ag_news_test_accuracy", "AG News test accuracy (%)"),
                                     ("conll_test_entity_f1", "CoNLL test entity F1 (%)"))):
        for j, label in enumerate(("trainable parameters", "wall seconds (median over seeds, this machine)")):
            ax = axes[i, j]
            points = [(params[row] if j == 0 else stats["median_wall_seconds"], 100 * stats["mean"][key], row)
                      for row, (_, stats) in rows.items() if stats["mean"][key] is not None]
            points = [p for p in points if p[0] is not None]
            # The variants of the base strategy (sampling, weighting, NER head, one task) train as many
            # parameters as it does: smaller grey crosses, labels staggered so they stay readable.
            for variant in (False, True):
                some = [p for p in points if (p[2] in VARIANTS) == variant]
                ax.scatter([x for x, _, _ in some], [y for _, y, _ in some], color="grey" if variant else f"C{i}",
                           marker="x" if variant else "o", s=20 if variant else 36,
                           label=f"variants of {BASE}" if variant else "strategies")
                for k, (x, y, row) in enumerate(sorted(some, key=lambda p: -p[1])):
                    left = variant and j == 0  # beside the base strategy's column, on its left
                    ax.annotate(row, (x, y), textcoords="offset points", fontsize=6 if variant else 7,
                                xytext=((-5 if left else 5), 8 - 6 * (k % 4)) if variant else (4, 3),
                                ha="right" if left else "left")
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="lower right")
            ax.set(xscale="symlog" if j == 0 else "linear", ylabel=name if j == 0 else None,
                   xlabel=label if i == 1 else None)
            ax.grid(alpha=0.3)
    fig.suptitle(f"Task 3: every strategy on one budget ({EPOCHS} epoch, {PROFILE} profile); mean over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


SCORES = {"ag_news_test_accuracy": "AG News accuracy", "conll_test_entity_f1": "entity F1"}
COARSE = "conll_test_coarse_token_accuracy"
# On the headline's own strategy (``make seeds``): seed groups of the cpu profile that change one thing,
# group -> (what it changes, the group it is compared with, what that one has instead).
HEADLINE_VARIANTS = {"cpu-round-robin": ("round-robin sampling", "cpu-bs32", "both, batch 32 per task"),
                     "cpu-temperature": ("temperature sampling at T=2", "cpu-bs32", "both, batch 32 per task"),
                     "cpu-uncertainty": ("uncertainty loss weights", "cpu-bs32", "static weights, batch 32 per task"),
                     "cpu": ("the reference's batch of 16 per task", "cpu-bs32", "batch 32, both sampling")}


def budget(summary: dict, plan: dict, prefix: dict | None) -> str:
    """Whether the whole study kept to ``BUDGET_HOURS`` of wall time: judged only once every row and seed of
    ``plan`` (those run apart aside) has run, each from its start, and the prefix pass was measured, all on one CPU."""
    head = f"Against the study's budget of {BUDGET_HOURS} hours of wall time on one 2-core CPU"
    runs = {row: [summary["runs"][n] for n in summary["groups"].get(f"task3/{row}", {}).get("runs", [])]
            for row in plan}
    core = [row for row, spec in plan.items() if not spec.get("apart")]
    groups = {}  # what runs apart -> its rows, in the plan's order
    for row, spec in plan.items():
        if spec.get("apart"):
            groups.setdefault(spec["apart"], []).append(row)
    parts = []
    for what, rows in groups.items():
        if done := [r for row in rows for r in runs[row]]:
            several = " on several CPUs" * (len({r["device_name"] for r in done}) > 1)
            parts.append(f"{what} ({', '.join(rows)}), {len(done)} run{'s' * (len(done) > 1)}, "
                         f"{sum(r['wall_seconds'] for r in done):,.0f} wall s{several}")
    apart = f" Run apart, outside it: {'; '.join(parts)}." if parts else ""
    if prefix is None or prefix["from_cache"] or any(set(plan[row]["seeds"]) - {r["seed"] for r in runs[row]}
                                                     for row in core):
        return f"{head}: not judged until every row and seed and the prefix pass have run." + apart
    study = [r for row in core for r in runs[row]]
    cpus = sorted({r["device_name"] for r in study} | {prefix["environment"]["cpu"]})
    if len(cpus) > 1:
        return f"{head}: not judged, its runs ran on several CPUs ({'; '.join(cpus)})." + apart
    if any(r["resumed_at_step"] for r in study):
        return f"{head}: not judged, a resumed run's wall time counts from its resume." + apart
    total = sum(r["wall_seconds"] for r in study) + prefix["wall_seconds"]
    return (f"{head}: the whole study, {len(study)} runs and the prefix pass, took {total:,.0f} wall s "
            f"({total / 3600:.2f} h) on {cpus[0]}: {'within' if total <= BUDGET_HOURS * 3600 else 'over'} it."
            + apart)


def conclusions(summary: dict, plan: dict | None = None, prefix: dict | None = None) -> str:
    """The Task 3 conclusions, every number computed from the study's rows in ``summary`` (a row not
    finished yet drops the sentences that need it). A difference counts only where both rows have
    several seeds and it exceeds twice the larger of their two standard deviations. With the study's
    ``plan``, the last one says whether the study kept to its budget (``prefix``: the prefix pass's record)."""
    rows = {g.removeprefix("task3/"): stats for g, stats in summary["groups"].items() if g.startswith("task3/")}
    labels = {**SCORES, COARSE: "coarse token accuracy"}

    def pts(stats, key):
        return f"{100 * stats['mean'][key]:.2f}"

    def versus(a, b, key):
        """Group ``a`` against group ``b`` on ``key``: the difference in points, and whether seeds can tell it."""
        diff = 100 * (a["mean"][key] - b["mean"][key])
        if min(a["n"], b["n"]) < 2:
            verdict = "one seed: no spread to judge it by"
        else:
            noise = 100 * max(a["std"][key], b["std"][key])
            verdict = f"{'within' if abs(diff) <= 2 * noise else 'beyond'} twice the seed spread, {noise:.2f}"
        return f"{diff:+.2f} points on {labels[key]} ({pts(a, key)} against {pts(b, key)}; {verdict})"

    def have(*names):
        return all(n in rows for n in names)

    def wall(stats):
        """The median wall seconds, or – where there is none (seeds on different machines, or a resumed run)."""
        seconds = stats["median_wall_seconds"]
        return "–" if seconds is None else f"{seconds:,.0f}"

    def machines(a, b):
        """A caveat when groups ``a`` and ``b`` ran on different kinds of machine, else nothing."""
        kinds = [sorted({str(summary["runs"].get(n, {}).get("machine")) for n in g["runs"]}) for g in (a, b)]
        return "" if kinds[0] == kinds[1] else (
            f" The two groups ran on different machines ({'; '.join(kinds[0])} against {'; '.join(kinds[1])}),"
            " whose bf16 kernels differ: part of a small difference may be the machine.")

    out = []
    depth = [r for r in ("probe", "top2", "top4", "top6", "full") if r in rows]
    if len(depth) > 1:
        out.append("How deep to train: " + "; ".join(
            f"{SCORES[key]} " + " → ".join(f"{pts(rows[r], key)} ({r})" for r in depth) for key in SCORES)
            + ". Median wall seconds: " + ", ".join(f"{wall(rows[r])} ({r})" for r in depth) + (
                " (–: its seeds ran on different machines, or one resumed)"
                if any(rows[r]["median_wall_seconds"] is None for r in depth) else "") + ".")
    base = BASE
    for row, what in (("ag-only", "AG News alone against both tasks together"),
                      ("ner-only", "CoNLL NER alone against both tasks together")):
        key = "ag_news_test_accuracy" if row == "ag-only" else "conll_test_entity_f1"
        if have(row, base):
            out.append(f"Multi-task effect ({what}, {base}): the multi-task model is "
                       f"{versus(rows[base], rows[row], key)}." + machines(rows[base], rows[row]))
    for row, what in (("round-robin", "round-robin sampling"), ("temperature", "temperature sampling"),
                      ("uncertainty", "uncertainty loss weights"), ("no-casing", "no casing features"),
                      ("crf", "a CRF"), ("layer-mix", "a mix of the last layers"), ("lora", "LoRA"),
                      ("gradual", "gradual unfreezing"),
                      ("cls-head-frozen", "the topic head frozen (both heads from the probe)"),
                      ("ner-head-frozen", "the NER head frozen (both heads from the probe)")):
        if have(row, base):
            out.append(f"{what[0].upper() + what[1:]} against {base}: "
                       f"{versus(rows[row], rows[base], 'ag_news_test_accuracy')}, "
                       f"{versus(rows[row], rows[base], 'conll_test_entity_f1')}." + machines(rows[row], rows[base]))
    if rows:
        mean = {r: sum(st["mean"][k] for k in SCORES) / 2 for r, st in rows.items()
                if all(st["mean"][k] is not None for k in SCORES)}
        apart = {row for row, spec in (plan or {}).items() if spec.get("apart")}

        def cost(row):
            return (f"in {wall(rows[row])} wall seconds (median)" if rows[row]["median_wall_seconds"] is not None
                    else "its seeds on different machines (no median wall time)")

        if within := [r for r in mean if r not in apart]:
            best = max(within, key=mean.get)
            out.append(f"Best on this budget, by the mean of AG News accuracy and entity F1: {best} "
                       f"({100 * mean[best]:.2f}), {cost(best)}.")
            out += [f"Run apart, outside the study's budget, {row} is higher on that mean: {100 * mean[row]:.2f} "
                    f"({100 * (mean[row] - mean[best]):+.2f} points on {best}), {cost(row)}."
                    for row in sorted(apart & set(mean), key=mean.get, reverse=True) if mean[row] > mean[best]]
    groups, runs = summary["groups"], summary["runs"]
    for group, (what, other, instead) in HEADLINE_VARIANTS.items():
        if group not in groups or other not in groups:
            continue
        members = [runs[n] for n in groups[other]["runs"] + groups[group]["runs"]]
        strategy = {(r["trainable_layers"], r["epochs_configured"]) for r in members}
        if len(strategy) > 1:  # trained otherwise than the headline: not a comparison of one change alone
            continue
        [(layers, epochs)] = strategy
        out.append(f"On the headline's strategy (the cpu profile: top {layers} layers, {epochs} epochs; "
                   f"{groups[group]['n']} and {groups[other]['n']} seeds), {what} (`{group}`) against {instead} "
                   f"(`{other}`): "
                   + ", ".join(versus(groups[group], groups[other], key) for key in (*SCORES, COARSE)) + "."
                   + machines(groups[group], groups[other]))
    if plan:
        out.append(budget(summary, plan, prefix))
    from mtst.runs import study_stamp

    stamp = study_stamp(runs)  # every finished run: a run finished since makes these conclusions stale
    return stamp + "\n" + "\n".join(f"* {line}" for line in out) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", choices=sorted(ROWS), help="these rows only")
    p.add_argument("--seeds", nargs="*", type=int, help="only these seeds (default: each row's own)")
    p.add_argument("--cache-dir", default=str(ROOT / "cache"))
    p.add_argument("--runs-dir", default=str(ROOT / "runs"), help="where the checkpoints go")
    p.add_argument("--profile", default=PROFILE, help="smoke: the tiny model on the tiny data (a check)")
    p.add_argument("--out", default=str(ROOT / "results" / "runs" / "task3"), help="where the run records go")
    p.add_argument("--list", action="store_true", help="print the rows and exit")
    p.add_argument("--cache-only", action="store_true", help="only build the prefix cache (and record its cost)")
    p.add_argument("--report", action="store_true", help="only draw results/task3.png (from results/summary.json)")
    args = p.parse_args(argv)
    rows = args.only or [row for row in ROWS if row not in APART]
    if args.list:
        for row in rows:
            print(f"{row:16s} seeds {','.join(map(str, ROWS[row][2]))}: {ROWS[row][0]}\n"
                  f"{'':16s} --set {' '.join(overrides(row, ROWS[row][2][0]))}")
        return
    if args.report:
        print("plot:", plot(ROOT / "results" / "summary.json", ROOT / "results" / "task3.png"))
        task3 = ROOT / "results" / "runs" / "task3"
        plan, prefix = (json.loads(f.read_text()) if f.is_file() else None
                        for f in (task3 / "plan.json", task3 / "prefix-cache.json"))
        summary = json.loads((ROOT / "results" / "summary.json").read_text())
        (ROOT / "results" / "task3.md").write_text(conclusions(summary, plan, prefix))
        return
    write_plan(Path(args.out))
    warm_cache(rows, args.profile, Path(args.cache_dir), Path(args.out))
    if args.cache_only:
        return
    runs = [(seed, row) for seed in sorted({s for r in rows for s in ROWS[r][2]}) for row in rows
            if seed in ROWS[row][2] and (not args.seeds or seed in args.seeds)]
    for seed, row in runs:
        name = f"study-{row}-s{seed}"
        cmd = [sys.executable, "-m", "mtst", "train", "--profile", args.profile, "--name", name,
               "--record-dir", str(Path(args.out) / f"{row}-s{seed}"), "--cache-dir", args.cache_dir,
               "--runs-dir", args.runs_dir, "--reuse"]
        for item in overrides(row, seed, Path(args.runs_dir)):
            cmd += ["--set", item]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)

if __name__ == "__main__":
    main()
