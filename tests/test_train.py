"""The training loop end to end on the tiny model and fixture data."""

import dataclasses
import json
import math

import pytest
import torch
from conftest import FIXTURE_DATA

from mtst import distributed
from mtst import train as train_module
from mtst.checkpoint import load_state
from mtst.config import DataConfig, ModelConfig, TrainConfig
from mtst.distributed import autocast_dtype
from mtst.experiment import build_model, build_task_data, run_experiment
from mtst.features import collate
from mtst.model import MultiTaskSentenceTransformer
from mtst.predict import Predictor
from mtst.runs import RunRecorder
from mtst.train import LossWeights, build_optimizer, fit, train_step

DATA = DataConfig(data_dir=str(FIXTURE_DATA), ag_train_fraction=None)
TRAIN = TrainConfig(epochs=2, batch_size=8, eval_batch_size=16, log_every=1, head_lr=3e-3, device="cpu")


@pytest.fixture
def setup(tiny_model_dir):
    cfg = ModelConfig(model_name=str(tiny_model_dir))
    model = build_model(cfg, seed=0)
    data, _ = build_task_data(model, DATA)
    return cfg, model, data


def test_smoke_fit_save_reload_predict(setup, tmp_path):
    _, model, data = setup
    history = fit(model, data, TRAIN, tmp_path)
    assert len(history.epochs) == 2
    for epoch in history.epochs:
        assert epoch["train_examples"]["cls"] > 0 and epoch["train_examples"]["ner"] > 0
        assert math.isfinite(epoch["val_loss"])
    assert all(math.isfinite(s["train_cls_loss"]) and math.isfinite(s["train_ner_loss"]) for s in history.steps)
    best = MultiTaskSentenceTransformer.from_pretrained(history.checkpoint)
    if history.best_epoch == 2:  # the model in memory is the best one: predictions must agree
        texts = ["Acme Corp opened an office in London .", "Nadal wins in Paris"]
        assert Predictor(model).predict(texts) == Predictor(best).predict(texts)


def test_evaluation_does_not_depend_on_the_batching(setup):
    """Scores in batches of mixed lengths equal the per-row loop's (batch size 1): every row counted once."""
    _, model, data = setup
    val = {task: splits.val for task, splits in data.items()}
    per_row, batched = train_module.evaluate(model, val, batch_size=1), train_module.evaluate(model, val, batch_size=7)
    for task in val:
        for key, value in per_row[task].items():
            if isinstance(value, float):
                assert batched[task][key] == pytest.approx(value, abs=1e-5), (task, key)
            else:
                assert batched[task][key] == value, (task, key)


