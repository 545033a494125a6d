"""Two CPU processes on the gloo backend through torchrun."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mtst", "train", "--profile", "smoke", "--name", "ddp", "--runs-dir", str(tmp_path / "runs"),
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
