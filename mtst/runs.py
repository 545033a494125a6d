"""Every run leaves a record: config, environment, history (JSONL), metrics (JSON), plots; read back,
the records make ``results/summary.json``.

Runs named ``<group>-s<seed>`` form a seed group, reported as the mean and sample standard deviation
over its finished seeds. The headline is the first group of ``HEADLINE_ORDER`` with a finished seed.
"""

import contextlib
import dataclasses
import json
import logging
import platform
import re
import statistics
import time
from importlib import metadata
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PACKAGES = ("mtst", "torch", "transformers", "tokenizers", "sentence-transformers", "safetensors",
            "scikit-learn", "seqeval", "peft", "numpy")

# What decides CPU training and inference speed here: bf16 / int8 matrix units.
CPU_FEATURES = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"}
CPUINFO = Path("/proc/cpuinfo")


def environment(device: torch.device | str | None = None) -> dict:
    """Versions, machine and device, for the record."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    fields = {}  # the first processor's /proc/cpuinfo lines, up to its flags
    with contextlib.suppress(OSError):
        for key, _, value in (line.partition(":") for line in CPUINFO.read_text().splitlines()):
            fields.setdefault(key.strip(), value.strip())
            if key.strip() == "flags":
                break
    cpu, flags = fields.get("model name", platform.processor()), set(fields.get("flags", "").split())
    if "cpu family" in fields and "model" in fields:  # "AMD EPYC" alone names Zen 1, 3 and 4 alike
        cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
           "cpu_features": sorted(flags & CPU_FEATURES),
           "cpu_threads": torch.get_num_threads(), "packages": versions,
           "device": str(device) if device is not None else None,
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def jsonable(obj):
    """``json.dumps`` default for dataclasses (configs) and numpy / torch scalars."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


