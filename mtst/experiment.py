"""One call from configs to a finished, recorded run: data, model, fit, test metrics; and the notebooks,
which set up with ``Setup()`` and are re-executed in place by ``execute_all`` (``python -m mtst notebooks``).

Each notebook reads ``MTST_PROFILE`` (``smoke``, ``cpu`` or ``gpu``) to pick its configuration.
"""

import json
import logging
import os
import time
from pathlib import Path

import torch

from . import distributed as dist
from .assets import resolve_model, weights_sha256
from .config import DataConfig, ModelConfig, TrainConfig, best_profile, load_configs
from .data import load_ag_news, load_conll
from .distributed import autocast_dtype, resolve_device
from .features import TaskSplits, classification_features, ner_features
from .freezing import cache_prefix, prefix_layers
from .model import MultiTaskSentenceTransformer
from .runs import RunRecorder, environment, jsonable, plot_confusion, plot_losses
from .train import BEST, LAST, evaluate, fit

logger = logging.getLogger(__name__)

def build_model(cfg: ModelConfig, seed: int, init_from=None) -> MultiTaskSentenceTransformer:
    """The encoder ``cfg.model_name`` names with seeded fresh heads, or the saved model ``init_from``."""
    if init_from:
        return MultiTaskSentenceTransformer.from_pretrained(init_from)
    if dist.is_main():  # a model built on first use (mtst:tiny) is written by one process only
        resolve_model(cfg.model_name)
    dist.barrier()
    torch.manual_seed(seed)
    return MultiTaskSentenceTransformer.from_config(cfg)


def save_artifact(model: MultiTaskSentenceTransformer, cfg: ModelConfig, folder: Path) -> None:
    """Save the shipped form of a trained model: heads plus the encoder's delta on the base model.

    The base weights' checksum travels with them (``MultiTaskSentenceTransformer.save_artifact``).
    """
    source = Path(resolve_model(cfg.model_name))
    sha = weights_sha256(source) if source.is_dir() else None
    model.save_artifact(folder, base_model=cfg.model_name, base_sha256=sha, base_folder=source)


def build_task_data(model: MultiTaskSentenceTransformer, data_cfg: DataConfig) -> tuple[dict[str, TaskSplits], dict]:
    """Load AG News and CoNLL-2003 and pre-tokenise every split; also return the data record."""
    ag, conll = load_ag_news(data_cfg), load_conll(data_cfg)
    tok, n = model.tokenizer, data_cfg.max_length
    eval_n = model.encoder.max_seq_length  # evaluation reads whole sentences where it can
    data = {
        "cls": TaskSplits(classification_features(tok, ag.train, n), classification_features(tok, ag.val, eval_n),
                          classification_features(tok, ag.test, eval_n)),
        "ner": TaskSplits(*(ner_features(tok, split, model.ner_labels, m)
                            for split, m in ((conll.train, n), (conll.val, eval_n), (conll.test, eval_n)))),
    }
    record = {
        "sources": {"ag_news_train": ag.source, "conll_train": conll.source},
        "train_rows": {"ag_news": len(ag.train), "conll": len(conll.train)},
        "val_rows": {"ag_news": len(ag.val), "conll": len(conll.val)},
        "test_rows": {"ag_news": len(ag.test), "conll": len(conll.test)},
        "truncated": {f"{t}_{s}": getattr(d, s).truncated for t, d in data.items() for s in ("train", "val", "test")},
    }
    return data, record


def same_config(record_dir: Path, configs: dict) -> bool:
    """Whether ``record_dir`` holds the record of a run with exactly this configuration."""
    path = record_dir / "config.json"
    return path.is_file() and json.loads(path.read_text()) == json.loads(json.dumps(configs, default=jsonable))


def finished_run(run_dir: Path, record_dir: Path, configs: dict) -> dict | None:
    """The metrics of a finished run with exactly this configuration, if its checkpoint is here."""
    metrics = record_dir / "metrics.json"
    if (run_dir / BEST).is_dir() and metrics.is_file() and same_config(record_dir, configs):
        return json.loads(metrics.read_text())
    return None


