"""Re-execute the notebooks in place (``python -m mtst notebooks``), as the README's main command does.

Each notebook reads ``MTST_PROFILE`` (``smoke``, ``cpu`` or ``gpu``) to pick its configuration.
"""

import json
import logging
import os
import time
from pathlib import Path

from .config import best_profile

logger = logging.getLogger(__name__)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute_all(profile: str = "auto", folder=NOTEBOOKS, timeout: int | None = None, out_dir=None,
                only: tuple[str, ...] = ()) -> dict:
    """Execute every ``NN_*.ipynb`` in ``folder`` in order, saving outputs in place (smoke runs
    save to ``out_dir`` or a temporary folder instead, leaving the committed notebooks alone).

    Returns the wall seconds per notebook (also written to ``results/notebooks-<profile>.json``
    for real runs, followed by the results summary and writeup, ``python -m mtst report``).
    """
    import tempfile

    import nbformat
    from nbclient import NotebookClient

    profile = best_profile() if profile == "auto" else profile
    os.environ["MTST_PROFILE"] = profile
    folder = Path(folder)
    out_dir = Path(out_dir or (tempfile.mkdtemp(prefix="mtst-notebooks-") if profile == "smoke" else folder))
    out_dir.mkdir(parents=True, exist_ok=True)
    times = {}
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
        from .runs import environment

        out = folder.parent / "results" / f"notebooks-{profile}.json"
        out.parent.mkdir(exist_ok=True)
        earlier = json.loads(out.read_text())["seconds"] if only and out.is_file() else {}
        out.write_text(json.dumps({"profile": profile, "seconds": {**earlier, **times},
                                   "environment": environment()}, indent=2))
        from .report import write_report

        write_report(folder.parent)
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

        from .config import load_configs

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
        """Train (or, when this checkout already finished it with the same config, reuse) the
        headline seed; its record goes to ``results/runs/<profile>-s<seed>``.
        """
        from .experiment import run_experiment

        return run_experiment(self.model_cfg, self.data_cfg, self.train_cfg, self.headline_name,
                              runs_dir=self.runs_dir, record_dir=self.results_dir / "runs" / self.headline_name,
                              cache_dir=self.cache_dir, profile=self.profile, reuse=True)

    def __repr__(self) -> str:
        return (f"Setup(profile={self.profile!r}, model={self.model_cfg.model_name!r}, "
                f"data_dir={self.data_cfg.data_dir!r}, results={str(self.results_dir)!r})")
