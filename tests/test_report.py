"""The summary and the writeup are generated from run records and docs/anchors.json, never typed.

Most tests fake run folders in the format ``run_experiment`` writes (metrics, config, environment);
one builds a real record on the tiny model, so the fakes cannot drift from the real format.
"""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURE_DATA

from mtst.config import DataConfig, ModelConfig, TrainConfig, load_configs
from mtst.experiment import run_experiment
from mtst.report import fill, write_report

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "docs").mkdir()
    for name in ("writeup.template.md", "anchors.json"):
        shutil.copy(ROOT / "docs" / name, tmp_path / "docs")
    return tmp_path


def fake_run(root: Path, name: str, seed: int, ag=0.9, f1=0.85, coarse=0.97, token=0.95, wall=100.0,
             finished=True, profile="cpu", metrics=None, train=None, cpu_features=()):
    """A run folder as ``run_experiment`` leaves it; ``metrics`` / ``train`` override fields."""
    folder = root / "results" / "runs" / name
    folder.mkdir(parents=True)
    model_cfg, data_cfg, train_cfg = load_configs("cpu")
    train_cfg = dataclasses.replace(train_cfg, seed=seed, **(train or {}))
    rows = {"train_rows": {"ag_news": 9600, "conll": 14041}, "val_rows": {"ag_news": 2400, "conll": 3250},
            "test_rows": {"ag_news": 7600, "conll": 3453},
            "sources": {"ag_news_train": {"file": "/data/ag_news/train_subset_20k.csv", "rows": 20000}}}
    config = {"name": name, "profile": profile, "model": dataclasses.asdict(model_cfg),
              "data": dataclasses.asdict(data_cfg), "train": dataclasses.asdict(train_cfg), **rows}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "environment.json").write_text(json.dumps(
        {"cpu": "Test CPU", "cpu_threads": 2, "packages": {"torch": "2.0"}, "device": "cpu",
         "cpu_features": list(cpu_features)}))
    if not finished:
        return folder
    per_type = {t: {"precision": f1, "recall": f1, "f1": f1, "support": 10} for t in ("LOC", "MISC", "ORG", "PER")}
    record = {
        "name": name, "profile": profile, "device": "cpu", "device_name": "Test CPU", "precision": "bfloat16",
        "wall_seconds": wall, "resumed_at_step": 0, "train_seconds": wall - 20, "prefix_seconds": 15.0,
        "epochs_run": train_cfg.epochs, "best_epoch": train_cfg.epochs, "stopped_early": False, "freeze": "none",
        "trainable_layers": train_cfg.trainable_layers, **rows,
        "val": {"val_cls_accuracy": ag, "val_entity_f1": f1},
        "test": {"cls": {"accuracy": ag, "macro_f1": ag - 0.001},
                 "ner": {"token_accuracy": token, "coarse_token_accuracy": coarse, "entity_f1": f1,
                         "strict_entity_f1": f1 - 0.01, "per_type": per_type}},
        **(metrics or {}),
    }
    (folder / "metrics.json").write_text(json.dumps(record))
    (folder / "loss_plot.png").write_bytes(f"plot of {name}".encode())
    return folder


def three_seeds(root: Path, group="cpu", **kwargs):
    # Made out of order on purpose: the headline's loss plot must still be seed 42's.
    for seed, ag in ((44, 0.94), (42, 0.90), (43, 0.92)):
        fake_run(root, f"{group}-s{seed}", seed, ag=ag, wall=100.0 + seed - 42, **kwargs)