class RunRecorder:
    """Writes a run's record into ``folder``; only the main process should own one."""

    def __init__(self, folder, configs: dict, device=None, resume: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write_json("config.json", configs)
        self.write_json("environment.json", environment(device))
        self.history = self.folder / "history.jsonl"
        if not resume:
            self.history.write_text("")

    def write_json(self, name: str, obj) -> None:
        """Write one JSON file of the record (``json.dumps`` with ``jsonable`` for configs and scalars)."""
        (self.folder / name).write_text(json.dumps(obj, indent=2, default=jsonable) + "\n")

    def _append(self, record: dict) -> None:
        with self.history.open("a") as f:
            f.write(json.dumps(record, default=jsonable) + "\n")

    def rewrite(self, steps: list[dict], epochs: list[dict]) -> None:
        """Replace the history with these records (a resumed run drops what followed its checkpoint)."""
        records = [{"kind": "step", **r} for r in steps] + [{"kind": "epoch", **r} for r in epochs]
        records.sort(key=lambda r: (r["step"], r["kind"] == "epoch"))  # an epoch closes after its steps
        self.history.write_text("".join(json.dumps(r, default=jsonable) + "\n" for r in records))

    def log_step(self, record: dict) -> None:
        """Append a step record (train losses, learning rate) to ``history.jsonl``."""
        self._append({"kind": "step", **record})

    def log_epoch(self, record: dict) -> None:
        """Append an epoch record (validation scores, timing) to ``history.jsonl``."""
        self._append({"kind": "epoch", **record})


def plot_losses(steps: list[dict], epochs: list[dict], path, title: str = "") -> None:
    """Train loss per task (per logged step) and validation loss per task (per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, task, name in ((axes[0], "cls", "AG News topic"), (axes[1], "ner", "CoNLL-2003 NER")):
        points = [(s["step"], s[f"train_{task}_loss"]) for s in steps if f"train_{task}_loss" in s]
        if points:
            ax.plot(*zip(*points), label="train", alpha=0.8)
        if epochs and f"val_{task}_loss" in epochs[0]:
            ax.plot([e["step"] for e in epochs], [e[f"val_{task}_loss"] for e in epochs], "o-", label="validation")
        ax.set(title=name, xlabel="step", ylabel="cross-entropy")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(matrix, labels, path, title: str = "AG News test confusion matrix") -> None:
    """The AG News confusion matrix (rows: gold, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > max(map(max, matrix)) / 2 else "black")
    ax.set(xlabel="predicted", ylabel="gold", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the records read back ------------------------------------------------------------------------

HEADLINE_ORDER = ("gpu", "cpu", "smoke")
PLANNED_SEEDS = 3  # the protocol: every reported group runs three seeds
SEEDED = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")
# summary.json key -> (label, path in metrics.json). Anchors name these keys, so ours is compared like for like.
METRICS = {
    "ag_news_test_accuracy": ("AG News test accuracy", ("test", "cls", "accuracy")),
    "ag_news_test_macro_f1": ("AG News test macro-F1", ("test", "cls", "macro_f1")),
    "conll_test_entity_f1": ("CoNLL-2003 test entity F1", ("test", "ner", "entity_f1")),
    "conll_test_strict_entity_f1": ("CoNLL-2003 test strict entity F1", ("test", "ner", "strict_entity_f1")),
    "conll_test_token_accuracy": ("CoNLL-2003 test token accuracy, 9 IOB2 labels", ("test", "ner", "token_accuracy")),
    "conll_test_coarse_token_accuracy": ("CoNLL-2003 test token accuracy, 5 coarse labels",
                                         ("test", "ner", "coarse_token_accuracy")),
    "wall_seconds": ("wall seconds", ("wall_seconds",)),
}
SCORES = [k for k in METRICS if k != "wall_seconds"]


def read_json(path: Path):
    """The JSON file at ``path``, or None when there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def _get(d: dict, path: tuple):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def load_runs(results: Path) -> dict[str, dict]:
    """Every run folder under ``results/runs`` (nested ones too, e.g. ``task3/<name>``), read back.

    Keyed by its path there: ``metrics`` (None while the run has not finished), ``config``,
    ``environment``, ``dir``.
    """
    root = results / "runs"
    runs = {}
    for env in sorted(root.rglob("environment.json")):  # the recorder writes it first, artifacts never
        folder = env.parent
        runs[folder.relative_to(root).as_posix()] = {
            "dir": folder, "metrics": read_json(folder / "metrics.json"),
            "config": read_json(folder / "config.json") or {}, "environment": read_json(env)}
    return runs


def seed_group(name: str, config: dict) -> tuple[str | None, int | None]:
    """``("cpu", 42)`` for ``cpu-s42``; ``(None, None)`` for a run outside any seed group."""
    match = SEEDED.match(name)
    if not match:
        return None, None
    seed = int(match["seed"])
    if config.get("train", {}).get("seed", seed) != seed:
        raise ValueError(f"{name}: its config says train.seed={config['train']['seed']}, its name says {seed}")
    return match["group"], seed


def run_row(name: str, run: dict) -> dict:
    """One finished run's entry in summary.json."""
    m, config, env = run["metrics"], run["config"], run["environment"] or {}
    group, seed = seed_group(name, config)
    return {key: _get(m, path) for key, (_, path) in METRICS.items()} | {
        "group": group, "seed": seed, "study": "task3" if name.startswith("task3/") else m.get("study"),
        # written by the previous loop (before precision, prefix caching and coarse accuracy were recorded)
        "legacy": "precision" not in m,
        "ag_news_val_accuracy": m["val"]["val_cls_accuracy"], "conll_val_entity_f1": m["val"]["val_entity_f1"],
        "profile": m.get("profile"), "device": m["device"], "device_name": m.get("device_name"),
        "cpu_threads": env.get("cpu_threads"), "torch": env.get("packages", {}).get("torch"),
        "machine": machine(m.get("device_name"), env),
        "precision": m.get("precision"), "freeze": m.get("freeze"), "trainable_layers": m.get("trainable_layers"),
        "epochs_run": m["epochs_run"], "epochs_configured": _get(config, ("train", "epochs")),
        "best_epoch": m["best_epoch"], "stopped_early": m["stopped_early"],
        "resumed_at_step": m.get("resumed_at_step"), "prefix_seconds": m.get("prefix_seconds"),
        # Older records lack the flag: a prefix "built" in under a minute was read from a cache.
        "prefix_from_cache": m.get("prefix_from_cache", (m.get("prefix_seconds") or 0) < 60),
        "train_seconds": m.get("train_seconds"), "cpu_seconds": m.get("cpu_seconds"),
        "trainable_parameters": m.get("trainable_parameters"),
        "train_rows": m["train_rows"], "val_rows": m["val_rows"], "test_rows": m["test_rows"],
        "ag_news_train_file": m["sources"]["ag_news_train"]["file"].split("/")[-1],
    }


def mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for one value; both None if any value is missing)."""
    if not values or any(v is None for v in values):
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def machine(device_name: str | None, env: dict) -> str:
    """The device and, for a CPU, whether it computes bf16 with AMX or with AVX512-BF16 only."""
    features = set(env.get("cpu_features") or [])
    kind = "AMX" if "amx_bf16" in features else "AVX512-BF16, no AMX" if "avx512_bf16" in features else None
    return f"{device_name} ({kind})" if kind and not str(env.get("device", "")).startswith("cuda") else str(device_name)


def group_stats(names: list[str], rows: dict, unfinished: list[int]) -> dict:
    """Mean and sample standard deviation over a group's finished seeds, the per-seed values and the median
    wall time. Wall time gets no mean or median when the seeds ran on different kinds of machine or one
    was resumed (its wall time counts from the resume)."""
    names = sorted(names, key=lambda n: (rows[n]["seed"] or 0, n))
    stats, walls = {k: mean_std([rows[n][k] for n in names]) for k in METRICS}, [rows[n]["wall_seconds"] for n in names]
    if len({rows[n]["machine"] for n in names}) > 1 or any(rows[n]["resumed_at_step"] for n in names):
        stats["wall_seconds"], walls = (None, None), None
    return {"n": len(names), "planned": max(PLANNED_SEEDS, len(names) + len(unfinished)),
            "seeds": [rows[n]["seed"] for n in names], "runs": names, "unfinished_seeds": sorted(unfinished),
            "mean": {k: v[0] for k, v in stats.items()}, "std": {k: v[1] for k, v in stats.items()},
            "median_wall_seconds": walls and statistics.median(walls),
            "per_seed": {str(rows[n]["seed"]): {k: rows[n][k] for k in METRICS} for n in names}}


def summarize(runs: dict[str, dict]) -> dict:
    """What ``results/summary.json`` holds: a row per finished run, the seed groups' statistics, the headline."""
    rows = {name: run_row(name, run) for name, run in runs.items() if run["metrics"]}
    members, unfinished = {}, {}
    for name, row in rows.items():
        if row["group"] is not None and not row["legacy"]:
            members.setdefault(row["group"], []).append(name)
    for name, run in runs.items():
        group, seed = seed_group(name, run["config"])
        if run["metrics"] is None and group is not None:
            unfinished.setdefault(group, []).append(seed)
    groups = {g: group_stats(names, rows, unfinished.get(g, [])) for g, names in sorted(members.items())}
    out = {"generated_by": "python -m mtst report",
           "headline": next((g for g in HEADLINE_ORDER if g in groups), None),
           "groups": groups, "runs": rows, "unfinished": sorted(n for n, r in runs.items() if not r["metrics"])}
    if not any(r["device"].startswith("cuda") for r in rows.values()):
        out["gpu_runs"] = "not run yet: no GPU was available to the sessions that produced these results"
    return out


def load_anchors(path: Path) -> dict:
    """The published figures and targets of ``docs/anchors.json``, their metric names checked."""
    anchors = json.loads(path.read_text())
    for entry in anchors["anchors"] + anchors["targets"]["minimums"]:
        if entry["metric"] not in SCORES:
            raise ValueError(f"{path}: unknown metric {entry['metric']!r}; use one of {SCORES}")
    return anchors


def study_stamp(runs) -> str:
    """The first line of ``results/task3.md``: the runs its conclusions were computed from."""
    return f"<!-- runs: {' '.join(sorted(runs))} -->"


def study_conclusions(path: Path, runs) -> str | None:
    """The conclusions ``scripts/study.py --report`` computed (``results/task3.md``), or None when they
    are missing or were computed from other runs than ``runs`` (stale: a row finished since)."""
    text = path.read_text() if path.is_file() else ""
    first, _, body = text.partition("\n")
    return body.rstrip() if first == study_stamp(runs) else None
