"""The NER head's linear-chain CRF against brute force: its likelihood and its Viterbi decoding
enumerate every label sequence of a few words."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from conftest import FIXTURE_DATA

from mtst.config import DataConfig, ModelConfig, TrainConfig
from mtst.experiment import build_model, build_task_data
from mtst.metrics import constrained_decode, iob2_transitions
from mtst.model import NerHead
from mtst.train import evaluate, fit

LABELS = ("O", "B-X", "I-X")


def sequence_score(emissions, tags, transitions) -> float:
    """Start score, every word's emission and every transition of one label sequence."""
    score = transitions[-1, tags[0]] + emissions[0, tags[0]]
    for t in range(1, len(tags)):
        score += transitions[tags[t - 1], tags[t]] + emissions[t, tags[t]]
    return float(score)


def test_crf_likelihood_and_decoding_equal_brute_force():
    torch.manual_seed(0)
    head = NerHead(8, len(LABELS), labels=LABELS, crf=True)
    with torch.no_grad():
        head.transitions.normal_()
    logits = torch.randn(3, 7, len(LABELS))
    labels = torch.tensor([[-100, 1, 2, -100, 0, 1, -100],   # words at 1, 2, 4, 5; sub-tokens between
                           [-100, 0, -100, -100, -100, -100, -100],  # one word
                           [-100, 1, 2, 2, 0, 0, 1]])
    transitions = head.transition_scores().detach().numpy()
    allowed = iob2_transitions(LABELS)
    total, words = 0.0, 0
    for row in range(3):
        keep = labels[row] != -100
        em, gold = logits[row][keep].numpy(), labels[row][keep].tolist()
        scores = {seq: sequence_score(em, seq, transitions)
                  for seq in itertools.product(range(len(LABELS)), repeat=len(gold))}
        total += math.log(sum(math.exp(s) for s in scores.values())) - scores[tuple(gold)]
        words += len(gold)
        # Viterbi with the learned transitions: the best sequence whose every bigram IOB2 allows
        valid = {seq: s for seq, s in scores.items() if allowed[-1, seq[0]]
                 and all(allowed[a, b] for a, b in zip(seq, seq[1:]))}
        assert tuple(constrained_decode(em, allowed, head.transitions.detach().numpy())) == max(valid, key=valid.get)
    assert torch.isclose(head.loss(logits, labels), torch.tensor(total / words, dtype=torch.float32), atol=1e-5)


def test_without_transitions_decoding_is_the_constrained_softmax_one():
    rng = np.random.default_rng(0)
    em = np.log(rng.dirichlet(np.ones(3), size=5))
    allowed = iob2_transitions(LABELS)
    assert constrained_decode(em, allowed, np.zeros((4, 3))) == constrained_decode(em, allowed)


def test_a_crf_head_with_a_layer_mix_trains_saves_and_decodes(tiny_model_dir, tmp_path):
    model = build_model(ModelConfig(model_name=str(tiny_model_dir), ner_crf=True, ner_layer_mix=2), seed=0)
    data, _ = build_task_data(model, DataConfig(data_dir=str(FIXTURE_DATA), ag_train_fraction=None))
    train = TrainConfig(epochs=1, batch_size=8, eval_batch_size=16, head_lr=3e-2, device="cpu", trainable_layers=1)
    fit(model, data, train, tmp_path)  # from the cached output of layer 1: the mix reads it and layer 2's
    assert model.heads["ner"].transitions.abs().sum() > 0  # the transitions learned
    assert model.heads["ner"].mix_weights.abs().sum() > 0  # and so did the layer mix
    from mtst.model import MultiTaskSentenceTransformer

    again = MultiTaskSentenceTransformer.from_pretrained(tmp_path / "best")
    assert again.ner_crf and torch.equal(again.heads["ner"].transitions, model.heads["ner"].transitions)
    scores = evaluate(again, {"ner": data["ner"].val})["ner"]
    assert scores["decoding"] == "crf-viterbi" and math.isfinite(scores["loss"])
    plain = dataclasses.replace(ModelConfig(model_name=str(tiny_model_dir)))
    assert evaluate(build_model(plain, seed=0), {"ner": data["ner"].val})["ner"]["decoding"] == "iob2-constrained"


# --- the NER head's learned mix of the last layers ---------------------------------------------------

def test_layer_mix_is_the_weighted_sum_of_the_last_layers_states_on_every_path(tiny_model_dir, tmp_path):
    from mtst.encoder import pad_batch
    from mtst.freezing import bottom_states, prefix_layers
    from mtst.model import MultiTaskSentenceTransformer
    from mtst.predict import Predictor

    torch.manual_seed(0)
    model = build_model(ModelConfig(model_name=str(tiny_model_dir), ner_layer_mix=2), seed=0).eval()
    head = model.heads["ner"]
    with torch.no_grad():
        head.mix_weights.copy_(torch.tensor([0.3, -0.4]))
        head.mix_scale.fill_(1.7)
    ids, mask = pad_batch(model.encoder.tokenize(["Acme Corp opened in London .", "Rain"]).input_ids, 1)
    with torch.no_grad():
        hidden = model.encoder.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        w = torch.softmax(torch.tensor([0.3, -0.4]), 0)
        expected = head.out(1.7 * (w[0] * hidden[-2] + w[1] * hidden[-1]))  # eval: no dropout
        full = model(ids, mask)["ner"]
        cached = model(ids, mask, states=bottom_states(model.encoder.backbone, ids, mask, 1), start_layer=1)["ner"]
    assert torch.allclose(full, expected, atol=1e-5) and torch.allclose(cached, expected, atol=1e-5)
    with pytest.raises(ValueError, match="ner_layer_mix"):  # a prefix past the mixed layers
        prefix_layers(model, TrainConfig(trainable_layers=0))
    assert prefix_layers(model, TrainConfig(trainable_layers=1)) == 1
    # the demo's layer-by-layer turns keep every mixed layer (3: the embeddings and both layers) in the last one
    three = build_model(ModelConfig(model_name=str(tiny_model_dir), ner_layer_mix=3), seed=0)
    whole = Predictor(three, trained=False, turn_token_layers=10**9).predict(["Acme Corp opened in London ."])
    layered = Predictor(three, trained=False, turn_token_layers=1).predict(["Acme Corp opened in London ."])
    assert whole[0]["entities"] == layered[0]["entities"]
    assert all(abs(whole[0]["probabilities"][k] - p) < 1e-6 for k, p in layered[0]["probabilities"].items())
    model.save_pretrained(tmp_path / "saved")
    again = MultiTaskSentenceTransformer.from_pretrained(tmp_path / "saved")
    assert again.ner_layer_mix == 2 and torch.equal(again.heads["ner"].mix_weights, head.mix_weights)
