"""Entity-level scores against hand-worked answers (and seqeval's conventions)."""

import pytest

from mtst.metrics import classification_metrics, coarse_to_iob2, entity_spans, ner_metrics

GOLD = ["B-PER", "I-PER", "O", "B-ORG", "O", "B-LOC", "B-LOC", "O"]  # 4 entities; two LOCs adjacent


def test_perfect():
    m = ner_metrics([GOLD], [GOLD])
    assert m["entity_f1"] == m["token_accuracy"] == 1.0


def test_boundary_error_counts_as_miss_and_false_positive():
    pred = ["B-PER", "O", "O", "B-ORG", "O", "B-LOC", "B-LOC", "O"]  # PER cut short
    m = ner_metrics([GOLD], [pred])
    # 3 of 4 predicted entities correct, 3 of 4 gold found
    assert m["entity_precision"] == pytest.approx(3 / 4)
    assert m["entity_recall"] == pytest.approx(3 / 4)
    assert m["token_accuracy"] == pytest.approx(7 / 8)


def test_type_error():
    pred = ["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "B-LOC", "O"]  # ORG called LOC
    m = ner_metrics([GOLD], [pred])
    assert m["entity_f1"] == pytest.approx(3 / 4)
    assert m["per_type"]["ORG"]["recall"] == 0.0
    assert m["per_type"]["LOC"]["precision"] == pytest.approx(2 / 3)


def test_adjacent_entities_must_stay_apart():
    pred = ["B-PER", "I-PER", "O", "B-ORG", "O", "B-LOC", "I-LOC", "O"]  # two LOCs merged into one
    m = ner_metrics([GOLD], [pred])
    # predicted 3 entities, 2 right; gold 4
    assert m["entity_precision"] == pytest.approx(2 / 3)
    assert m["entity_recall"] == pytest.approx(2 / 4)
    assert m["token_accuracy"] == pytest.approx(7 / 8)


def test_high_token_accuracy_low_entity_f1():
    # Long sentences of O with every multi-word entity clipped: 95% of tokens right, F1 = 0.
    gold = [["O"] * 36 + ["B-ORG", "I-ORG", "I-ORG", "I-ORG"]] * 10
    pred = [["O"] * 36 + ["B-ORG", "I-ORG", "O", "O"]] * 10
    m = ner_metrics(gold, pred)
    assert m["token_accuracy"] == pytest.approx(0.95)
    assert m["entity_f1"] == 0.0


def test_strict_mode_rejects_entities_opening_with_i():
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]  # conlleval-style default mode accepts this span
    m = ner_metrics(gold, pred)
    assert m["entity_f1"] == 1.0 and m["strict_entity_f1"] == 0.0


def test_coarse_tags_are_scored_as_runs():
    assert coarse_to_iob2(["PER", "PER", "O", "LOC", "ORG"]) == ["B-PER", "I-PER", "O", "B-LOC", "B-ORG"]
    assert entity_spans(["PER", "PER", "O", "LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert ner_metrics([["PER", "PER", "O"]], [["PER", "O", "O"]])["entity_f1"] == 0.0


def test_classification_metrics_known_answer():
    m = classification_metrics([0, 0, 1, 1, 2, 3], [0, 1, 1, 1, 2, 2], 4)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per-class F1: 0 -> 2/3, 1 -> 0.8, 2 -> 2/3, 3 -> 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3 + 0) / 4)
    assert m["confusion_matrix"][0] == [1, 1, 0, 0]


def test_coarse_token_accuracy_is_the_reference_designs_measure():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "B-PER", "O", "B-ORG"]]  # a broken entity still has the right coarse type
    m = ner_metrics(gold, pred)
    assert m["coarse_token_accuracy"] == 0.75 and m["token_accuracy"] == 0.5


def test_constrained_decoding_is_the_best_valid_sequence():
    import itertools

    import numpy as np

    from mtst.data import CONLL_LABELS
    from mtst.metrics import constrained_decode, iob2_transitions

    labels = CONLL_LABELS[:5]  # O, B-PER, I-PER, B-ORG, I-ORG: small enough to enumerate
    allowed = iob2_transitions(labels)

    def valid(seq):
        return all(allowed[a][b] for a, b in zip((len(labels),) + tuple(seq[:-1]), seq))

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4):
        for _ in range(20):
            logprobs = np.log(rng.dirichlet(np.ones(len(labels)), size=n))
            brute = max((s for s in itertools.product(range(len(labels)), repeat=n) if valid(s)),
                        key=lambda s: logprobs[np.arange(n), list(s)].sum())
            assert constrained_decode(logprobs, allowed) == list(brute)
    # A stray I- after O becomes the best valid choice, while argmax keeps it
    stray = np.log(np.array([[0.9, 0.05, 0.01, 0.02, 0.02], [0.1, 0.3, 0.5, 0.05, 0.05]]))
    assert stray.argmax(-1).tolist() == [0, 2] and constrained_decode(stray, allowed) == [0, 1]


def test_coarse_labels_are_unconstrained():
    import numpy as np

    from mtst.data import COARSE_LABELS
    from mtst.metrics import constrained_decode, iob2_transitions

    logprobs = np.log(np.random.default_rng(1).dirichlet(np.ones(5), size=6))
    assert constrained_decode(logprobs, iob2_transitions(COARSE_LABELS)) == logprobs.argmax(-1).tolist()
