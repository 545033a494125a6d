"""The training loop end to end on the tiny model and fixture data."""

import dataclasses
import json
import math

import pytest
import torch
from conftest import FIXTURE_DATA

from mtst.config import DataConfig, ModelConfig, TrainConfig
from mtst.experiment import build_model, build_task_data, run_experiment
from mtst.features import collate
from mtst.model import MultiTaskSentenceTransformer
from mtst.predict import Predictor
from mtst.train import LossWeights, autocast_dtype, build_optimizer, fit, train_step

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


def test_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    cfg = ModelConfig(model_name=str(tiny_model_dir))
    train = dataclasses.replace(TRAIN, epochs=2, sampling="proportional")

    def fresh():
        model = build_model(cfg, seed=0)
        return model, build_task_data(model, DATA)[0]

    model_a, data = fresh()
    fit(model_a, data, train, tmp_path / "a")

    model_b, data = fresh()
    stopped = fit(model_b, data, dataclasses.replace(train, stop_after_steps=13), tmp_path / "b")
    assert stopped.interrupted and (tmp_path / "b" / "last.pt").is_file()
    model_b, data = fresh()  # a new process would start from scratch
    fit(model_b, data, train, tmp_path / "b", resume=True)

    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-6


@pytest.mark.parametrize("freeze", ["backbone", "cls_head", "gradual", "lora"])
def test_freezing_strategies_train_only_what_they_say(setup, tmp_path, freeze):
    _, model, data = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, dataclasses.replace(TRAIN, epochs=1, freeze=freeze), tmp_path)
    # LoRA wraps the backbone: map its keys back to the plain names
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in model.state_dict().items()}
    encoder_keys = [k for k in before if k.startswith("encoder.")]
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert "heads.ner.1.weight" in changed
    if freeze in ("backbone", "gradual"):  # gradual trains only the heads in its first epoch
        assert not changed & set(encoder_keys)
    if freeze == "cls_head":
        assert "heads.cls.1.weight" not in changed and changed & set(encoder_keys)
    if freeze == "lora":
        assert any("lora_" in k and not torch.equal(v, torch.zeros_like(v)) for k, v in after.items())
        assert set(encoder_keys) <= set(after) and not changed & set(encoder_keys)  # base weights stay put


def test_uncertainty_weighting_learns_log_variances(setup, tmp_path):
    _, model, data = setup
    history = fit(model, data, dataclasses.replace(TRAIN, epochs=1, loss_weighting="uncertainty"), tmp_path)
    assert any(abs(v) > 0 for v in history.epochs[0]["log_vars"].values())


def test_precision_choice():
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16


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


def test_linear_probe_runs_and_caches(tiny_model_dir, tmp_path):
    train = dataclasses.replace(TRAIN, freeze="linear_probe", epochs=3, batch_size=32)
    m = run_experiment(ModelConfig(model_name=str(tiny_model_dir)), DATA, train, "probe",
                       runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache")
    assert m["test"]["cls"]["n"] == 40 and m["test"]["ner"]["n"] == 12
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 6


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