def run_experiment(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig, name: str,
                   runs_dir="runs", record_dir=None, cache_dir="cache", resume: bool = False,
                   profile: str | None = None, reuse: bool = False) -> dict:
    """Train, pick the best epoch on validation, score it on the official test sets, record it all.

    Checkpoints go to ``runs_dir/name``; the record (config, environment, history, metrics, plots)
    to ``record_dir`` (default: the same folder). With ``reuse``, a run this checkout already
    finished with the same configuration (its checkpoint in ``run_dir``, its record in
    ``record_dir``) is returned instead of trained again, and an interrupted one is resumed.

    Returns:
        The metrics written to ``metrics.json``.
    """
    dist.init_from_env()
    run_dir = Path(runs_dir) / name
    record_dir = Path(record_dir) if record_dir else run_dir
    device = resolve_device(train_cfg.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    model = build_model(model_cfg, train_cfg.seed, train_cfg.init_from)
    data, data_record = build_task_data(model, data_cfg)
    data = {t: data[t] for t in train_cfg.tasks}  # one task alone: the single-task baseline
    configs = {"name": name, "profile": profile, "model": model_cfg, "data": data_cfg, "train": train_cfg,
               **data_record}
    if reuse and (done := finished_run(run_dir, record_dir, configs)):
        logger.info("%s: reusing the finished run in %s (delete it to train again)", name, run_dir)
        return done
    if reuse and (run_dir / LAST).is_file() and same_config(record_dir, configs):
        logger.info("%s: resuming the interrupted run in %s", name, run_dir)
        resume = True
    recorder = RunRecorder(record_dir, configs, device, resume) if dist.is_main() else None

    history = fit(model, data, train_cfg, run_dir, resume=resume, recorder=recorder,
                  cache_dir=Path(cache_dir) / "prefix")
    if history.interrupted:
        return {"interrupted": True, "step": history.resumed_at_step + history.steps_run}
    best = MultiTaskSentenceTransformer.from_pretrained(run_dir / BEST).to(device)
    test = evaluate(best, {t: d.test for t, d in data.items()}, train_cfg.eval_batch_size, train_cfg.precision)
    if not dist.is_main():
        return {}
    best_val = next(e for e in history.epochs if e["epoch"] == history.best_epoch)
    wall = time.perf_counter() - start
    metrics = {
        "name": name, "profile": profile, "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else environment()["cpu"],
        "precision": str(autocast_dtype(device, train_cfg.precision) or torch.float32).removeprefix("torch."),
        # Everything from building the model to the test scores, measured in this one process (a
        # resumed run: from the resume on; resumed_at_step says so).
        "wall_seconds": wall, "resumed_at_step": history.resumed_at_step,
        # CPU time of every thread of this process: what the run cost, less sensitive than wall
        # time to other work sharing the cores.
        "cpu_seconds": time.process_time() - cpu_start,
        "train_seconds": sum(e["seconds"] for e in history.epochs), "prefix_seconds": history.prefix_seconds,
        "prefix_from_cache": history.prefix_from_cache,
        "epochs_run": len(history.epochs), "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early, "freeze": train_cfg.freeze,
        "trainable_layers": train_cfg.trainable_layers,
        # what trained in the last epoch (gradual unfreezing adds layers as it goes)
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()), **data_record,
        "val": best_val, "test": {t: test[t] for t in data},
    }
    save_artifact(best, model_cfg, record_dir / "artifact")
    metrics["artifact"] = str(record_dir / "artifact")
    recorder.write_json("metrics.json", metrics)
    plot_losses(history.steps, history.epochs, record_dir / "loss_plot.png", title=name)
    if "cls" in test:
        plot_confusion(test["cls"]["confusion_matrix"], model.class_labels, record_dir / "confusion_matrix.png")
    logger.info("%s: AG News test accuracy %s, CoNLL test entity F1 %s", name,
                test.get("cls", {}).get("accuracy"), test.get("ner", {}).get("entity_f1"))
    return metrics



def rescore(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig, name: str, runs_dir="runs",
            record_dir=None, cache_dir="cache") -> dict:
    """Score a finished run's best checkpoint again with this version's ``evaluate()``.

    For after a change to the metrics or the decoding: validation and test are scored again;
    ``metrics.json`` keeps the earlier test scores under ``rescored.previous_test``.
    """
    run_dir = Path(runs_dir) / name
    record_dir = Path(record_dir) if record_dir else run_dir
    metrics = json.loads((record_dir / "metrics.json").read_text())
    device = resolve_device(train_cfg.device)
    best = MultiTaskSentenceTransformer.from_pretrained(run_dir / BEST).to(device)
    data, _ = build_task_data(best, data_cfg)
    data = {t: data[t] for t in train_cfg.tasks}
    cache_prefix(best, data, prefix_layers(best, train_cfg), autocast_dtype(device, train_cfg.precision),
                 Path(cache_dir) / "prefix", train_cfg.eval_batch_size)
    val = evaluate(best, {t: d.val for t, d in data.items()}, train_cfg.eval_batch_size, train_cfg.precision)
    test = evaluate(best, {t: d.test for t, d in data.items()}, train_cfg.eval_batch_size, train_cfg.precision)
    metrics["rescored"] = {"time_utc": environment()["time_utc"], "previous_test": metrics["test"],
                           "val": {t: val[t] for t in data}}
    metrics["test"] = {t: test[t] for t in data}
    (record_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=jsonable) + "\n")
    return metrics


