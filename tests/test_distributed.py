"""Two CPU processes on the gloo backend through torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch

# Runs ``python -m mtst`` under torchrun, saving each rank's weights before and after ``fit``.
RECORD_WEIGHTS = """
import os, sys, torch
import mtst.experiment as experiment
from mtst.__main__ import main

def save(model, when):
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}-{when}.pt"))

real_fit = experiment.fit
def fit(model, *args, **kwargs):
    save(model, "start")
    history = real_fit(model, *args, **kwargs)
    save(model, "end")
    return history

experiment.fit = fit
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    script = tmp_path / "record_weights.py"
    script.write_text(RECORD_WEIGHTS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path), "train", "--profile", "smoke", "--name", "ddp", "--runs-dir", str(tmp_path / "runs"),
           "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    metrics = json.loads((run / "metrics.json").read_text())
    # metrics gathered from both ranks cover the whole test sets
    assert metrics["test"]["cls"]["n"] == 40 and metrics["test"]["ner"]["n"] == 12
    epochs = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    assert epochs and all(e["world_size"] == 2 for e in epochs)
    # each rank took half the batches of its task streams (80 AG / 40 CoNLL train rows, batch 8)
    assert epochs[0]["train_examples"]["cls"] <= 40
    assert (run / "best" / "heads.safetensors").is_file()

    # The ranks trained on different batches, yet end with the same weights, and training moved them.
    start, end = ({rank: torch.load(tmp_path / f"rank{rank}-{when}.pt") for rank in (0, 1)}
                  for when in ("start", "end"))
    assert start[0].keys() == end[0].keys() == end[1].keys()
    differ = [k for k in end[0] if not torch.equal(end[0][k], end[1][k])]
    assert not differ, f"{len(differ)} tensors differ between the ranks, e.g. {differ[:3]}"
    assert any(not torch.equal(start[0][k], end[0][k]) for k in end[0])
