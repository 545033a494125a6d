"""The NER head's linear-chain CRF against brute force: its likelihood and its Viterbi decoding
enumerate every label sequence of a few words."""

import dataclasses
import itertools
import math

import numpy as np
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


def test_a_crf_head_trains_saves_and_decodes_with_its_transitions(tiny_model_dir, tmp_path):
    model = build_model(ModelConfig(model_name=str(tiny_model_dir), ner_crf=True), seed=0)
    data, _ = build_task_data(model, DataConfig(data_dir=str(FIXTURE_DATA), ag_train_fraction=None))
    train = TrainConfig(epochs=1, batch_size=8, eval_batch_size=16, head_lr=3e-2, device="cpu")
    fit(model, data, train, tmp_path)
    assert model.heads["ner"].transitions.abs().sum() > 0  # the transitions learned
    from mtst.model import MultiTaskSentenceTransformer

    again = MultiTaskSentenceTransformer.from_pretrained(tmp_path / "best")
    assert again.ner_crf and torch.equal(again.heads["ner"].transitions, model.heads["ner"].transitions)
    scores = evaluate(again, {"ner": data["ner"].val})["ner"]
    assert scores["decoding"] == "crf-viterbi" and math.isfinite(scores["loss"])
    plain = dataclasses.replace(ModelConfig(model_name=str(tiny_model_dir)))
    assert evaluate(build_model(plain, seed=0), {"ner": data["ner"].val})["ner"]["decoding"] == "iob2-constrained"
