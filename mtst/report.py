"""``python -m mtst report``: ``results/summary.json``, ``writeup.md`` (from ``docs/writeup.template.md``)
and the top-level ``loss_plot.png``, all generated from the run records under ``results/runs``
(``runs.summarize``) and the cited figures in ``docs/anchors.json``. Nothing in the writeup is typed by hand.
"""

import json
import re
import shutil
from pathlib import Path

from .config import AG_NEWS_OFFICIAL_TRAIN_ROWS
from .runs import METRICS, group_stats, load_anchors, load_runs, mean_std, read_json, study_conclusions, summarize


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _pm(group: dict, key: str) -> str:
    """``mean ± std`` of one metric over a group's seeds, in percent (seconds for wall time)."""
    mean, std = group["mean"][key], group["std"][key]
    fmt = (lambda v: f"{v:.0f}") if key == "wall_seconds" else _pct
    return "–" if mean is None else fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def seeds_sentence(name: str, group: dict) -> str:
    """The sentence that says over which seeds a group is reported (and which are missing)."""
    seeds = ", ".join(map(str, group["seeds"]))
    if group["n"] >= group["planned"]:
        return f"`{name}`: mean ± sample standard deviation over {group['n']} seeds ({seeds})"
    missing = f"; not finished: {', '.join(map(str, group['unfinished_seeds']))}" if group["unfinished_seeds"] else ""
    if group["n"] == 1:
        return (f"`{name}`: only 1 of {group['planned']} seeds has finished (seed {seeds}{missing}); "
                "single-run values, no spread yet")
    return (f"`{name}`: only {group['n']} of {group['planned']} seeds have finished ({seeds}{missing}); "
            f"mean ± sample standard deviation over those {group['n']}")