def test_seed_group_mean_and_sample_std(root):
    three_seeds(root)
    summary = write_report(root)
    group = json.loads((root / "results" / "summary.json").read_text())["groups"]["cpu"]
    assert group["n"] == 3 and group["seeds"] == [42, 43, 44] and group["runs"] == ["cpu-s42", "cpu-s43", "cpu-s44"]
    # 0.90, 0.92, 0.94: mean 0.92, sample std 0.02 (the population std would be 0.0163)
    assert group["mean"]["ag_news_test_accuracy"] == pytest.approx(0.92)
    assert group["std"]["ag_news_test_accuracy"] == pytest.approx(0.02)
    assert group["mean"]["wall_seconds"] == pytest.approx(101.0) and group["std"]["wall_seconds"] == pytest.approx(1.0)
    assert group["std"]["conll_test_entity_f1"] == pytest.approx(0.0)
    assert group["per_seed"]["43"]["ag_news_test_accuracy"] == 0.92
    assert summary["headline"] == "cpu"
    writeup = (root / "writeup.md").read_text()
    assert "mean ± sample standard deviation over 3 seeds (42, 43, 44)" in writeup
    assert "| **cpu** | 3 of 3 | 92.00 ± 2.00 |" in writeup
    for name in ("cpu-s42", "cpu-s43", "cpu-s44"):  # a row per seed
        assert re.search(rf"^\| {name} \|", writeup, re.M)
    assert (root / "loss_plot.png").read_bytes() == b"plot of cpu-s42"


def test_no_wall_time_mean_across_machines(root):
    """Seeds run on an AMX machine and on one without AMX: the writeup names each machine and gives
    each seed's wall time, with no mean or spread over them."""
    amx = ("avx512_bf16", "amx_bf16")
    fake_run(root, "cpu-s42", 42, wall=2800.0, cpu_features=amx)
    fake_run(root, "cpu-s43", 43, wall=4900.0, cpu_features=amx)
    fake_run(root, "cpu-s44", 44, wall=8300.0, cpu_features=("avx512_bf16",))
    group = write_report(root)["groups"]["cpu"]
    assert group["mean"]["wall_seconds"] is None and group["std"]["wall_seconds"] is None
    assert group["median_wall_seconds"] is None
    assert group["mean"]["ag_news_test_accuracy"] == pytest.approx(0.9)  # scores still averaged
    writeup = (root / "writeup.md").read_text()
    assert "2800 s (seed 42), 4900 s (seed 43), 8300 s (seed 44) (no mean: the seeds ran on different machines)" \
        in writeup
    assert "Test CPU (AMX)" in writeup and "Test CPU (AVX512-BF16, no AMX)" in writeup
    assert re.search(r"^\| \*\*cpu\*\* \|.*\| – \|$", writeup, re.M)


def test_no_wall_time_mean_over_a_resumed_seed(root):
    """A resumed seed's wall time counts from the resume only: it gets no mean with whole runs."""
    fake_run(root, "cpu-s42", 42, wall=3800.0)
    fake_run(root, "cpu-s43", 43, wall=2100.0, metrics={"resumed_at_step": 878})
    group = write_report(root)["groups"]["cpu"]
    assert group["mean"]["wall_seconds"] is None and group["median_wall_seconds"] is None
    writeup = (root / "writeup.md").read_text()
    assert "seed 43 at step 878 (its wall time counts from the resume)" in writeup
    assert "3800 s (seed 42), 2100 s (seed 43) (no mean: a seed was resumed)" in writeup
    assert re.search(r"^\| cpu-s43 \|.*\| 2100 \(resumed\) \| Test CPU \|$", writeup, re.M)
    assert re.search(r"^\| cpu-s42 \|.*\| 3800 \| Test CPU \|$", writeup, re.M)
    fake_run(root, "cpu-s44", 44, wall=3600.0)
    (root / "results" / "runs" / "cpu-s43" / "metrics.json").unlink()  # unfinished: the finished two average
    assert write_report(root)["groups"]["cpu"]["mean"]["wall_seconds"] == pytest.approx(3700.0)


def test_headline_is_gpu_then_cpu_then_smoke(root):
    fake_run(root, "cpu-linear-probe", 42)  # not a seed group: never the headline
    fake_run(root, "smoke-s42", 42, profile="smoke")
    assert write_report(root)["headline"] == "smoke"
    three_seeds(root)
    assert write_report(root)["headline"] == "cpu"
    fake_run(root, "gpu-s42", 42, profile="gpu", metrics={"device": "cuda", "device_name": "Test GPU"})
    summary = write_report(root)
    assert summary["headline"] == "gpu" and "gpu_runs" not in summary
    assert "Headline: `gpu`: only 1 of 3 seeds has finished (seed 42)" in (root / "writeup.md").read_text()


