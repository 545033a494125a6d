"""Metrics: topic accuracy / macro-F1, NER token accuracy and entity-level F1 (seqeval).

NER metrics are computed at word level: one prediction per word, read at its first sub-token
(continuation pieces, special tokens and padding carry ``IGNORE_INDEX`` and are never counted).
"""

import numpy as np
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2
from sklearn.metrics import confusion_matrix
from sklearn.metrics import f1_score as sk_f1


def classification_metrics(gold, pred, n_classes: int) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows: gold, columns: predicted)."""
    gold, pred = np.asarray(gold), np.asarray(pred)
    return {
        "accuracy": float((gold == pred).mean()),
        "macro_f1": float(sk_f1(gold, pred, average="macro", labels=list(range(n_classes)),
                                zero_division=0)),
        "confusion_matrix": confusion_matrix(gold, pred, labels=list(range(n_classes))).tolist(),
    }


def iob2_transitions(labels) -> np.ndarray:
    """Allowed label bigrams under IOB2, ``(L + 1, L)``, for ``constrained_decode``.

    Row ``i < L`` is after label ``i``, row ``L`` at the start of a sentence. ``I-X`` may only
    follow ``B-X`` or ``I-X``; anything else goes.
    """
    allowed = np.ones((len(labels) + 1, len(labels)), dtype=bool)
    for j, label in enumerate(labels):
        if label.startswith("I-"):
            allowed[:, j] = [prev in (f"B-{label[2:]}", label) for prev in labels] + [False]
    return allowed


def constrained_decode(logprobs: np.ndarray, allowed: np.ndarray, transitions: np.ndarray | None = None) -> list[int]:
    """The most probable label sequence whose every bigram is allowed (Viterbi).

    Args:
        logprobs: ``(n, L)`` per-word label log-probabilities (or a CRF's emission scores).
        allowed: ``iob2_transitions(labels)``.
        transitions: ``(L + 1, L)`` learned transition scores of a CRF, laid out as ``allowed``.
    """
    if len(logprobs) == 0:
        return []
    penalty = np.where(allowed, 0.0, -np.inf) + (0.0 if transitions is None else transitions)  # (L + 1, L)
    score = logprobs[0] + penalty[-1]
    back = []
    for row in logprobs[1:]:
        candidates = score[:, None] + penalty[:-1]  # (L previous, L current)
        back.append(candidates.argmax(0))
        score = candidates.max(0) + row
    path = [int(score.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return path[::-1]


def coarse_to_iob2(tags) -> list[str]:
    """Prefix-less tags (``PER PER O LOC``) to IOB2: each run of one type is one entity."""
    out = []
    for i, tag in enumerate(tags):
        if tag == "O":
            out.append("O")
        else:
            out.append(("I-" if i and tags[i - 1] == tag else "B-") + tag)
    return out


def _is_coarse(tags) -> bool:
    """Prefix-less tags (the 5-label scheme) rather than IOB2."""
    return any(t != "O" and t[:2] not in ("B-", "I-") for t in tags)


def entity_spans(tags) -> list[tuple[str, int, int]]:
    """Entities in one IOB2 (or prefix-less) tag sequence as ``(type, first, last)`` word indices."""
    tags = list(tags)
    if _is_coarse(tags):
        tags = coarse_to_iob2(tags)
    return get_entities(tags)


def ner_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Word-level token accuracy and seqeval entity precision / recall / F1 (micro and per type).

    ``entity_*`` use seqeval's default (conlleval-compatible) mode; ``strict_*`` use its strict
    IOB2 mode, where an entity must also open with ``B-``.
    """
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tag sequences differ in shape")
    if any(_is_coarse(seq) for seq in gold + pred):
        gold, pred = [coarse_to_iob2(s) for s in gold], [coarse_to_iob2(s) for s in pred]
    words = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    # The reference design's figure: 5 coarse labels (O/PER/ORG/LOC/MISC), one per labelled word.
    coarse_correct = sum(a[2:] == b[2:] for g, p in zip(gold, pred) for a, b in zip(g, p))
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    per_type = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                    "support": int(v["support"])}
                for k, v in report.items() if not k.endswith(" avg")}
    return {
        "token_accuracy": correct / max(words, 1),
        "coarse_token_accuracy": coarse_correct / max(words, 1),
        "words": words,
        "entity_precision": float(precision_score(gold, pred, zero_division=0)),
        "entity_recall": float(recall_score(gold, pred, zero_division=0)),
        "entity_f1": float(f1_score(gold, pred, zero_division=0)),
        "strict_entity_f1": float(f1_score(gold, pred, mode="strict", scheme=IOB2, zero_division=0)),
        "per_type": per_type,
    }


def score_task(model, features, preds: dict, loss: float) -> dict:
    """Metrics of one task (``features.task``) from per-row predictions.

    A prediction is a class id, or one row of label log-probabilities per word read; ``model``
    supplies the label lists.
    """
    order = sorted(preds)
    result = {"loss": loss, "n": len(order)}
    if features.task == "cls":
        result.update(classification_metrics([features.labels[r] for r in order], [preds[r] for r in order],
                                             len(model.class_labels)))
    else:  # IOB2-constrained decoding (no I-X without a B-X or I-X before it); plain argmax beside it
        labels = model.ner_labels
        allowed, crf = iob2_transitions(labels), model.heads["ner"].decode_transitions()
        gold = [[labels[i] for i in features.word_labels[r]] for r in order]

        def tags(ids, n):  # words cut off by truncation count as O
            return [labels[i] for i in ids] + ["O"] * (n - len(ids))

        argmax = ner_metrics(gold, [tags(preds[r].argmax(-1), len(g)) for g, r in zip(gold, order)])
        result.update(ner_metrics(gold, [tags(constrained_decode(preds[r], allowed, crf), len(g))
                                          for g, r in zip(gold, order)]))
        result["decoding"] = "iob2-constrained" if crf is None else "crf-viterbi"
        result["argmax"] = {k: argmax[k] for k in ("entity_f1", "strict_entity_f1", "token_accuracy",
                                                   "coarse_token_accuracy")}
    return result


def monitor_score(metrics: dict, monitor: str) -> float:
    """The number early stopping watches (``TrainConfig.monitor``); higher is better.

    ``mean_score`` averages the scores of the tasks present.
    """
    if monitor == "val_loss":
        return -float(metrics["loss"])
    if monitor == "cls_accuracy":
        return float(metrics["cls"]["accuracy"])
    if monitor == "entity_f1":
        return float(metrics["ner"]["entity_f1"])
    scores = [float(metrics[t][key]) for t, key in (("cls", "accuracy"), ("ner", "entity_f1")) if t in metrics]
    return sum(scores) / len(scores)