def groups_table(summary: dict, names) -> str:
    """The markdown table of every seed group: mean ± std of each metric."""
    lines = ["| group | seeds | AG test acc | AG test macro-F1 | CoNLL entity F1 | strict F1 | token acc (9 labels) "
             "| token acc (5 coarse) | wall s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        g = summary["groups"][name]
        label = f"**{name}**" if name == summary["headline"] else name
        lines.append(f"| {label} | {g['n']} of {g['planned']} | " + " | ".join(_pm(g, k) for k in METRICS) + " |")
    return "\n".join(lines)


def runs_table(summary: dict, names) -> str:
    """The markdown table of every reported run, one row a run."""
    lines = ["| run | trainable layers | precision | epochs run / configured | AG test acc | AG val acc "
             "| CoNLL entity F1 | strict F1 | token acc (9 labels) | token acc (5 coarse) | wall s | device |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        r = summary["runs"][name]
        layers = "all" if r["trainable_layers"] is None else r["trainable_layers"]
        lines.append(f'| {name} | {layers} | {r["precision"]} | {r["epochs_run"]} / {r["epochs_configured"]} '
                     f'| {_pct(r["ag_news_test_accuracy"])} | {_pct(r["ag_news_val_accuracy"])} '
                     f'| {_pct(r["conll_test_entity_f1"])} | {_pct(r["conll_test_strict_entity_f1"])} '
                     f'| {_pct(r["conll_test_token_accuracy"])} | {_pct(r["conll_test_coarse_token_accuracy"])} '
                     f'| {r["wall_seconds"]:.0f}{" (resumed)" * bool(r["resumed_at_step"])} | {r["machine"]} |')
    return "\n".join(lines)


def _by_seed(rows: list[dict], fmt=str) -> str:
    """One value when every seed agrees, else each seed's."""
    values = [fmt(r) for r in rows]
    if len(set(values)) == 1:
        return values[0] + (" (every seed)" if len(rows) > 1 else "")
    return ", ".join(f"{v} (seed {r['seed']})" for v, r in zip(values, rows))


def _flat(config: dict) -> dict:
    return {f"{s}.{k}": v for s in ("model", "data", "train") for k, v in config.get(s, {}).items()
            if k != "seed"}


def _prefix_time(r: dict) -> str:
    built = " (read from the cache an earlier run built; building it is not included)" if r["prefix_from_cache"] else ""
    return "–" if r["prefix_seconds"] is None else f"{r['prefix_seconds']:.0f} s{built}"


def training_facts(summary: dict, runs: dict) -> str:
    """How the headline was trained, read from its records: config.json, metrics.json, environment.json."""
    group = summary["groups"][summary["headline"]]
    rows = [summary["runs"][n] for n in group["runs"]]
    configs = [runs[n]["config"] for n in group["runs"]]
    model, data, train = configs[0]["model"], configs[0]["data"], configs[0]["train"]
    k = train["trainable_layers"]
    if k is None:
        encoder = f"`{model['model_name']}`: every layer and the embeddings train"
    elif k == 0:
        encoder = f"`{model['model_name']}` frozen: the heads train on its cached states"
    else:
        encoder = (f"`{model['model_name']}`: the top {k} encoder layers train; the embeddings and the layers "
                   "below run once over the data and are cached")
    ner = "dropout + one linear layer on each token state"
    if model.get("ner_shape_dim"):
        ner += f", joined with a {model['ner_shape_dim']}-dim learned word-shape (casing) embedding"
    sampling = f"`{train['sampling']}`" + (" (each step: one AG News batch and one CoNLL batch, losses summed)"
                                           if train["sampling"] == "both" else "")
    facts = [
        ("runs", ", ".join(group["runs"]) + (f" (profile `{rows[0]['profile']}`)" if rows[0]["profile"] else "")),
        ("encoder", encoder),
        ("Task 3 strategy", f"`{train['freeze']}`"),
        ("topic head", f"dropout + one linear layer on the {model['pooling']}-pooled sentence embedding"),
        ("NER head", ner + f"; labels: `{model['ner_scheme']}`"),
        ("task sampling", sampling + f"; loss weighting `{train['loss_weighting']}`"),
        ("batch size", f"{train['batch_size']} per task (evaluation {train['eval_batch_size']})"),
        ("learning rates", f"encoder {train['lr']:g}, heads {train['head_lr']:g}; warm-up ratio "
                           f"{train['warmup_ratio']:g}, then linear decay; weight decay {train['weight_decay']:g}; "
                           f"layer-wise decay {train['layer_lr_decay']:g}; gradient clip {train['grad_clip']:g}"),
        ("max length", f"{data['max_length']} sub-tokens"),
        ("epochs run", _by_seed(rows, lambda r: f"{r['epochs_run']} of {r['epochs_configured']} configured")),
        ("early stopping", f"patience {train['patience']} epochs on `{train['monitor']}`; stopped early: "
                           + _by_seed(rows, lambda r: "yes" if r["stopped_early"] else "no")),
        ("best epoch", _by_seed(rows, lambda r: str(r["best_epoch"]))),
        ("precision", _by_seed(rows, lambda r: r["precision"]) + f"; config `{train['precision']}`"),
        ("device", _by_seed(rows, lambda r: f"{r['machine']}, {r['cpu_threads']} threads, torch {r['torch']}")),
        ("wall time", (f"{_pm(group, 'wall_seconds')} s per seed" if group["mean"]["wall_seconds"] is not None
                       else _by_seed(rows, lambda r: f"{r['wall_seconds']:.0f} s") + " (no mean: " + (
                           "the seeds ran on different machines)" if len({r["machine"] for r in rows}) > 1
                           else "a seed was resumed)"))
                      + ", one process from building the model to the test scores; of it, caching the frozen prefix: "
                      + _by_seed(rows, _prefix_time)
                      + ", epochs: " + _by_seed(rows, lambda r: f"{r['train_seconds']:.0f} s")),
    ]
    if resumed := [r for r in rows if r["resumed_at_step"]]:
        facts.append(("resumed", ", ".join(f"seed {r['seed']} at step {r['resumed_at_step']} (its wall time "
                                           "counts from the resume)" for r in resumed)))
    flat = [_flat(c) for c in configs]
    if differ := sorted(key for key in flat[0] if any(f.get(key) != flat[0][key] for f in flat[1:])):
        facts.append(("config differs between seeds", ", ".join(f"`{key}`" for key in differ)))
    return "\n".join(["| | |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in facts])


def data_facts(summary: dict, runs: dict) -> str:
    """The paragraph that says which data the headline trained and was tested on."""
    name = summary["groups"][summary["headline"]]["runs"][0]
    m, data = runs[name]["metrics"], runs[name]["config"]["data"]
    source, train, val, test = m["sources"]["ag_news_train"], m["train_rows"], m["val_rows"], m["test_rows"]
    subset = (f"AG News training rows come from `{source['file'].split('/')[-1]}`, a {source['rows']:,}-row subset "
              f"of the official {AG_NEWS_OFFICIAL_TRAIN_ROWS:,}-row train split (see `shared/data/PROVENANCE.md`)")
    sample = "the run uses all of it" if data["ag_train_fraction"] is None else (
        f"as the reference protocol does, the run samples {data['ag_train_fraction']:.0%} of "
        f"{AG_NEWS_OFFICIAL_TRAIN_ROWS:,} rows from it (stratified, seeded)")
    return (f"{subset}; {sample} and splits them into {train['ag_news']:,} train / {val['ag_news']:,} validation "
            f"rows. CoNLL-2003: {train['conll']:,} train / {val['conll']:,} validation sentences. Test scores are on "
            f"the official test sets: AG News {test['ag_news']:,} rows, CoNLL-2003 {test['conll']:,} sentences.")


def versus_reference(summary: dict, anchors: dict) -> str:
    """Ours against the reference design and the project's targets; pass/fail computed on the mean."""
    group = summary["groups"][summary["headline"]]
    reference = {a["metric"]: a["value"] for a in anchors["anchors"] if a.get("reference_design")}
    lines = [f"| measure | ours (`{summary['headline']}`, {group['n']} of {group['planned']} seeds) "
             "| reference design | ours − reference (points) | target | target met |",
             "| --- | --- | --- | --- | --- | --- |"]
    for target in anchors["targets"]["minimums"]:
        key, mean, ref = target["metric"], group["mean"][target["metric"]], reference.get(target["metric"])
        delta = "–" if mean is None or ref is None else f"{100 * (mean - ref):+.2f}"
        met = "–" if mean is None else ("yes" if mean >= target["min"] else "no")
        lines.append(f"| {METRICS[key][0]} | {_pm(group, key)} | {'not reported' if ref is None else _pct(ref)} "
                     f"| {delta} | ≥ {_pct(target['min'])} | {met} |")
    return "\n".join(lines) + f"\n\nTargets: {anchors['targets']['source']}."


def anchors_table(summary: dict, anchors: dict) -> str:
    """The markdown table of published systems against the headline, measure for measure."""
    group = summary["groups"][summary["headline"]]
    lines = ["| system | measure | published | ours (headline, same measure) | source |",
             "| --- | --- | --- | --- | --- |"]
    for a in anchors["anchors"]:
        source = f"[{a['citation']}]({a['url']})" if a.get("url") else a["citation"]
        published = _pct(a["value"])
        if published not in a["published_as"]:  # e.g. an error rate: show the source's own figure too
            published += f" ({a['published_as']})"
        lines.append(f"| {a['system']} | {METRICS[a['metric']][0]} | {published} "
                     f"| {_pm(group, a['metric'])} | {source}; {a['where']} |")
    return "\n".join(lines)


def per_type_table(summary: dict, runs: dict) -> str:
    """The markdown table of the headline's entity F1 per type (mean ± std over seeds)."""
    per_run = [runs[n]["metrics"]["test"]["ner"]["per_type"] for n in summary["groups"][summary["headline"]]["runs"]]
    lines = ["| type | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    for etype, first in per_run[0].items():
        cells = [_pct(mean) if std is None else f"{_pct(mean)} ± {_pct(std)}"
                 for mean, std in (mean_std([p[etype][key] for p in per_run]) for key in ("precision", "recall", "f1"))]
        lines.append(f"| {etype} | {' | '.join(cells)} | {first['support']} |")
    return "\n".join(lines)


def task3_table(summary: dict, results: Path) -> str:
    """The study's runs (``results/runs/task3``, ``scripts/study.py``): every strategy on one budget, in
    the order of the study's plan, with what each row changes, its cost and its test scores."""
    study = {n: r for n, r in summary["runs"].items() if r["study"] == "task3"}
    if not study:
        return "_Task 3 study: not run yet with the new loop._"
    plan, members = read_json(results / "runs" / "task3" / "plan.json") or {}, {}
    for name, r in study.items():
        members.setdefault(r["group"] or name, []).append(name)
    order = {f"task3/{row}": i for i, row in enumerate(plan)}
    lines = ["| strategy run | freeze | trainable layers | seeds | AG test acc | CoNLL entity F1 | token acc "
             "(5 coarse) | epochs | wall s (median) | CPU s (mean) | trainable params | what it changes |",
             "| --- " * 12 + "|"]
    for label, names in sorted(members.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
        first, g = study[names[0]], group_stats(names, study, [])
        wall, cpu = g["median_wall_seconds"], mean_std([study[n]["cpu_seconds"] for n in names])[0]
        layers, params = first["trainable_layers"], first["trainable_parameters"]
        lines.append(f"| {label} | {first['freeze']} | {'all' if layers is None else layers} | {g['n']} "
                     f"| {_pm(g, 'ag_news_test_accuracy')} | {_pm(g, 'conll_test_entity_f1')} "
                     f"| {_pm(g, 'conll_test_coarse_token_accuracy')} | {first['epochs_configured']} "
                     f"| {'–' if wall is None else f'{wall:.0f}'} "
                     f"| {'–' if cpu is None else f'{cpu:.0f}'} | {'–' if params is None else f'{params:,}'} "
                     f"| {plan.get(label.removeprefix('task3/'), {}).get('what', '')} |")
    prefix, runs = read_json(results / "runs" / "task3" / "prefix-cache.json"), study.values()
    lines.append(f"\nThe study so far: {len(study)} runs, {sum(r['wall_seconds'] for r in runs):,.0f} wall s and "
                 f"{sum(r['cpu_seconds'] or 0 for r in runs):,.0f} CPU s, and the shared prefix pass: " + (
                     "its cost is not recorded (`scripts/study.py --cache-only` with an empty cache measures it)."
                     if not prefix or prefix["from_cache"] else f"{prefix['wall_seconds']:,.0f} wall s, "
                     f"{prefix['cpu_seconds']:,.0f} CPU s (depths {', '.join(map(str, prefix['depths']))}; "
                     f"on {prefix['environment']['cpu']})."))
    done = {row: {study[n]["seed"] for n in members.get(f"task3/{row}", [])} for row in plan}
    left = {row: sorted(set(spec["seeds"]) - done[row]) for row, spec in plan.items()}
    if missing := [f"{row} (seed {', '.join(map(str, left[row]))})" if done[row] else row for row in plan if left[row]]:
        lines.append(f"\nNot run yet: {', '.join(missing)} (`make study` goes on where it stopped).")
    found = study_conclusions(results / "task3.md", summary["runs"])  # stale once any run finishes since
    lines.append("\nWhat the rows show, computed from them (`scripts/study.py --report`):\n\n" + found if found else
                 "\n_Conclusions: not computed from these rows yet (`scripts/study.py --report`)._")
    if (results / "task3.png").is_file():
        lines.append("\n![Task 3: test scores against trainable parameters and wall time](results/task3.png)")
    return "\n".join(lines)


def bench_table(results: Path) -> str:
    """The speed section ``bench/summary.py`` writes beside ``results/bench/summary.json``."""
    path = results / "bench" / "summary.md"
    return path.read_text().strip() if path.is_file() else "_No benchmark results yet (`python bench/summary.py`)._"


def make_run_note(results: Path, profile: str = "cpu") -> str:
    """The sentence on the last whole ``make run`` (``results/make-run-<profile>.json``), or that there is none."""
    if (r := read_json(results / f"make-run-{profile}.json")) is None:
        return f"A whole `make run` (profile `{profile}`) has not been timed yet"
    from .runs import machine  # one more name would not fit the import line above

    env, notebooks = r["environment"], ", ".join(f"{name[:2]}: {s:,.0f} s" for name, s in r["notebooks"].items())
    seed = read_json(results / "runs" / f"make-run-{profile}" / "config.json")  # the seed notebook 04 trained
    batch = f"; its seed (`make-run-{profile}`) trained at batch {seed['train']['batch_size']} per task" if seed else ""
    return (f"The last whole `make run` (profile `{profile}`, {env['time_utc'][:10]}, {machine(env['cpu'], env)}, "
            f"{env['cpu_threads']} threads) took {r['seconds_total'] / 60:.1f} min: {r['seconds_setup']:,.0f} s to "
            f"set up and fetch the model, then the notebooks ({notebooks}){batch}")


def fill(template: str, fields: dict) -> str:
    """Replace every ``{{NAME}}``; a placeholder without a field is an error, never left in the text."""
    unknown = sorted(set(re.findall(r"{{(\w+)}}", template)) - set(fields))
    if unknown:
        raise ValueError(f"writeup template: no generated field for {unknown}")
    return re.sub(r"{{(\w+)}}", lambda m: fields[m[1]], template)


def write_report(root=".") -> dict:
    """Regenerate ``results/summary.json``, ``writeup.md`` and ``loss_plot.png`` under ``root``."""
    root = Path(root)
    results = root / "results"
    runs = load_runs(results)
    summary = summarize(runs)
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["headline"] is None:
        return summary
    anchors = load_anchors(root / "docs" / "anchors.json")
    headline = summary["groups"][summary["headline"]]
    shutil.copyfile(runs[headline["runs"][0]]["dir"] / "loss_plot.png", root / "loss_plot.png")
    reported = [n for n, r in summary["runs"].items() if not r["legacy"] and r["study"] is None]
    order = sorted(reported, key=lambda n: (summary["runs"][n]["group"] != summary["headline"], n))
    legacy = sorted(n for n, r in summary["runs"].items() if r["legacy"])
    group_names = sorted({summary["runs"][n]["group"] for n in reported} - {None},
                         key=lambda g: (g != summary["headline"], g))
    fields = {
        "HEADLINE": summary["headline"],
        "HEADLINE_SEEDS": seeds_sentence(summary["headline"], headline),
        "DATA_FACTS": data_facts(summary, runs),
        "TRAINING_FACTS": training_facts(summary, runs), "MAKE_RUN": make_run_note(results),
        "VERSUS_REFERENCE": versus_reference(summary, anchors),
        "GROUPS_TABLE": groups_table(summary, group_names),
        "RUNS_TABLE": runs_table(summary, order) + (
            f"\n\nNot reported: {', '.join(legacy)} (records of the previous training loop)." if legacy else ""),
        "PER_TYPE_TABLE": per_type_table(summary, runs),
        "ANCHORS_TABLE": anchors_table(summary, anchors),
        "TASK3_TABLE": task3_table(summary, results),
        "BENCH_TABLE": bench_table(results),  # below: scripts/examples.py, through the shipped artifact
        "EXAMPLES": (results / "examples.md").read_text().rstrip() if (results / "examples.md").is_file() else "",
        "GPU_NOTE": summary.get("gpu_runs", "GPU runs are included above"),
    }
    (root / "writeup.md").write_text(fill((root / "docs" / "writeup.template.md").read_text(), fields))
    return summary
