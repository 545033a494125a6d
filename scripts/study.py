"""Task 3 by measurement: every freezing strategy on one budget (``make study``).

Each row trains the ``cpu`` profile (reference protocol: 9,600 / 2,400 AG News rows, all CoNLL
train, official test sets) for the same budget, ``EPOCHS`` epoch(s), changing only what trains. The
frozen bottom of the encoder runs once for the whole study: the first step caches the deepest
prefix any row needs and, from the same pass, every shallower depth another row needs
(``mtst.freezing.prefix_states``, ``keep``), bit for bit what each run would compute itself.

Each run is ``python -m mtst train --reuse``: a finished row is kept, an interrupted one resumes,
so the study spans interruptions. Records go to ``results/study/<row>-s<seed>/``.

    python scripts/study.py                 # every row, in the order below
    python scripts/study.py --only top2 top4
    python scripts/study.py --list
"""

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 1
PROFILE = "cpu"
SEEDS = (42,)

# name -> (what it shows, overrides on top of the cpu profile). Order: the rows the conclusions
# rest on first.
ROWS = {
    "probe": ("encoder frozen, heads only (linear probe)", ["train.trainable_layers=0"]),
    "top2": ("top 2 layers train", ["train.trainable_layers=2"]),
    "top4": ("top 4 layers train", ["train.trainable_layers=4"]),
    "top6": ("top 6 layers train", ["train.trainable_layers=6"]),
}


def overrides(row: str, seed: int) -> list[str]:
    """The ``--set`` arguments of one run."""
    return [f"train.epochs={EPOCHS}", f"train.seed={seed}", *ROWS[row][1]]


def warm_cache(rows: list[str], profile: str, cache_dir: Path) -> None:
    """Cache the deepest frozen prefix the rows need, keeping every shallower depth on the way."""
    from mtst.config import load_configs
    from mtst.distributed import autocast_dtype, resolve_device
    from mtst.experiment import build_model, build_task_data
    from mtst.freezing import cache_prefix, prefix_layers

    configs = [load_configs(profile, None, overrides(row, SEEDS[0])) for row in rows]
    model_cfg, data_cfg, train_cfg = configs[0]  # the rows differ only in what trains
    model = build_model(model_cfg, train_cfg.seed)
    needed = sorted({n for *_, cfg in configs if (n := prefix_layers(model, cfg)) is not None})
    if not needed:
        return
    data, _ = build_task_data(model, data_cfg)
    device = resolve_device(train_cfg.device)
    cache_prefix(model.to(device), data, needed[-1], autocast_dtype(device, train_cfg.precision),
                 cache_dir / "prefix", train_cfg.eval_batch_size, keep=tuple(needed[:-1]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", choices=sorted(ROWS), help="these rows only")
    p.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    p.add_argument("--cache-dir", default=str(ROOT / "cache"))
    p.add_argument("--profile", default=PROFILE, help="smoke: the tiny model on the tiny data (a check)")
    p.add_argument("--out", default=str(ROOT / "results" / "study"), help="where the run records go")
    p.add_argument("--list", action="store_true", help="print the rows and exit")
    args = p.parse_args(argv)
    rows = args.only or list(ROWS)
    if args.list:
        for row in rows:
            print(f"{row:10s} {ROWS[row][0]}: --set {' '.join(overrides(row, args.seeds[0]))}")
        return
    warm_cache(rows, args.profile, Path(args.cache_dir))
    for seed in args.seeds:
        for row in rows:
            name = f"study-{row}-s{seed}"
            cmd = [sys.executable, "-m", "mtst", "train", "--profile", args.profile, "--name", name,
                   "--record-dir", str(Path(args.out) / f"{row}-s{seed}"),
                   "--cache-dir", args.cache_dir, "--reuse"]
            for item in overrides(row, seed):
                cmd += ["--set", item]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