def test_unfinished_seeds_are_said(root):
    fake_run(root, "cpu-s42", 42)
    fake_run(root, "cpu-s43", 43)
    fake_run(root, "cpu-s44", 44, finished=False)  # still training: config and environment only
    summary = write_report(root)
    assert summary["groups"]["cpu"]["n"] == 2 and summary["groups"]["cpu"]["unfinished_seeds"] == [44]
    writeup = (root / "writeup.md").read_text()
    assert "only 2 of 3 seeds have finished (42, 43; not finished: 44)" in writeup
    assert "(`cpu`, 2 of 3 seeds)" in writeup


def _row(writeup: str, start: str) -> str:
    return next(line for line in writeup.splitlines() if line.startswith(start))


def test_reference_is_compared_like_with_like(root):
    three_seeds(root, coarse=0.985, token=0.95, f1=0.9)
    write_report(root)
    writeup = (root / "writeup.md").read_text()
    coarse = _row(writeup, "| CoNLL-2003 test token accuracy, 5 coarse labels |")
    # the reference's 97.90 is a 5-label accuracy: it meets our coarse accuracy, never the 9-label one
    assert "| 98.50 ± 0.00 | 97.90 | +0.60 | ≥ 98.00 | yes |" in coarse and "95.00" not in coarse
    assert "| 92.00 ± 2.00 | 92.11 | -0.11 | ≥ 92.50 | no |" in _row(writeup, "| AG News test accuracy |")
    assert "| 90.00 ± 0.00 | not reported | – | ≥ 89.50 | yes |" in _row(writeup, "| CoNLL-2003 test entity F1 |")
    anchor = _row(writeup, "| Reference design (this exercise): all-mpnet-base-v2 fully fine-tuned, NER")
    assert "| 97.90 | 98.50 ± 0.00 |" in anchor


def test_anchors_come_from_the_data_file(root):
    three_seeds(root)
    path = root / "docs" / "anchors.json"
    anchors = json.loads(path.read_text())
    xlnet = next(a for a in anchors["anchors"] if a["system"].startswith("XLNet"))
    assert xlnet["value"] == 0.9555  # published error 4.45%
    xlnet["value"] = 0.9123
    anchors["targets"]["minimums"][0]["min"] = 0.91
    path.write_text(json.dumps(anchors))
    write_report(root)
    writeup = (root / "writeup.md").read_text()
    assert "| 91.23 (AG News test error 4.45%) |" in _row(writeup, "| XLNet-large")
    assert "| ≥ 91.00 | yes |" in _row(writeup, "| AG News test accuracy |")
    xlnet["metric"] = "conll_test_token_acc"  # a measure we do not have: refused, not silently compared
    path.write_text(json.dumps(anchors))
    with pytest.raises(ValueError, match="unknown metric"):
        write_report(root)


def test_training_facts_follow_the_records(root):
    for seed in (42, 43, 44):
        fake_run(root, f"cpu-s{seed}", seed, train={"epochs": 5, "patience": 1},
                 metrics={"epochs_run": 3 if seed != 43 else 5, "stopped_early": seed != 43, "precision": "float32"})
    write_report(root)
    writeup = (root / "writeup.md").read_text()
    assert "| epochs run | 3 of 5 configured (seed 42), 5 of 5 configured (seed 43), 3 of 5 configured (seed 44) |" \
        in writeup
    assert "patience 1 epochs on `mean_score`; stopped early: yes (seed 42), no (seed 43), yes (seed 44)" in writeup
    assert "| precision | float32 (every seed); config `auto` |" in writeup
    assert "the top 8 encoder layers train" in writeup
    assert "| batch size | 16 per task" in writeup and "encoder 5e-05, heads 0.001" in writeup
    assert "Test CPU, 2 threads" in writeup
    assert "stops after 3 epochs" not in writeup and "fp32 on CPU" not in writeup


