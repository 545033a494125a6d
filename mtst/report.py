"""``python -m mtst report``: ``results/summary.json``, the tables of ``writeup.md`` and the top-level
``loss_plot.png``, all generated from the run records under ``results/`` (nothing typed by hand).
"""

import json
import shutil
from pathlib import Path

# Published anchors quoted in the writeup (not ours; cited there).
ANCHORS = [
    ("Reference design (this exercise), AG News 10% train", "AG News test accuracy", 0.9211),
    ("Reference design (this exercise)", "CoNLL-2003 test token accuracy", 0.9790),
    ("BERT-base, full AG News train (Sun et al. 2019)", "AG News test accuracy", 0.945),
    ("XLNet-large, full AG News train (Yang et al. 2019)", "AG News test accuracy", 0.955),
    ("BERT-base cased (Devlin et al. 2019)", "CoNLL-2003 test entity F1", 0.924),
    ("HF run_ner, bert-base-cased", "CoNLL-2003 test entity F1", 0.9155),
    ("HF run_ner, bert-base-cased", "CoNLL-2003 test token accuracy", 0.9831),
]
HEADLINE_ORDER = ("gpu-headline", "cpu-linear-probe", "smoke-headline")


def load_runs(results: Path) -> dict[str, dict]:
    runs = {}
    for path in sorted((results / "runs").glob("*/metrics.json")):
        runs[path.parent.name] = json.loads(path.read_text())
    return runs


def summarize(runs: dict[str, dict]) -> dict:
    headline = next((name for name in HEADLINE_ORDER if name in runs), None)
    out = {"generated_by": "python -m mtst report", "headline": headline, "runs": {}}
    for name, m in runs.items():
        out["runs"][name] = {
            "ag_news_test_accuracy": m["test"]["cls"]["accuracy"],
            "ag_news_test_macro_f1": m["test"]["cls"]["macro_f1"],
            "conll_test_entity_f1": m["test"]["ner"]["entity_f1"],
            "conll_test_strict_entity_f1": m["test"]["ner"]["strict_entity_f1"],
            "conll_test_token_accuracy": m["test"]["ner"]["token_accuracy"],
            "ag_news_val_accuracy": m["val"]["val_cls_accuracy"],
            "conll_val_entity_f1": m["val"]["val_entity_f1"],
            # cold: as on a fresh machine (a probe that read cached features adds their encoding time)
            "device": m["device"], "device_name": m.get("device_name"),
            "wall_seconds": m.get("cold_wall_seconds", m["wall_seconds"]),
            "freeze": m.get("freeze"), "profile": m.get("profile"), "best_epoch": m["best_epoch"],
            "train_rows": m["train_rows"], "val_rows": m["val_rows"], "test_rows": m["test_rows"],
            "ag_news_train_file": m["sources"]["ag_news_train"]["file"].split("/")[-1],
        }
    if not any(r["device"].startswith("cuda") for r in out["runs"].values()):
        out["gpu_runs"] = "not run yet: no GPU was available to the sessions that produced these results"
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def results_table(summary: dict) -> str:
    lines = ["| run | strategy | AG train / val / test rows | AG test acc | AG test macro-F1 | AG val acc "
             "| CoNLL test entity F1 | strict F1 | CoNLL test token acc | CoNLL val entity F1 | wall s | device |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in sorted(summary["runs"].items(), key=lambda kv: kv[0] != summary["headline"]):
        rows = f'{r["train_rows"]["ag_news"]} / {r["val_rows"]["ag_news"]} / {r["test_rows"]["ag_news"]}'
        lines.append(f'| {"**" + name + "**" if name == summary["headline"] else name} | {r["freeze"]} | {rows} '
                     f'| {_pct(r["ag_news_test_accuracy"])} | {_pct(r["ag_news_test_macro_f1"])} '
                     f'| {_pct(r["ag_news_val_accuracy"])} | {_pct(r["conll_test_entity_f1"])} '
                     f'| {_pct(r["conll_test_strict_entity_f1"])} | {_pct(r["conll_test_token_accuracy"])} '
                     f'| {_pct(r["conll_val_entity_f1"])} | {r["wall_seconds"]:.0f} | {r["device_name"]} |')
    return "\n".join(lines)


def per_type_table(metrics: dict) -> str:
    lines = ["| type | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    for etype, v in metrics["test"]["ner"]["per_type"].items():
        lines.append(f'| {etype} | {_pct(v["precision"])} | {_pct(v["recall"])} | {_pct(v["f1"])} | {v["support"]} |')
    return "\n".join(lines)


def anchors_table(summary: dict) -> str:
    head = summary["runs"].get(summary["headline"], {})
    ours = {"AG News test accuracy": head.get("ag_news_test_accuracy"),
            "CoNLL-2003 test token accuracy": head.get("conll_test_token_accuracy"),
            "CoNLL-2003 test entity F1": head.get("conll_test_entity_f1")}
    lines = ["| system | metric | published | ours (headline) |", "| --- | --- | --- | --- |"]
    for system, metric, value in ANCHORS:
        lines.append(f"| {system} | {metric} | {_pct(value)} | {_pct(ours[metric])} |")
    return "\n".join(lines)


def bench_table(results: Path) -> str:
    path = results / "bench" / "summary.json"
    if not path.is_file():
        return "_No benchmark results yet (`python bench/summary.py`)._"
    summary = json.loads(path.read_text())
    lines = ["| figure | value |", "| --- | --- |"]
    for key, value in summary.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"| `{key}` | {value:.4g} |")
        elif value is None:
            lines.append(f"| `{key}` | not measured |")
    return "\n".join(lines)


def write_report(root=".") -> dict:
    """Regenerate ``results/summary.json``, ``writeup.md`` and ``loss_plot.png`` under ``root``."""
    root = Path(root)
    results = root / "results"
    runs = load_runs(results)
    summary = summarize(runs)
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["headline"] is None:
        return summary
    headline = runs[summary["headline"]]
    shutil.copyfile(results / "runs" / summary["headline"] / "loss_plot.png", root / "loss_plot.png")
    task3 = {k: v for k, v in summary["runs"].items() if k.startswith("task3-")}
    fields = {
        "HEADLINE": summary["headline"],
        "RESULTS_TABLE": results_table({**summary, "runs": {k: v for k, v in summary["runs"].items()
                                                           if not k.startswith("task3-")}}),
        "TASK3_TABLE": results_table({**summary, "runs": task3}) if task3 else "_not run yet_",
        "PER_TYPE_TABLE": per_type_table(headline),
        "ANCHORS_TABLE": anchors_table(summary),
        "BENCH_TABLE": bench_table(results),
        "GPU_NOTE": summary.get("gpu_runs", "GPU runs are included above."),
    }
    text = (root / "docs" / "writeup.template.md").read_text()
    for key, value in fields.items():
        text = text.replace("{{" + key + "}}", value)
    (root / "writeup.md").write_text(text)
    return summary


if __name__ == "__main__":
    print(json.dumps(write_report(), indent=2))
