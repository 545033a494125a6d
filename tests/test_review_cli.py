"""The command line: an interrupted run, the encode defaults, and one-line errors for bad inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mtst.experiment
from mtst.__main__ import main


def test_interrupted_train_says_how_to_resume(monkeypatch, tmp_path, capsys):
    """``run_experiment`` returns ``{"interrupted": True, "step": N}`` when ``stop_after_steps`` stops it."""
    monkeypatch.setattr(mtst.experiment, "run_experiment", lambda *a, **k: {"interrupted": True, "step": 25})
    main(["train", "--profile", "smoke", "--set", "train.stop_after_steps=25", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "interrupted at step 25" in out and "--resume" in out
    assert str(tmp_path / "smoke" / "last.pt") in out


@pytest.mark.slow
def test_stop_after_steps_exits_cleanly(tmp_path):
    cmd = [sys.executable, "-m", "mtst", "train", "--profile", "smoke", "--set", "train.stop_after_steps=3",
           "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    # (the step printed is experiment.py's: the last *logged* step, 2 here with log_every=2)
    assert "interrupted at step" in done.stdout and "--resume" in done.stdout
    assert (tmp_path / "runs" / "smoke" / "last.pt").is_file()


def test_encode_normalizes_as_the_folder_says(tiny_model_dir, tmp_path, capsys):
    from test_encoder import _with_normalize_module

    folder = _with_normalize_module(tiny_model_dir, tmp_path / "normalized")
    for model, flag, normalized in ((folder, [], True), (folder, ["--no-normalize"], False),
                                    (tiny_model_dir, [], False), (tiny_model_dir, ["--normalize"], True)):
        main(["encode", "--model", str(model), *flag, "Oil prices rose."])
        out = json.loads(capsys.readouterr().out)
        assert out["normalized"] is normalized
        assert bool(abs(np.linalg.norm(out["embeddings"][0]) - 1) < 1e-5) is normalized