def test_task3_table_only_from_study_runs(root):
    three_seeds(root)
    legacy = fake_run(root, "task3-cpu-backbone", 42)  # the old, unequal-budget study: no precision, no study
    metrics = json.loads((legacy / "metrics.json").read_text())
    del metrics["precision"]
    (legacy / "metrics.json").write_text(json.dumps(metrics))
    write_report(root)
    writeup = (root / "writeup.md").read_text()
    assert "_Task 3 study: not run yet with the new loop._" in writeup
    assert not re.search(r"^\| task3-cpu-backbone", writeup, re.M)
    for seed in (42, 43):
        fake_run(root, f"task3/lora-s{seed}", seed, ag=0.8, metrics={"study": "task3", "freeze": "lora"})
    summary = write_report(root)
    writeup = (root / "writeup.md").read_text()
    assert "| task3/lora | lora | 8 | 2 | 80.00 ± 0.00 |" in writeup
    assert "task3/lora" not in summary["groups"]["cpu"]["runs"] and not re.search(r"^\| task3/lora-s42", writeup, re.M)


def test_template_holds_no_results_and_every_placeholder_is_filled(root):
    template = (ROOT / "docs" / "writeup.template.md").read_text()
    # digits only inside names: models, formats, sections, citations, config values, table columns
    names = (r"all-mpnet-base-v2|CoNLL-2003|bf16|fp16|fp32|AVX512-BF16|L2|-100|Task \d|notebook 0\d|et al\. \d{4}"
             r"|IOB2|F1|trainable_layers=0|cpu-bs32|rank-0|[Tt]oken acc \(\d (coarse|labels)\)|{{\w+}}")
    assert not re.findall(r"\d", re.sub(names, "", template))
    with pytest.raises(ValueError, match="NOT_A_FIELD"):
        fill("{{NOT_A_FIELD}}", {})
    three_seeds(root)
    write_report(root)
    assert "{{" not in (root / "writeup.md").read_text()


def test_report_from_a_real_record(tiny_model_dir, root):
    name = "smoke-s42"
    metrics = run_experiment(ModelConfig(model_name=str(tiny_model_dir), ner_shape_dim=4),
                             DataConfig(data_dir=str(FIXTURE_DATA), ag_train_fraction=None),
                             TrainConfig(epochs=1, batch_size=8, device="cpu", trainable_layers=1, seed=42),
                             name, runs_dir=root / "runs", record_dir=root / "results" / "runs" / name,
                             cache_dir=root / "cache")
    summary = write_report(root)
    assert summary["headline"] == "smoke"
    run = json.loads((root / "results" / "summary.json").read_text())["runs"][name]
    assert run["conll_test_coarse_token_accuracy"] == metrics["test"]["ner"]["coarse_token_accuracy"]
    assert run["precision"] == metrics["precision"] and run["train_rows"] == {"ag_news": 80, "conll": 40}
    writeup = (root / "writeup.md").read_text()
    assert "{{" not in writeup and f'{100 * metrics["test"]["cls"]["accuracy"]:.2f}' in writeup
    assert "4-dim learned word-shape (casing) embedding" in writeup and "the top 1 encoder layers train" in writeup
    assert (root / "loss_plot.png").read_bytes() == (root / "results" / "runs" / name / "loss_plot.png").read_bytes()


