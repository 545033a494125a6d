"""A re-implementation of the reference design's training loop, kept only as a speed baseline.

Do not use it for anything else: it has the flaws the project avoids on purpose. What it does, as
the reference design describes it:

* ``forward`` takes raw strings (AG News texts, CoNLL word lists) and tokenises them itself, on
  every step; AG News batches pad to their longest text, CoNLL batches pad to 128;
* one Hugging Face ``AutoModel`` MPNet (stock eager attention), a topic head on a mean over all
  token states (padding included) and a token head on every state, each behind dropout 0.1;
* every step takes one AG News batch and one CoNLL batch of 16, sums the two losses and calls
  ``backward`` once (both graphs in memory together), then AdamW;
* fp16 autocast with a ``GradScaler`` on a GPU, fp32 on the CPU; no length bucketing.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

IGNORE_INDEX = -100
MAX_LENGTH = 128


class ReferenceModel(nn.Module):
    """MPNet with a mean-pooled topic head and a token head; tokenises inside ``forward``."""

    def __init__(self, model_dir: str, n_classes: int, n_ner_labels: int, dropout: float = 0.1):
        super().__init__()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.backbone = AutoModel.from_pretrained(model_dir, dtype=torch.float32, add_pooling_layer=False)
        hidden = self.backbone.config.hidden_size
        self.cls_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))
        self.ner_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_ner_labels))

    def tokenize_texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")

    def tokenize_words(self, words: list[list[str]], word_labels: list[list[int]]) -> dict[str, torch.Tensor]:
        """Word lists padded to 128 sub-tokens; each word's label on its first sub-token."""
        enc = self.tokenizer(words, is_split_into_words=True, padding="max_length", truncation=True,
                             max_length=MAX_LENGTH, return_tensors="pt")
        labels = torch.full(enc["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
        for b, tags in enumerate(word_labels):
            previous = None
            for t, w in enumerate(enc.word_ids(b)):
                if w is not None and w != previous:
                    labels[b, t] = tags[w]
                previous = w
        enc["labels"] = labels
        return enc

    def forward_cls(self, texts: list[str]) -> tuple[torch.Tensor, dict]:
        enc = self.tokenize_texts(texts)
        device = next(self.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        states = self.backbone(**enc).last_hidden_state  # (B, T, H)
        return self.cls_head(states.mean(dim=1)), enc  # mean over every position, padding included

    def forward_ner(self, words: list[list[str]], word_labels: list[list[int]]) -> tuple[torch.Tensor, dict]:
        enc = self.tokenize_words(words, word_labels)
        device = next(self.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        states = self.backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return self.ner_head(states), enc  # (B, 128, L)


def reference_step(model: ReferenceModel, optimizer, scaler, cls_batch: tuple[list[str], list[int]],
                   ner_batch: tuple[list[list[str]], list[list[int]]], use_fp16: bool) -> dict:
    """One step: both batches forward, summed loss, one backward. Returns losses and token counts."""
    device = next(model.parameters()).device
    optimizer.zero_grad()
    texts, labels = cls_batch
    words, tags = ner_batch
    with torch.autocast(device.type, dtype=torch.float16, enabled=use_fp16):
        cls_logits, cls_enc = model.forward_cls(texts)
        cls_loss = F.cross_entropy(cls_logits.float(), torch.tensor(labels, device=device))
        ner_logits, ner_enc = model.forward_ner(words, tags)
        ner_loss = F.cross_entropy(ner_logits.float().flatten(0, 1), ner_enc["labels"].flatten(),
                                   ignore_index=IGNORE_INDEX)
        loss = cls_loss + ner_loss
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return {
        "loss": loss.item(),
        "padded_tokens": cls_enc["input_ids"].numel() + ner_enc["input_ids"].numel(),
        "real_tokens": int(cls_enc["attention_mask"].sum() + ner_enc["attention_mask"].sum()),
    }


def build_reference(model_dir: str, n_classes: int, n_ner_labels: int, device: torch.device,
                    lr: float = 2e-5) -> tuple[ReferenceModel, torch.optim.Optimizer, torch.amp.GradScaler, bool]:
    """The reference model on ``device``, its AdamW, its scaler and whether it runs fp16."""
    model = ReferenceModel(model_dir, n_classes, n_ner_labels).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    use_fp16 = device.type == "cuda"
    return model, optimizer, torch.amp.GradScaler(device.type, enabled=use_fp16), use_fp16


@torch.no_grad()
def reference_evaluate(model: ReferenceModel, texts: list[str], labels: list[int], sentences: list,
                       coarse: tuple[str, ...], batch_size: int = 64) -> dict:
    """The reference's validation scores: AG News accuracy; over CoNLL, its own token accuracy (5
    coarse labels over each word's first sub-token) and, for comparison, seqeval entity F1 of its
    coarse predictions read as IOB2 (each run of one type is one entity). Words past the 128
    sub-tokens count as predicted ``O``, as mtst's evaluation counts them."""
    from seqeval.metrics import f1_score

    from mtst.data import to_coarse
    from mtst.metrics import coarse_to_iob2

    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(texts), batch_size):
        logits, _ = model.forward_cls(texts[i:i + batch_size])
        correct += int((logits.argmax(-1).cpu() == torch.tensor(labels[i:i + batch_size])).sum())
    gold, pred, right, words = [], [], 0, 0
    for i in range(0, len(sentences), batch_size):
        chunk = sentences[i:i + batch_size]
        tags = [[coarse.index(t) for t in to_coarse(s.tags)] for s in chunk]
        logits, enc = model.forward_ner([list(s.tokens) for s in chunk], tags)
        keep = enc["labels"] != IGNORE_INDEX
        for b, s in enumerate(chunk):
            read = logits[b][keep[b]].argmax(-1).tolist()
            predicted = [coarse[j] for j in read] + ["O"] * (len(s.tags) - len(read))
            truth = list(to_coarse(s.tags))
            right += sum(p == t for p, t in zip(predicted, truth))
            words += len(truth)
            gold.append(list(s.tags))
            pred.append(coarse_to_iob2(predicted))
    model.train(was_training)
    return {"ag_news_accuracy": correct / len(texts), "conll_coarse_token_accuracy": right / words,
            "conll_entity_f1": float(f1_score(gold, pred)), "rows": {"ag_news": len(texts), "conll": len(sentences)}}
