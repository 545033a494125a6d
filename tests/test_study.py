"""scripts/study.py: every row is a valid configuration that changes only what trains, its plan lists
every row in order, and its plot is drawn from the report's summary."""

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest

from mtst.config import load_configs

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("study", ROOT / "scripts" / "study.py")
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


@pytest.mark.parametrize("row", list(study.ROWS))
def test_every_row_is_a_valid_config_that_keeps_the_budget(row):
    _, _, base = load_configs(study.PROFILE)
    _, _, train = load_configs(study.PROFILE, None, study.overrides(row, 43, Path("/r")))
    assert train.epochs == study.EPOCHS and train.seed == 43
    assert train.batch_size == study.BATCH and train.warmup_ratio == base.warmup_ratio
    assert train.init_from in (None, "/r/study-probe-s43/best")


def test_the_committed_rows_are_what_the_plan_runs_so_make_study_keeps_them():
    """A row is reused only with exactly its recorded config: a profile change must not retrain the study."""
    records = sorted((ROOT / "results" / "runs" / "task3").glob("*-s*/config.json"))
    assert len(records) >= 29
    for path in records:
        row, seed = path.parent.name.rsplit("-s", 1)
        recorded = json.loads(path.read_text())
        runs = Path(recorded["train"]["init_from"] or "/r/x/y").parents[1]  # where that machine kept them
        model, data, train = load_configs(study.PROFILE, None, study.overrides(row, int(seed), runs))
        planned = {"model": model, "data": dataclasses.replace(data, data_dir=recorded["data"]["data_dir"]),
                   "train": train}  # the data folder is where that machine kept the files; their checksums are recorded
        for part in planned:
            assert recorded[part] == json.loads(json.dumps(dataclasses.asdict(planned[part]), default=str)), \
                f"{path}: its {part} config is not what scripts/study.py would run now"