def test_task3_table_follows_the_study_plan_with_costs_and_what_is_missing(root):
    three_seeds(root)
    plan = {"top2": {"what": "top 2 layers train", "seeds": [42, 43, 44]},
            "probe": {"what": "encoder frozen", "seeds": [42, 43, 44]},
            "ner-only": {"what": "CoNLL alone", "seeds": [42]}}
    (root / "results" / "runs" / "task3").mkdir(parents=True)
    (root / "results" / "runs" / "task3" / "plan.json").write_text(json.dumps(plan))
    for row, seed, cpu, wall in (("probe", 42, 30.0, 100.0), ("top2", 42, 100.0, 100.0), ("top2", 43, 300.0, 700.0),
                                 ("top2", 44, 200.0, 110.0)):
        fake_run(root, f"task3/{row}-s{seed}", seed, wall=wall,
                 metrics={"cpu_seconds": cpu, "trainable_parameters": 14_180_000})
    (root / "results" / "task3.png").write_bytes(b"png")
    write_report(root)
    writeup = (root / "writeup.md").read_text()
    rows = re.findall(r"^\| task3/(\S+) \|.*$", writeup, re.M)
    assert rows == ["top2", "probe"]  # the plan's order, not the alphabet's
    # wall time: the median of the seeds (one of them shared the cores); CPU seconds: their mean
    assert re.search(r"^\| task3/top2 \|.*\| 3 \|.*\| 110 \| 200 \| 14,180,000 \| top 2 layers train \|$", writeup,
                     re.M)
    assert "Not run yet: probe (seed 43, 44), ner-only (`make study`" in writeup and "(results/task3.png)" in writeup
    assert ("The study so far: 4 runs, 1,010 wall s and 630 CPU s, and the shared prefix pass: its cost is not "
            "recorded") in writeup
    prefix = {"depths": [8, 12], "from_cache": False, "wall_seconds": 1234.4, "cpu_seconds": 2000.0,
              "environment": {"cpu": "Some CPU"}}
    (root / "results" / "runs" / "task3" / "prefix-cache.json").write_text(json.dumps(prefix))
    write_report(root)
    assert "prefix pass: 1,234 wall s, 2,000 CPU s (depths 8, 12; on Some CPU)." in (root / "writeup.md").read_text()
    assert "_Conclusions: not computed from these rows yet" in (root / "writeup.md").read_text()
    task3 = "* Top 2 beats the probe.\n"
    (root / "results" / "task3.md").write_text("<!-- runs: task3/probe-s42 task3/top2-s42 -->\n" + task3)
    write_report(root)
    assert "Top 2 beats" not in (root / "writeup.md").read_text()  # computed before top2-s43 finished: stale
    every_study_run = "task3/probe-s42 task3/top2-s42 task3/top2-s43 task3/top2-s44"
    (root / "results" / "task3.md").write_text(f"<!-- runs: {every_study_run} -->\n" + task3)
    write_report(root)
    assert "Top 2 beats" not in (root / "writeup.md").read_text()  # before the headline's seeds: stale too
    (root / "results" / "task3.md").write_text(f"<!-- runs: cpu-s42 cpu-s43 cpu-s44 {every_study_run} -->\n" + task3)
    write_report(root)
    assert "computed from them (`scripts/study.py --report`):\n\n* Top 2 beats the probe." in \
        (root / "writeup.md").read_text()
    prefix["from_cache"] = True  # a read of a cache built before: not the study's cost
    (root / "results" / "runs" / "task3" / "prefix-cache.json").write_text(json.dumps(prefix))
    write_report(root)
    assert "prefix pass: its cost is not recorded" in (root / "writeup.md").read_text()


def test_the_writeup_says_how_long_the_last_whole_make_run_took(tmp_path):
    from mtst.report import make_run_note

    assert make_run_note(tmp_path) == "A whole `make run` (profile `cpu`) has not been timed yet"
    env = {"cpu": "AMD EPYC", "cpu_features": ["avx512_bf16"], "cpu_threads": 2, "device": None,
           "time_utc": "2026-12-01T19:30:00Z"}
    record = {"profile": "cpu", "seconds_total": 3300.0, "seconds_setup": 95.4, "environment": env,
              "notebooks": {"01_sentence_transformer.ipynb": 9.0, "04_training_loop.ipynb": 3150.2}}
    (tmp_path / "make-run-cpu.json").write_text(json.dumps(record))
    assert make_run_note(tmp_path) == (
        "The last whole `make run` (profile `cpu`, 2026-12-01, AMD EPYC (AVX512-BF16, no AMX), 2 threads) took "
        "55.0 min: 95 s to set up and fetch the model, then the notebooks (01: 9 s, 04: 3,150 s)")
    # the seed it trained is kept as runs/make-run-cpu: its batch size is said (the profile's may have changed since)
    (tmp_path / "runs" / "make-run-cpu").mkdir(parents=True)
    (tmp_path / "runs" / "make-run-cpu" / "config.json").write_text(json.dumps({"train": {"batch_size": 32}}))
    assert make_run_note(tmp_path).endswith("(01: 9 s, 04: 3,150 s); its seed (`make-run-cpu`) trained at batch 32 "
                                            "per task")
