"""scripts/study.py: every row is a valid configuration, and the table's means and deviations are the
seeds' own (checked against a hand computation)."""

import importlib.util
import json
from pathlib import Path

import pytest

from mtst.config import load_configs

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("study", ROOT / "scripts" / "study.py")
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


@pytest.mark.parametrize("row", list(study.ROWS))
def test_every_row_is_a_valid_config_that_differs_from_the_profile_in_what_trains(row):
    _, _, base = load_configs(study.PROFILE)
    _, _, train = load_configs(study.PROFILE, None, study.overrides(row, 43, Path("/r")))
    assert train.epochs == study.EPOCHS and train.seed == 43
    assert train.batch_size == base.batch_size and train.warmup_ratio == base.warmup_ratio
    assert train.init_from in (None, "/r/study-probe-s43/best")


def write_run(out: Path, row: str, seed: int, ag: float, f1: float, wall: float) -> None:
    folder = out / f"{row}-s{seed}"
    folder.mkdir(parents=True)
    folder.joinpath("metrics.json").write_text(json.dumps({
        "device_name": "cpu X", "wall_seconds": wall, "cpu_seconds": 2 * wall, "trainable_parameters": 1000,
        "test": {"cls": {"accuracy": ag}, "ner": {"entity_f1": f1, "coarse_token_accuracy": 0.9}}}))


def test_the_table_gives_each_rows_mean_and_sample_std(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    write_run(tmp_path, "top2", 42, 0.90, 0.80, 100)
    write_run(tmp_path, "top2", 43, 0.92, 0.84, 300)
    write_run(tmp_path, "probe", 42, 0.88, 0.70, 10)
    summary = study.report(tmp_path)
    assert summary["rows"]["top2"]["seeds"] == [42, 43] and "top4" in summary["not_run"]
    table = (tmp_path / "table.md").read_text()
    # mean 0.91, sample std sqrt(((0.90-0.91)^2 + (0.92-0.91)^2) / 1) = 0.01414
    assert "| 91.00 ± 1.41 | 82.00 ± 2.83 | 90.00 ± 0.00 | 200 ± 141 | 400 ± 283 |" in table
    assert "| probe |" in table and "| 88.00 | 70.00 |" in table and "1 of 3" in table
    assert (tmp_path / "results" / "task3.png").stat().st_size > 10_000