def test_loss_falls_when_overfitting_one_batch(setup):
    _, model, data = setup
    batches = {t: collate(d.train, list(range(8)), model.tokenizer.pad_token_id) for t, d in data.items()}
    weights = LossWeights("static", (1.0, 1.0))
    cfg = dataclasses.replace(TRAIN, lr=1e-3, head_lr=1e-2)
    optimizer = build_optimizer(model, weights, cfg, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model.train()
    first = train_step(model, batches, weights, optimizer, scaler)
    for _ in range(40):
        last = train_step(model, batches, weights, optimizer, scaler)
    assert last["cls"] < 0.5 * first["cls"] and last["ner"] < 0.5 * first["ner"]


@pytest.mark.parametrize("layers", [None, 1])  # the whole network; the top layer on the cached prefix
def test_resume_continues_exactly_where_it_stopped(tiny_model_dir, tmp_path, layers):
    cfg = ModelConfig(model_name=str(tiny_model_dir))
    train = dataclasses.replace(TRAIN, epochs=2, sampling="proportional", trainable_layers=layers)

    def fresh():
        model = build_model(cfg, seed=0)
        return model, build_task_data(model, DATA)[0]

    model_a, data = fresh()
    full = fit(model_a, data, train, tmp_path / "a", cache_dir=tmp_path / "cache")

    model_b, data = fresh()
    recorder = RunRecorder(tmp_path / "record", {}, "cpu")
    stopped = fit(model_b, data, dataclasses.replace(train, stop_after_steps=13), tmp_path / "b", recorder=recorder,
                  cache_dir=tmp_path / "cache")
    assert stopped.interrupted and (tmp_path / "b" / "last.pt").is_file()
    # The process logged a step after its last checkpoint, then died: the resume must redo it once.
    recorder.log_step({"step": 14, "epoch": 2, "lr": 0.0, "train_cls_loss": 1.0})
    model_b, data = fresh()  # a new process starts from scratch
    resumed = fit(model_b, data, train, tmp_path / "b", resume=True,
                  recorder=RunRecorder(tmp_path / "record", {}, "cpu", resume=True), cache_dir=tmp_path / "cache")

    assert resumed.resumed_at_step == 13
    assert resumed.steps_run == full.steps_run - 13  # only the remaining steps ran
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-6
    logged = [json.loads(line) for line in (tmp_path / "record" / "history.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in logged if r["kind"] == "step"]
    assert steps == list(range(1, full.steps_run + 1))
    assert [r["epoch"] for r in logged if r["kind"] == "epoch"] == [1, 2]


def test_resume_restores_the_interrupted_state(setup, tmp_path):
    _, model, data = setup
    fit(model, data, dataclasses.replace(TRAIN, stop_after_steps=5), tmp_path)
    saved = load_state(tmp_path / "last.pt")
    assert saved["step"] == 5
    model_b = build_model(ModelConfig(model_name=model.encoder.backbone.config.name_or_path), seed=1)
    # One more step from the restored state: starting from the saved weights, not fresh ones.
    resumed = fit(model_b, data, dataclasses.replace(TRAIN, stop_after_steps=6), tmp_path, resume=True)
    assert resumed.steps_run == 1
    moved = max((model_b.state_dict()[k].float() - v.float()).abs().max().item() for k, v in saved["model"].items())
    assert 0 < moved < 0.1


@pytest.mark.parametrize("freeze,layers", [("none", 0), ("none", 1), ("cls_head", None), ("ner_head", None),
                                           ("gradual", None), ("lora", None)])
def test_freezing_strategies_train_only_what_they_say(setup, tmp_path, freeze, layers):
    _, model, data = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, dataclasses.replace(TRAIN, epochs=1, freeze=freeze, trainable_layers=layers), tmp_path)
    # LoRA wraps the backbone: map its keys back to the plain names
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in model.state_dict().items()}
    encoder = {k for k in before if k.startswith("encoder.")}
    top = {k for k in encoder if ".layer.1." in k}  # the tiny model has 2 layers
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert ("heads.ner.out.weight" in changed) == (freeze != "ner_head")
    assert ("heads.cls.1.weight" in changed) == (freeze != "cls_head")
    if layers == 0:
        assert not changed & encoder
    elif freeze == "gradual":  # by the end of the one epoch every layer trains, never the embeddings
        assert top - {k for k in top if "relative_attention_bias" in k} <= changed
        assert not {k for k in changed & encoder if "embeddings" in k}
    elif layers == 1:
        assert changed & encoder == top - {k for k in top if "relative_attention_bias" in k}
    elif freeze == "lora":
        assert any("lora_" in k and not torch.equal(v, torch.zeros_like(v)) for k, v in after.items())
        assert encoder <= set(after) and not changed & encoder  # base weights stay put
    else:
        assert "encoder.backbone.embeddings.word_embeddings.weight" in changed


def test_uncertainty_weighting_learns_log_variances(setup, tmp_path):
    _, model, data = setup
    history = fit(model, data, dataclasses.replace(TRAIN, epochs=1, loss_weighting="uncertainty"), tmp_path)
    assert any(abs(v) > 0 for v in history.epochs[0]["log_vars"].values())


def test_precision_choice(monkeypatch):
    monkeypatch.setattr(distributed, "cpu_has_bf16", lambda: False)
    assert autocast_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(distributed, "cpu_has_bf16", lambda: True)
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    assert autocast_dtype(torch.device("cpu"), "fp16") == torch.float16


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_precision_trains(setup, tmp_path, precision, monkeypatch):
    _, model, data = setup
    seen = []
    real_autocast = torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kw):
        seen.append((device_type, dtype if enabled else None))
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    history = fit(model, data, dataclasses.replace(TRAIN, epochs=1, precision=precision), tmp_path)
    assert all(math.isfinite(s["train_cls_loss"]) for s in history.steps)
    expected = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert seen and {dtype for _, dtype in seen} == {expected}
    scaler = load_state(tmp_path / "last.pt")["scaler"]
    assert bool(scaler) == (precision == "fp16")  # the GradScaler runs exactly when fp16 needs it


