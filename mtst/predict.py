"""``Predictor``: raw text in; topic, entity spans and embeddings out."""

import logging
import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .encoder import pad_batch
from .metrics import entity_spans
from .model import MultiTaskSentenceTransformer

logger = logging.getLogger(__name__)


class Predictor:
    """Inference around a ``MultiTaskSentenceTransformer``; safe to share between threads.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        device: where to run.
        trained: False when the heads are untrained (predictions are then noise, and say so).
    """

    def __init__(self, model: MultiTaskSentenceTransformer, device: str | torch.device = "cpu",
                 trained: bool = True):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.trained = trained
        self._lock = threading.Lock()  # one request at a time: torch threads are already busy

    @classmethod
    def from_pretrained(cls, path, device="cpu") -> "Predictor":
        return cls(MultiTaskSentenceTransformer.from_pretrained(path), device, trained=True)

    @property
    def max_seq_length(self) -> int:
        return self.model.encoder.max_seq_length

    def predict(self, texts: Sequence[str]) -> list[dict]:
        """Topic, class probabilities, entities (character offsets) and tokens for each text.

        Texts longer than ``max_seq_length`` sub-tokens are truncated; ``truncated`` says so and
        entities are only found in the part that was read.
        """
        tok = self.model.tokenizer
        stripped = [t.strip() for t in texts]
        # The fast tokenizer's truncation setting is shared state: tokenise under the lock too.
        with self._lock, torch.inference_mode():
            enc = tok(stripped, return_offsets_mapping=True, truncation=True, max_length=self.max_seq_length)
            full_lengths = [len(ids) for ids in tok(stripped, truncation=False, verbose=False)["input_ids"]]
            input_ids, mask = pad_batch(enc["input_ids"], tok.pad_token_id)
            out = self.model(input_ids.to(self.device), mask.to(self.device))
        cls_probs = F.softmax(out["cls"].float(), dim=-1).cpu()
        ner_probs = F.softmax(out["ner"].float(), dim=-1).cpu()
        results = []
        for i, text in enumerate(texts):
            offset = len(text) - len(text.lstrip())  # offsets refer to the stripped text
            spans = [(s + offset, e + offset) for s, e in enc["offset_mapping"][i]]
            results.append({
                "topic": self.model.class_labels[int(cls_probs[i].argmax())],
                "probabilities": {label: float(p) for label, p in zip(self.model.class_labels, cls_probs[i])},
                "entities": self._entities(text, enc.word_ids(i), spans, ner_probs[i]),
                "tokens": [{"token": t, "start": None if w is None else s, "end": None if w is None else e,
                            "special": w is None}
                           for t, w, (s, e) in zip(tok.convert_ids_to_tokens(enc["input_ids"][i]),
                                                   enc.word_ids(i), spans)],
                "num_tokens": len(enc["input_ids"][i]),
                "truncated": full_lengths[i] > self.max_seq_length,
                "trained": self.trained,
            })
        return results

    def _entities(self, text: str, word_ids, spans, probs: torch.Tensor) -> list[dict]:
        """Word-level tags (read at each word's first sub-token) decoded into character spans."""
        words = []  # (first sub-token, char start, char end) per word
        for pos, wid in enumerate(word_ids):
            if wid is None:
                continue
            if words and word_ids[pos - 1] == wid:
                words[-1][2] = spans[pos][1]
            else:
                words.append([pos, spans[pos][0], spans[pos][1]])
        labels = self.model.ner_labels
        tags = [labels[int(probs[first].argmax())] for first, _, _ in words]
        entities = []
        for etype, a, b in entity_spans(tags):
            start, end = words[a][1], words[b][2]
            score = float(torch.stack([probs[words[w][0]].max() for w in range(a, b + 1)]).mean())
            entities.append({"text": text[start:end], "type": etype, "start": start, "end": end,
                             "score": score})
        return entities

    def embed(self, texts: Sequence[str], normalize: bool = True) -> list[list[float]]:
        """Sentence embeddings (the shared encoder's pooled output)."""
        with self._lock:
            return self.model.encoder.encode(list(texts), normalize=normalize, convert_to="list",
                                             show_progress_bar=False)
