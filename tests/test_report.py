"""The summary and the writeup tables are generated from run records, never typed."""

import json
import shutil
from pathlib import Path

from conftest import FIXTURE_DATA

from mtst.config import DataConfig, ModelConfig, TrainConfig
from mtst.experiment import run_experiment
from mtst.report import write_report

ROOT = Path(__file__).resolve().parent.parent


def test_report_from_a_real_record(tiny_model_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "writeup.template.md", tmp_path / "docs")
    metrics = run_experiment(ModelConfig(model_name=str(tiny_model_dir)),
                             DataConfig(data_dir=str(FIXTURE_DATA), ag_train_fraction=None),
                             TrainConfig(epochs=1, batch_size=8, device="cpu", freeze="linear_probe"),
                             "cpu-linear-probe", runs_dir=tmp_path / "runs",
                             record_dir=tmp_path / "results" / "runs" / "cpu-linear-probe",
                             cache_dir=tmp_path / "cache")
    summary = write_report(tmp_path)
    assert summary["headline"] == "cpu-linear-probe"
    run = json.loads((tmp_path / "results" / "summary.json").read_text())["runs"]["cpu-linear-probe"]
    assert run["ag_news_test_accuracy"] == metrics["test"]["cls"]["accuracy"]
    assert run["conll_test_entity_f1"] == metrics["test"]["ner"]["entity_f1"]
    assert run["train_rows"] == {"ag_news": 80, "conll": 40} and run["device"] == "cpu"
    writeup = (tmp_path / "writeup.md").read_text()
    assert "{{" not in writeup
    assert f'{100 * metrics["test"]["cls"]["accuracy"]:.2f}' in writeup
    assert (tmp_path / "loss_plot.png").is_file()