def test_run_experiment_leaves_a_record(tiny_model_dir, tmp_path):
    metrics = run_experiment(ModelConfig(model_name=str(tiny_model_dir)), DATA, TRAIN, "rec",
                             runs_dir=tmp_path / "runs", record_dir=tmp_path / "record",
                             cache_dir=tmp_path / "cache")
    record = tmp_path / "record"
    for name in ("config.json", "environment.json", "history.jsonl", "metrics.json", "loss_plot.png",
                 "confusion_matrix.png"):
        assert (record / name).is_file(), name
    saved = json.loads((record / "metrics.json").read_text())
    assert saved["test"]["cls"]["n"] == 40 and saved["test"]["ner"]["n"] == 12
    assert saved["train_rows"] == {"ag_news": 80, "conll": 40}
    assert metrics["test"]["ner"]["entity_f1"] == saved["test"]["ner"]["entity_f1"]
    env = json.loads((record / "environment.json").read_text())
    assert env["packages"]["torch"] and env["cpu"]


def test_linear_probe_is_the_same_loop_on_cached_states(tiny_model_dir, tmp_path):
    train = dataclasses.replace(TRAIN, trainable_layers=0, epochs=3, batch_size=32)
    kwargs = dict(runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache")
    m = run_experiment(ModelConfig(model_name=str(tiny_model_dir)), DATA, train, "probe", **kwargs)
    assert m["test"]["cls"]["n"] == 40 and m["test"]["ner"]["n"] == 12
    cached = sorted((tmp_path / "cache" / "prefix").glob("*.safetensors"))
    assert len(cached) == 6  # two tasks, three splits
    again = run_experiment(ModelConfig(model_name=str(tiny_model_dir)), DATA, train, "probe2", **kwargs)
    assert sorted((tmp_path / "cache" / "prefix").glob("*.safetensors")) == cached  # read, not rebuilt
    assert again["test"] == m["test"]


def test_layerwise_lr_decay_and_head_lr(setup):
    _, model, _ = setup
    cfg = dataclasses.replace(TRAIN, lr=1e-4, head_lr=1e-2, layer_lr_decay=0.5)
    optimizer = build_optimizer(model, LossWeights("static", (1.0, 1.0)), cfg, torch.device("cpu"))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    backbone = model.encoder.backbone
    assert lr_of[id(backbone.encoder.layer[1].output.dense.weight)] == pytest.approx(1e-4)  # top layer
    assert lr_of[id(backbone.encoder.layer[0].output.dense.weight)] == pytest.approx(5e-5)
    assert lr_of[id(backbone.embeddings.word_embeddings.weight)] == pytest.approx(2.5e-5)
    assert lr_of[id(model.heads["cls"][1].weight)] == pytest.approx(1e-2)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay_of[id(model.heads["cls"][1].bias)] == 0.0
    assert decay_of[id(model.heads["cls"][1].weight)] == cfg.weight_decay


@pytest.mark.parametrize("layers,freeze", [(0, "none"), (1, "none"), (2, "none"), (None, "none"), (1, "ner_head")])
def test_apply_freezing_marks_exactly_the_trainable_parameters(setup, layers, freeze):
    from mtst.freezing import apply_freezing

    _, model, _ = setup
    apply_freezing(model, dataclasses.replace(TRAIN, trainable_layers=layers, freeze=freeze))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    encoder = {n for n, _ in model.named_parameters() if n.startswith("encoder.")}
    if layers is None:
        expected = set(encoder)
    else:
        expected = {n for n in encoder if any(f".layer.{i}." in n for i in range(2 - layers, 2))}
    frozen_head = f"heads.{freeze.removesuffix('_head')}." if freeze.endswith("_head") else None
    heads = {n for n, _ in model.named_parameters() if n.startswith("heads.") and not n.startswith(str(frozen_head))}
    assert trainable == expected | heads


def test_rescore_reproduces_the_recorded_scores(tiny_model_dir, tmp_path):
    from mtst.experiment import rescore

    cfg = ModelConfig(model_name=str(tiny_model_dir), ner_shape_dim=4)
    train = dataclasses.replace(TRAIN, trainable_layers=1)
    kwargs = dict(runs_dir=tmp_path / "runs", record_dir=tmp_path / "record", cache_dir=tmp_path / "cache")
    first = run_experiment(cfg, DATA, train, "r", **kwargs)
    again = rescore(cfg, DATA, train, "r", **kwargs)
    assert again["rescored"]["previous_test"] == json.loads(json.dumps(first["test"]))
    assert again["test"]["ner"]["entity_f1"] == pytest.approx(first["test"]["ner"]["entity_f1"])
    assert again["test"]["cls"]["accuracy"] == first["test"]["cls"]["accuracy"]
    assert json.loads((tmp_path / "record" / "metrics.json").read_text())["rescored"]


def test_an_interrupted_run_reports_the_last_step_it_did(tiny_model_dir, tmp_path):
    """Not the last step it logged: with log_every=2, a stop after 3 steps reports step 3."""
    cfg = ModelConfig(model_name=str(tiny_model_dir))
    train = dataclasses.replace(TRAIN, stop_after_steps=3, log_every=2)
    kwargs = dict(runs_dir=tmp_path / "runs", record_dir=tmp_path / "record", cache_dir=tmp_path / "cache")
    assert run_experiment(cfg, DATA, train, "i", **kwargs) == {"interrupted": True, "step": 3}


def test_reuse_returns_a_finished_run_and_resumes_an_interrupted_one(tiny_model_dir, tmp_path):
    cfg = ModelConfig(model_name=str(tiny_model_dir))
    kwargs = dict(runs_dir=tmp_path / "runs", record_dir=tmp_path / "record", cache_dir=tmp_path / "cache")
    stopped = run_experiment(cfg, DATA, dataclasses.replace(TRAIN, stop_after_steps=3), "u", **kwargs)
    assert stopped["interrupted"]
    # Same config as the interrupted run: it resumes (and its record shows where from)
    done = run_experiment(cfg, DATA, dataclasses.replace(TRAIN, stop_after_steps=3), "u", reuse=True, **kwargs)
    assert done["interrupted"] and done["step"] == 3
    finished = run_experiment(cfg, DATA, TRAIN, "u", reuse=True, **kwargs)  # another config: trains
    assert finished["resumed_at_step"] == 0 and "test" in finished
    assert run_experiment(cfg, DATA, TRAIN, "u", reuse=True, **kwargs) == finished  # finished: reused


@pytest.mark.parametrize("task", ["cls", "ner"])
def test_a_single_task_baseline_trains_and_scores_that_task_only(tiny_model_dir, tmp_path, task):
    """``train.tasks=<one>``: the other head is never trained (bit for bit its initial weights) nor scored."""
    from mtst.config import load_configs

    _, _, cfg = load_configs(None, None, [f"train.tasks={task}"])
    assert cfg.tasks == (task,)
    model_cfg = ModelConfig(model_name=str(tiny_model_dir))
    initial = build_model(model_cfg, seed=7).state_dict()
    train = dataclasses.replace(TRAIN, epochs=1, tasks=(task,), seed=7, monitor="mean_score")
    metrics = run_experiment(model_cfg, DATA, train, "single", runs_dir=tmp_path / "runs",
                             cache_dir=tmp_path / "cache")
    assert set(metrics["test"]) == {task} and metrics["val"][f"val_{task}_loss"] > 0
    trained = MultiTaskSentenceTransformer.from_pretrained(tmp_path / "runs" / "single" / "best").state_dict()
    untouched = "heads.ner." if task == "cls" else "heads.cls."
    mine = "heads.cls." if task == "cls" else "heads.ner."
    assert all(torch.equal(trained[k], initial[k]) for k in initial if k.startswith(untouched))
    assert any(not torch.equal(trained[k], initial[k]) for k in initial if k.startswith(mine))
    with pytest.raises(ValueError, match="tasks"):
        TrainConfig(tasks=("cls", "pos"))


def test_gradual_unfreezing_adds_one_layer_from_the_top_each_stage(setup, tmp_path, monkeypatch):
    """k + 1 equal stages of the run: the heads alone, then the top layer, then the top two, ..."""
    _, model, data = setup
    seen = []  # (step, trainable layer indices) at every optimisation step
    layers = model.encoder.backbone.encoder.layer
    real_step = train_module.train_step

    def spy(*args, **kwargs):
        seen.append(tuple(i for i, layer in enumerate(layers) if layer.output.dense.weight.requires_grad))
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", spy)
    fit(model, data, dataclasses.replace(TRAIN, epochs=1, freeze="gradual", trainable_layers=2), tmp_path)
    n = len(seen)
    expected = [() if s * 3 // n == 0 else ((1,) if s * 3 // n == 1 else (0, 1)) for s in range(n)]
    assert n >= 6 and seen == expected, seen


@pytest.mark.parametrize("cpuinfo, cpu, features", [
    # x86: the first processor's name, family and model (vendor names like "AMD EPYC" hide the generation)
    ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n"
     "flags\t\t: fpu avx avx2 fma\n\nprocessor\t: 1\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: other\n",
     "AMD EPYC (family 25, model 1)", ["avx2"]),
    ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n", "ARMv8", []),
], ids=["x86", "arm"])
def test_environment_names_the_cpu_generation(monkeypatch, tmp_path, cpuinfo, cpu, features):
    from mtst import runs
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(runs, "CPUINFO", tmp_path / "cpuinfo")
    monkeypatch.setattr(runs.platform, "processor", lambda: "ARMv8")
    env = runs.environment()
    assert env["cpu"] == cpu and env["cpu_features"] == features
