"""Every run leaves a record: config, environment, history (JSONL), metrics (JSON), plots."""

import dataclasses
import json
import logging
import platform
import time
from importlib import metadata
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PACKAGES = ("mtst", "torch", "transformers", "tokenizers", "sentence-transformers", "safetensors",
            "scikit-learn", "seqeval", "peft", "numpy")

# What decides CPU training and inference speed here: bf16 / int8 matrix units.
CPU_FEATURES = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"}


def environment(device: torch.device | str | None = None) -> dict:
    """Versions, machine and device, for the record."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
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
        self._append({"kind": "step", **record})

    def log_epoch(self, record: dict) -> None:
        self._append({"kind": "epoch", **record})


def read_history(path) -> tuple[list[dict], list[dict]]:
    """Step and epoch records of a ``history.jsonl``."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "step"], [r for r in records if r["kind"] == "epoch"]


def plot_losses(steps: list[dict], epochs: list[dict], path, title: str = "") -> None:
    """Train loss per task (per logged step) and validation loss per task (per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, task, name in ((axes[0], "cls", "AG News topic"), (axes[1], "ner", "CoNLL-2003 NER")):
        if steps and f"train_{task}_loss" in steps[0]:
            ax.plot([s["step"] for s in steps if f"train_{task}_loss" in s],
                    [s[f"train_{task}_loss"] for s in steps if f"train_{task}_loss" in s],
                    label="train", alpha=0.8)
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