# ---- the notebooks ---------------------------------------------------------------------------------

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute_all(profile: str = "auto", folder=NOTEBOOKS, timeout: int | None = None, out_dir=None,
                only: tuple[str, ...] = (), since: float | None = None) -> dict:
    """Execute every ``NN_*.ipynb`` in ``folder`` in order, saving outputs in place.

    Smoke runs save to ``out_dir`` or a temporary folder instead, leaving the committed notebooks alone.
    ``since`` (Unix seconds, taken by ``make run`` before it sets anything up) adds
    ``results/make-run-<profile>.json``: the whole run's wall time, setup and notebooks.

    Returns the wall seconds per notebook (also written to ``results/notebooks-<profile>.json``
    for real runs; ``python -m mtst notebooks`` then regenerates the summary and writeup).
    """
    import tempfile

    import nbformat
    from nbclient import NotebookClient

    profile = best_profile() if profile == "auto" else profile
    os.environ["MTST_PROFILE"] = profile
    folder = Path(folder)
    out_dir = Path(out_dir or (tempfile.mkdtemp(prefix="mtst-notebooks-") if profile == "smoke" else folder))
    out_dir.mkdir(parents=True, exist_ok=True)
    times, notebooks_start = {}, time.time()
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        if only and not path.name.startswith(tuple(only)):
            continue
        logger.info("executing %s (profile %s)", path.name, profile)
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
        times[path.name] = round(time.perf_counter() - start, 1)
        nbformat.write(nb, out_dir / path.name)
        logger.info("%s done in %.0f s", path.name, times[path.name])
    if profile != "smoke":
        out = folder.parent / "results" / f"notebooks-{profile}.json"
        out.parent.mkdir(exist_ok=True)
        env = environment()
        earlier = json.loads(out.read_text()) if only and out.is_file() else {}
        kept = earlier["seconds"] if earlier.get("environment", {}).get("cpu") == env["cpu"] else {}  # same CPU only
        out.write_text(json.dumps({"profile": profile, "seconds": {**kept, **times}, "environment": env}, indent=2))
        if since is not None and not only:
            whole = {"profile": profile, "seconds_total": round(time.time() - since, 1),
                     "seconds_setup": round(notebooks_start - since, 1), "notebooks": times, "environment": env}
            (out.parent / f"make-run-{profile}.json").write_text(json.dumps(whole, indent=2))
    return times


class Setup:
    """What a notebook needs, in one call: quiet logs, the profile's configs, and where runs go.

    ``MTST_PROFILE`` picks the profile (``smoke``: tiny model and fixtures, for CI; ``cpu``; ``gpu``).
    Smoke runs write into a temporary folder so the committed results stay as they are.
    """

    def __init__(self, profile: str | None = None):
        import tempfile
        import warnings

        from transformers.utils import logging as hf_logging

        warnings.filterwarnings("ignore")
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.basicConfig(level=logging.WARNING)
        self.profile = profile or os.environ.get("MTST_PROFILE") or best_profile()
        self.root = NOTEBOOKS.parent
        self.model_cfg, self.data_cfg, self.train_cfg = load_configs(self.profile)
        scratch = Path(tempfile.mkdtemp(prefix="mtst-smoke-")) if self.profile == "smoke" else None
        self.results_dir = scratch / "results" if scratch else self.root / "results"
        self.runs_dir = scratch / "runs" if scratch else self.root / "runs"
        self.cache_dir = self.root / "cache"

    @property
    def headline_name(self) -> str:
        """The headline run of this profile: its first seed."""
        return f"{self.profile}-s{self.train_cfg.seed}"

    def train_headline(self) -> dict:
        """Train the profile's headline seed, or reuse it when this checkout already finished it.

        Reused only with the same config; its record goes to ``results/runs/<profile>-s<seed>``.
        """
        return run_experiment(self.model_cfg, self.data_cfg, self.train_cfg, self.headline_name,
                              runs_dir=self.runs_dir, record_dir=self.results_dir / "runs" / self.headline_name,
                              cache_dir=self.cache_dir, profile=self.profile, reuse=True)

    def __repr__(self) -> str:
        return (f"Setup(profile={self.profile!r}, model={self.model_cfg.model_name!r}, "
                f"data_dir={self.data_cfg.data_dir!r}, results={str(self.results_dir)!r})")
