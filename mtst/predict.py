"""``Predictor``: raw text in; topic, entity spans and embeddings out."""

import contextlib
import logging
import re
import threading
import unicodedata
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .distributed import autocast_dtype
from .encoder import pad_batch
from .features import shape_ids
from .freezing import mpnet, num_layers, run_layers
from .metrics import constrained_decode, entity_spans, iob2_transitions
from .model import MultiTaskSentenceTransformer

logger = logging.getLogger(__name__)

CHUNK_TOKENS = 512
"""Most sub-tokens (padding included) in one forward pass: one text of ``max_seq_length`` (384), or
many short ones."""
TURN_TOKEN_LAYERS = 1536
"""Most work the model does in one turn, in sub-tokens x encoder layers: a pass over many tokens
runs a few layers per turn and gives the model back in between, so a short request waits for one
turn (a quarter of a 384-token pass of all-mpnet-base-v2), not for a whole pass or request."""


def _is_punct(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def split_words(text: str, limit: int | None = None) -> list[tuple[int, int]]:
    """Character spans of the words of ``text``, tokenised as CoNLL-2003 is: split on whitespace;
    punctuation at either end of a word is a word of its own, except the dot of an abbreviation
    (``U.S.``). Inside a word everything stays (``AL-AIN``, ``O'Neill``, combining accents).
    With ``limit``, the first ``limit`` words only.
    """
    spans = []
    for match in re.finditer(r"\S+", text):
        if limit is not None and len(spans) >= limit:
            return spans[:limit]
        start, end = match.span()
        if all(_is_punct(c) for c in text[start:end]):  # "--", "...", "?!"
            spans.append((start, end))
            continue
        head, tail = [], []
        while _is_punct(text[start]):
            head.append((start, start + 1))
            start += 1
        while _is_punct(text[end - 1]) and not (text[end - 1] == "." and "." in text[start:end - 1]):
            tail.append((end - 1, end))
            end -= 1
        spans += head + [(start, end)] + tail[::-1]
    return spans[:limit]


class Turns:
    """A lock granted in arrival order (``threading.Lock`` is not fair): a long request that gives
    the model back between forward passes queues behind the requests that arrived meanwhile.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._issued = self._serving = 0

    @contextlib.contextmanager
    def __call__(self):
        with self._cond:
            ticket = self._issued
            self._issued += 1
            self._cond.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()


def token_chunks(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped longest first so that rows x longest length stays within ``budget``."""
    chunks = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if chunks and (len(chunks[-1]) + 1) * lengths[chunks[-1][0]] <= budget:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


class Predictor:
    """Inference around a ``MultiTaskSentenceTransformer``; safe to share between threads.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        device: where to run.
        trained: False when the heads are untrained (predictions are then noise, and say so).
        chunk_tokens: most sub-tokens in one forward pass (``CHUNK_TOKENS``).
        turn_token_layers: most sub-tokens x layers between two turns (``TURN_TOKEN_LAYERS``).
        precision: ``fp32`` (exact), ``bf16`` / ``fp16`` autocast, or ``auto``: bf16 autocast (bench/encode.py's
            fast mode) where the device computes bf16 natively, else fp32 (``mtst.distributed.autocast_dtype``).
    """

    def __init__(self, model: MultiTaskSentenceTransformer, device: str | torch.device = "cpu",
                 trained: bool = True, chunk_tokens: int = CHUNK_TOKENS,
                 turn_token_layers: int = TURN_TOKEN_LAYERS, precision: str = "fp32"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.trained = trained
        self.chunk_tokens = chunk_tokens
        self.turn_token_layers = turn_token_layers
        self.autocast = autocast_dtype(self.device, precision)
        self.mode = "exact (fp32)" if self.autocast is None else \
            f"fast ({str(self.autocast).removeprefix('torch.')} autocast)"
        self._turn = Turns()  # one forward pass at a time: torch threads are already busy
        # The fast tokenizer's truncation and padding are shared state, changed by a call that asks
        # for other settings. Every call here asks for none, so after this one threads can
        # tokenise at the same time, outside the model's turns.
        model.tokenizer(["settle"], truncation=False, padding=False)

    @classmethod
    def from_pretrained(cls, path, device="cpu", precision: str = "fp32") -> "Predictor":
        """A predictor for a trained model folder (``save_pretrained`` or ``save_artifact``)."""
        return cls(MultiTaskSentenceTransformer.from_pretrained(path), device, trained=True, precision=precision)

    @property
    def max_seq_length(self) -> int:
        """Most sub-tokens one text is read in (longer texts are truncated)."""
        return self.model.encoder.max_seq_length

    @torch.inference_mode()
    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, shape_ids: torch.Tensor | None = None,
                 tasks: tuple[str, ...] = ("cls", "ner")) -> dict[str, torch.Tensor]:
        """The model's forward, taken in turns of at most ``turn_token_layers`` (the same result:
        continuing from a layer's states is the backbone's own arithmetic, tests/test_prefix.py)."""
        ids, mask = input_ids.to(self.device), attention_mask.to(self.device)
        backbone, total = self.model.encoder.backbone, num_layers(self.model.encoder.backbone)
        per_turn = max(1, self.turn_token_layers // ids.numel())  # encoder layers per turn
        last = max(0, self.model.heads["ner"].mix - 1)  # the layers the NER head mixes run in the last turn
        shapes = None if shape_ids is None else shape_ids.to(self.device)
        hidden, done = None, 0
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            while True:
                with self._turn():
                    if hidden is None:
                        hidden = mpnet(backbone).embeddings(input_ids=ids)  # (B, T, H)
                    if total - done <= max(per_turn, last):  # the last layers and the heads
                        return self.model(ids, mask, tasks, shape_ids=shapes, states=hidden, start_layer=done)
                    step = min(per_turn, total - done - last)
                    hidden = run_layers(backbone, hidden, mask, done, done + step)
                done += step

    def predict(self, texts: Sequence[str]) -> list[dict]:
        """Topic, class probabilities, entities (character offsets) and tokens for each text.

        Words are split as CoNLL-2003 splits them (``split_words``) and tokenised word by word as in
        training; each word is tagged at its first sub-token. Texts longer than ``max_seq_length``
        sub-tokens are truncated; ``truncated`` says so and entities are only found in the part read.
        """
        tok, limit = self.model.tokenizer, self.max_seq_length
        # A word is at least one sub-token, so words past the first `limit` are never read: a
        # 50,000-character text costs no more than a 384-word one.
        words = [split_words(text, limit + 1) for text in texts]
        cut = [len(spans) > limit for spans in words]
        words = [spans[:limit] for spans in words]
        enc = tok([[text[s:e] for s, e in spans] for text, spans in zip(texts, words)], is_split_into_words=True,
                  return_offsets_mapping=True, truncation=False, verbose=False)
        # Truncate as the tokenizer does: keep the first limit - 1 sub-tokens and the closing special one.
        keep = [list(range(min(n, limit - 1))) + [n - 1] if n > limit else list(range(n))
                for n in (len(ids) for ids in enc["input_ids"])]
        input_ids = [[enc["input_ids"][i][k] for k in kept] for i, kept in enumerate(keep)]
        word_ids = [[ids[k] for k in kept] for ids, kept in zip(map(enc.word_ids, range(len(texts))), keep)]
        shapes = [shape_ids(word_ids[i], [text[s:e] for s, e in words[i]]) for i, text in enumerate(texts)]
        cls_probs, ner_probs = [None] * len(texts), [None] * len(texts)
        for chunk in token_chunks([len(ids) for ids in input_ids], self.chunk_tokens):
            batch, mask = pad_batch([input_ids[i] for i in chunk], tok.pad_token_id)
            shape_batch, _ = pad_batch([shapes[i] for i in chunk], 0)
            out = self._forward(batch, mask, shape_batch)
            for row, i in enumerate(chunk):
                cls_probs[i] = F.softmax(out["cls"][row].float(), dim=-1).cpu()
                ner_probs[i] = F.softmax(out["ner"][row, : len(input_ids[i])].float(), dim=-1).cpu()
        results = []
        for i, text in enumerate(texts):
            offsets = [enc["offset_mapping"][i][k] for k in keep[i]]  # within each word
            spans = [(None, None) if w is None else (words[i][w][0] + s, words[i][w][0] + e)
                     for w, (s, e) in zip(word_ids[i], offsets)]
            results.append({
                "topic": self.model.class_labels[int(cls_probs[i].argmax())],
                "probabilities": {label: float(p) for label, p in zip(self.model.class_labels, cls_probs[i])},
                "entities": self._entities(text, words[i], word_ids[i], ner_probs[i]),
                "tokens": [{"token": t, "start": start, "end": end, "special": w is None}
                           for t, w, (start, end) in zip(tok.convert_ids_to_tokens(input_ids[i]), word_ids[i], spans)],
                "num_tokens": len(input_ids[i]),
                "truncated": cut[i] or len(enc["input_ids"][i]) > limit,
                "trained": self.trained,
            })
        return results

    def _entities(self, text: str, words: list[tuple[int, int]], word_ids, probs: torch.Tensor) -> list[dict]:
        """Word tags (read at each word's first sub-token) decoded into character spans of whole words."""
        first = {}  # word -> its first sub-token; words cut off by truncation are absent
        for pos, wid in enumerate(word_ids):
            if wid is not None:
                first.setdefault(wid, pos)
        read = sorted(first)
        labels = self.model.ner_labels
        # The same IOB2-constrained decoding as evaluation: no I-X without a B-X or I-X before it.
        logprobs = torch.stack([probs[first[w]] for w in read]).clamp_min(1e-12).log().numpy() if read else \
            np.zeros((0, len(labels)))
        crf = self.model.heads["ner"].decode_transitions()  # a CRF's learned transitions, if it has one
        tags = [labels[i] for i in constrained_decode(logprobs, iob2_transitions(labels), crf)]
        entities = []
        for etype, a, b in entity_spans(tags):
            start, end = words[read[a]][0], words[read[b]][1]
            score = float(torch.stack([probs[first[w]].max() for w in read[a:b + 1]]).mean())
            entities.append({"text": text[start:end], "type": etype, "start": start, "end": end,
                             "score": score})
        return entities

    def embed(self, texts: Sequence[str], normalize: bool = True) -> list[list[float]]:
        """Sentence embeddings (the shared encoder's pooled output), in passes of ``chunk_tokens``."""
        input_ids = self.model.encoder.tokenize(list(texts)).input_ids
        out = [None] * len(input_ids)
        for chunk in token_chunks([len(ids) for ids in input_ids], self.chunk_tokens):
            batch, mask = pad_batch([input_ids[i] for i in chunk], self.model.tokenizer.pad_token_id)
            embeddings = self._forward(batch, mask, tasks=())["sentence_embedding"].float()
            if normalize:
                embeddings = F.normalize(embeddings, p=2, dim=-1)
            for i, embedding in zip(chunk, embeddings.cpu().tolist()):
                out[i] = embedding
        return out
