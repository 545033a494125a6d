"""The benchmarks' ``--tiny`` modes run end to end and write complete records."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, out: Path, *args: str) -> None:
    # One thread: these are smoke runs, and a busy machine makes OpenMP spin-waits very slow.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--out", str(out)], check=True, env=env,
                   cwd=ROOT, timeout=300, capture_output=True)


@pytest.mark.slow
def test_encode_and_train_benches(tmp_path):
    run_bench("encode.py", tmp_path, "--tiny", "--device", "cpu", "--modes", "exact,bf16-autocast,bf16")
    run_bench("train.py", tmp_path, "--tiny", "--device", "cpu")

    encode = json.loads((tmp_path / "encode-tiny-cpu.json").read_text())
    assert encode["tiny"] and encode["settings"]["batch_size"] == 32
    assert encode["environment"]["packages"]["torch"]
    baseline = encode["results"]["sentence-transformers"]
    assert baseline["sentences_per_s"] > 0 and baseline["max_abs_diff"] == 0
    exact = encode["results"]["exact"]
    assert exact["speedup_vs_st"] > 0 and exact["max_abs_diff"] <= 1e-5
    for mode in ("bf16-autocast", "bf16"):
        assert encode["results"][mode]["speedup_vs_st"] > 0 and encode["results"][mode]["min_cosine"] > 0.99

    train = json.loads((tmp_path / "train-tiny-cpu.json").read_text())
    ours = [r for r in train["results"] if r["design"] == "mtst"]
    reference = [r for r in train["results"] if r["design"] == "reference"]
    assert len(ours) == 1 and len(reference) == 1
    for row in ours + reference:
        for key in ("samples_per_s", "real_tokens_per_s", "padding_fraction", "model_tflops", "mfu",
                    "peak_memory_mb", "epoch_seconds"):
            assert key in row, key
        assert row["mfu"] == "n/a"  # no bf16 peak is claimed for a CPU
    assert ours[0]["speedup_vs_reference"] > 0
    assert reference[0]["padding_fraction"] > ours[0]["padding_fraction"]  # CoNLL padded to 128

    subprocess.run([sys.executable, str(ROOT / "bench" / "summary.py"), "--dir", str(tmp_path), "--tiny"],
                   check=True, cwd=ROOT, capture_output=True, timeout=60)
    summary = json.loads((tmp_path / "summary-tiny.json").read_text())
    assert summary["encode_speedup_vs_st_cpu"] > 0 and summary["train_speedup_vs_reference_cpu"] > 0
    assert summary["encode_exact_speedup_vs_st_cpu"] > 0 and summary["encode_min_cosine"] > 0.99
    assert summary["train_speedup_vs_reference_gpu"] is None and "no GPU" in summary["notes"]["gpu"]