def test_the_plan_lists_every_row_in_order(tmp_path):
    study.write_plan(tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert list(plan) == list(study.ROWS) and plan["top2"]["overrides"] == ["train.trainable_layers=2"]
    assert {row: spec["apart"] for row, spec in plan.items() if spec["apart"]} == {
        "no-casing": "the NER-head ablations", "crf": "the NER-head ablations", "layer-mix": "the NER-head ablations",
        "full": "the full fine-tune"}


def test_make_study_runs_every_row_but_those_run_apart(capsys):
    """The NER-head ablations and the full fine-tune are outside the study's budget: a plain run leaves them
    out, --only runs them."""
    study.main(["--list"])
    listed = re.findall(r"^(\S+) +seeds", capsys.readouterr().out, re.M)
    assert listed == [row for row in study.ROWS if row not in ("no-casing", "crf", "layer-mix", "full")]
    assert "top4" in listed and "top6" in listed
    study.main(["--list", "--only", "crf", "full"])
    assert re.findall(r"^(\S+) +seeds", capsys.readouterr().out, re.M) == ["crf", "full"]


def test_the_plot_reads_the_study_groups_of_the_summary(tmp_path):
    def group(ag, f1, wall):
        return {"runs": [f"task3/x-s{wall}"], "mean": {"ag_news_test_accuracy": ag, "conll_test_entity_f1": f1,
                                                        "wall_seconds": wall}, "median_wall_seconds": wall}
    summary = {"groups": {"cpu": group(0.93, 0.9, 1), "task3/top2": group(0.9, 0.8, 200),
                          "task3/probe": group(0.88, None, 20)},
               "runs": {"task3/x-s200": {"trainable_parameters": 14_000_000},
                        "task3/x-s20": {"trainable_parameters": 0}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert study.plot(tmp_path / "summary.json", tmp_path / "task3.png")
    assert (tmp_path / "task3.png").stat().st_size > 10_000
    summary["groups"] = {"cpu": summary["groups"]["cpu"]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert not study.plot(tmp_path / "summary.json", tmp_path / "none.png")


def test_the_prefix_cost_recorded_is_the_pass_that_built_the_cache_not_a_later_read(tmp_path):
    rows = ["probe", "top2"]  # depths 0 (every layer of the tiny model) and 2 below its top
    study.warm_cache(rows, "smoke", tmp_path / "cache", tmp_path)
    built = json.loads((tmp_path / "prefix-cache.json").read_text())
    assert built["from_cache"] is False and len(built["depths"]) == 2
    for out in (tmp_path, tmp_path / "later"):  # every depth now read from the cache: no record of that read
        study.warm_cache(rows, "smoke", tmp_path / "cache", out)
    assert json.loads((tmp_path / "prefix-cache.json").read_text()) == built
    assert not (tmp_path / "later" / "prefix-cache.json").exists()


def stats(ag, f1, ag_std=None, f1_std=None, n=1, walls=(100.0,), runs=("x",), coarse=(None, None)):
    return {"n": n, "runs": list(runs), "mean": {"ag_news_test_accuracy": ag, "conll_test_entity_f1": f1,
                                                 "conll_test_coarse_token_accuracy": coarse[0],
                                                 "wall_seconds": sum(walls) / len(walls)},
            "std": {"ag_news_test_accuracy": ag_std, "conll_test_entity_f1": f1_std,
                    "conll_test_coarse_token_accuracy": coarse[1]},
            "median_wall_seconds": sorted(walls)[len(walls) // 2]}


def test_the_conclusions_are_computed_from_the_rows_and_judge_differences_by_the_seed_spread():
    groups = {"cpu": stats(0.99, 0.99),  # the headline: not a study row
              "task3/probe": stats(0.88, 0.40, runs=("task3/probe-s42",)),
              "task3/top4": stats(0.9129, 0.8373, 0.001, 0.002, n=3, walls=(780.0, 1620.0, 790.0),
                                  runs=("task3/top4-s42", "task3/top4-s43")),
              "task3/ag-only": stats(0.9079, None, 0.001, None, n=3),
              "task3/ner-only": stats(None, 0.8713),
              "task3/crf": stats(0.9130, 0.8500)}
    runs = {name: {} for name in ("task3/top4-s42", "cpu-s42", "task3/probe-s42")}
    text = study.conclusions({"groups": groups, "runs": runs})
    # every finished run, the headline's too: one that finishes later makes these conclusions stale
    assert text.splitlines()[0] == "<!-- runs: cpu-s42 task3/probe-s42 task3/top4-s42 -->"
    assert "AG News accuracy 88.00 (probe) → 91.29 (top4); entity F1 40.00 (probe) → 83.73 (top4)" in text
    # one seed that shared the cores (1,620 s) does not make the row's cost: the median of the seeds does
    assert "Median wall seconds: 100 (probe), 790 (top4)." in text
    assert ("the multi-task model is +0.50 points on AG News accuracy (91.29 against 90.79; beyond twice the seed "
            "spread, 0.10)") in text
    assert "-3.40 points on entity F1 (83.73 against 87.13; one seed: no spread to judge it by)" in text
    assert "A CRF against top4: +0.01 points on AG News accuracy" in text
    assert "Best on this budget, by the mean of AG News accuracy and entity F1: crf (88.15), in 100 wall" in text
    assert "LoRA" not in text and "round-robin" not in text.lower()  # rows not run: no sentence
    assert "headline's strategy" not in text  # no seed group of the headline's strategy to compare
    groups["task3/ag-only"]["std"]["ag_news_test_accuracy"] = 0.003
    assert "(91.29 against 90.79; within twice the seed spread, 0.30)" in study.conclusions({"groups": groups,
                                                                                             "runs": runs})


def test_rows_whose_seeds_ran_on_other_machines_say_so_and_have_no_median_wall_time():
    top4 = stats(0.9120, 0.8361, 0.0024, 0.0016, n=3, walls=(780.0, 790.0, 800.0), runs=("task3/top4-s42",))
    full = stats(0.9180, 0.8850, 0.0010, 0.0020, n=3, runs=("task3/full-s42", "task3/full-s43"))
    full["median_wall_seconds"] = None  # group_stats gives none across machines
    groups = {"task3/top4": top4, "task3/full": full,
              "task3/round-robin": stats(0.9116, 0.8513, 0.001, 0.002, n=3, runs=("task3/round-robin-s42",
                                                                                  "task3/round-robin-s43"))}
    machine = {"task3/top4-s42": "EPYC", "task3/full-s42": "EPYC", "task3/full-s43": "Xeon (AMX)",
               "task3/round-robin-s42": "EPYC", "task3/round-robin-s43": "Xeon (AMX)"}
    text = study.conclusions({"groups": groups, "runs": {n: {"machine": m} for n, m in machine.items()}})
    assert ("Round-robin sampling against top4: -0.04 points on AG News accuracy (91.16 against 91.20; within twice "
            "the seed spread, 0.24), +1.52 points on entity F1 (85.13 against 83.61; beyond twice the seed spread, "
            "0.20). The two groups ran on different machines (EPYC; Xeon (AMX) against EPYC), whose bf16 kernels "
            "differ") in text
    assert "Median wall seconds: 790 (top4), – (full) (–: its seeds ran on different machines, or one resumed)." in text
    assert "Best on this budget, by the mean of AG News accuracy and entity F1: full (90.15), its seeds on different " \
           "machines (no median wall time)." in text
    machine["task3/round-robin-s43"] = "EPYC"
    text = study.conclusions({"groups": groups, "runs": {n: {"machine": m} for n, m in machine.items()}})
    assert "(85.13 against 83.61; beyond twice the seed spread, 0.20).\n" in text  # one machine: no caveat


def test_the_study_is_judged_against_its_budget_once_whole_and_on_one_cpu():
    """Every row and seed of the plan but those run apart, plus the prefix pass, added up against 3 hours;
    the rows run apart are counted by group."""
    plan = {"top2": {"seeds": [42, 43]}, "probe": {"seeds": [42]},
            "crf": {"seeds": [42], "apart": "the NER-head ablations"},
            "full": {"seeds": [42, 43], "apart": "the full fine-tune"}}
    walls = {"task3/top2-s42": 4000.0, "task3/crf-s42": 5000.0, "task3/full-s42": 1300.0, "task3/full-s43": 2700.0}
    cpus = {"task3/full-s43": "CPU C"}
    prefix = {"from_cache": False, "wall_seconds": 800.0, "environment": {"cpu": "CPU A"}}

    def judged():
        runs = {n: {"seed": int(n[-2:]), "wall_seconds": w, "device_name": cpus.get(n, "CPU A"),
                    "resumed_at_step": 0} for n, w in walls.items()}
        groups = {}
        for name in runs:
            groups.setdefault(name.rsplit("-s", 1)[0], {"runs": []})["runs"].append(name)
        return study.budget({"groups": groups, "runs": runs}, plan, prefix)

    apart = (" Run apart, outside it: the NER-head ablations (crf), 1 run, 5,000 wall s; the full fine-tune (full), "
             "2 runs, 4,000 wall s on several CPUs.")
    assert judged() == "Against the study's budget of 3 hours of wall time on one 2-core CPU: not judged until " \
                       "every row and seed and the prefix pass have run." + apart
    walls |= {"task3/top2-s43": 4000.0, "task3/probe-s42": 2000.0}
    # 4,000 + 4,000 + 2,000 + the prefix pass's 800 is 3 hours to the second; the rows run apart are not counted,
    # nor do their CPUs stop the judgement
    assert judged().endswith("the whole study, 3 runs and the prefix pass, took 10,800 wall s (3.00 h) on CPU A: "
                             "within it." + apart)
    prefix["wall_seconds"] = 801.0
    assert judged().endswith("took 10,801 wall s (3.00 h) on CPU A: over it." + apart)
    prefix["environment"]["cpu"] = "CPU B"
    assert judged().endswith("not judged, its runs ran on several CPUs (CPU A; CPU B)." + apart)
    prefix["from_cache"] = True  # a read of a cache built before: its cost is not the study's
    assert "not judged until every row and seed and the prefix pass have run." in judged()


def test_the_best_on_the_budget_is_one_of_its_rows_and_a_better_row_run_apart_is_named_apart():
    groups = {"task3/top6": stats(0.9161, 0.8602, 0.003, 0.002, n=3, walls=(600.0, 610.0, 620.0), runs=()),
              "task3/full": stats(0.9205, 0.8834, 0.003, 0.001, n=3, walls=(1300.0, 1310.0, 1320.0), runs=()),
              "task3/crf": stats(0.9126, 0.8316, runs=()),
              "task3/layer-mix": stats(0.9216, 0.8418, runs=())}  # apart too, but lower than top6: no sentence
    plan = {"top6": {"seeds": [42]}, "crf": {"seeds": [42], "apart": "the NER-head ablations"},
            "layer-mix": {"seeds": [42], "apart": "the NER-head ablations"},
            "full": {"seeds": [42], "apart": "the full fine-tune"}}
    lines = study.conclusions({"groups": groups, "runs": {}}, plan).splitlines()
    assert "* Best on this budget, by the mean of AG News accuracy and entity F1: top6 (88.81), in 610 wall " \
           "seconds (median)." in lines
    assert "* Run apart, outside the study's budget, full is higher on that mean: 90.20 (+1.38 points on top6), " \
           "in 1,310 wall seconds (median)." in lines
    assert not [line for line in lines if "layer-mix is higher" in line or "crf is higher" in line]
    # without a plan every row is the study's
    assert "Best on this budget, by the mean of AG News accuracy and entity F1: full (90.20)" in study.conclusions(
        {"groups": groups, "runs": {}})


def test_variants_of_the_headline_are_compared_on_its_strategy_with_the_seed_spread():
    groups = {"cpu-bs32": stats(0.9287, 0.8955, 0.0003, 0.0021, n=3, coarse=(0.9787, 0.0003), runs=("cpu-bs32-s42",)),
              "cpu-temperature": stats(0.9268, 0.8975, 0.0008, 0.0015, n=3, coarse=(0.9792, 0.0002),
                                       runs=("cpu-temperature-s42", "cpu-temperature-s43")),
              "cpu": stats(0.9290, 0.9010, 0.0005, 0.0010, n=3, coarse=(0.9805, 0.0002), runs=("cpu-s42",)),
              "cpu-uncertainty": stats(0.9280, 0.9000, 0.0004, 0.0020, n=2, coarse=(0.9790, 0.0001),
                                       runs=("cpu-uncertainty-s42",)),
              "task3/probe": stats(0.88, 0.40)}
    machine = {"cpu-bs32-s42": "Xeon (AMX)", "cpu-s42": "EPYC", "cpu-temperature-s42": "Xeon (AMX)",
               "cpu-temperature-s43": "Xeon (AMX)", "cpu-uncertainty-s42": "Xeon (AMX)"}
    runs = {name: {"trainable_layers": 8, "epochs_configured": 2, "machine": m} for name, m in machine.items()}
    text = study.conclusions({"groups": groups, "runs": runs})
    temperature = ("On the headline's strategy (the cpu profile: top 8 layers, 2 epochs; 3 and 3 seeds), "
                   "temperature sampling at T=2 (`cpu-temperature`) against both, batch 32 per task (`cpu-bs32`): "
                   "-0.19 points on AG News accuracy (92.68 against 92.87; beyond twice the seed spread, 0.08), "
                   "+0.20 points on entity F1 (89.75 against 89.55; within twice the seed spread, 0.21), +0.05 "
                   "points on coarse token accuracy (97.92 against 97.87; within twice the seed spread, 0.03).\n")
    assert temperature in text  # same machines: no caveat
    assert ("2 epochs; 2 and 3 seeds), uncertainty loss weights (`cpu-uncertainty`) against static weights, batch 32 "
            "per task (`cpu-bs32`): -0.07 points on AG News accuracy (92.80 against 92.87; within twice the seed "
            "spread, 0.04), +0.45 points on entity F1") in text
    assert ("the cpu profile: top 8 layers, 2 epochs; 3 and 3 seeds), the reference's batch of 16 per task (`cpu`) "
            "against batch 32, both sampling (`cpu-bs32`): +0.03 points on AG News accuracy (92.90 against 92.87; "
            "within twice the seed spread, 0.05), +0.55 points on entity F1 (90.10 against 89.55; beyond twice the "
            "seed spread, 0.21), +0.18 points on coarse token accuracy (98.05 against 97.87; beyond twice the seed "
            "spread, 0.03). The two groups ran on different machines (EPYC against Xeon (AMX)), whose bf16 kernels "
            "differ") in text
    # a seed of the group trained longer than the one it is compared with: the difference is not one change's
    runs["cpu-temperature-s43"]["epochs_configured"] = 3
    assert "temperature sampling" not in study.conclusions({"groups": groups, "runs": runs})
    del groups["cpu-bs32"]
    assert "headline's strategy" not in study.conclusions({"groups": groups, "runs": runs})
