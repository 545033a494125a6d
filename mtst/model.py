"""Task 2: ``MultiTaskSentenceTransformer``, one shared encoder with a topic head and an NER head."""

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .assets import HUB_MODEL_ID, MODEL_SHA256, resolve_model, verify_weights
from .config import ModelConfig
from .data import AG_NEWS_LABELS, CONLL_LABELS, IGNORE_INDEX, ner_labels
from .encoder import POOLERS, SentenceTransformer
from .features import SHAPES
from .freezing import mpnet, run_layers
from .metrics import iob2_transitions

logger = logging.getLogger(__name__)

TASKS = ("cls", "ner")
HEADS_FILE = "heads.safetensors"
DELTA_FILE = "encoder_delta.safetensors"
CONFIG_FILE = "mtst_config.json"


def word_rows(emissions: torch.Tensor, labels: torch.Tensor):
    """The labelled positions (one per word) of each row packed to the left: emissions (B, W, L), tags
    (B, W) and mask (B, W), where W is the most words in a row."""
    keep = labels != IGNORE_INDEX  # (B, T)
    n = keep.sum(1)
    order = torch.argsort((~keep).int(), dim=1, stable=True)[:, : max(1, int(n.max()))]  # (B, W)
    words = emissions.gather(1, order[..., None].expand(-1, -1, emissions.shape[-1]))
    mask = torch.arange(order.shape[1], device=n.device)[None] < n[:, None]
    return words, labels.gather(1, order).clamp_min(0), mask


def crf_nll(emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each row's tags under a linear-chain CRF, summed over rows.

    Args:
        emissions: (B, W, L) scores of each word's labels; tags: (B, W); mask: (B, W), words first.
        transitions: (L + 1, L) score of label j after label i (row L: at the start).
    """
    start, pair = transitions[-1], transitions[:-1]
    rows = torch.arange(len(tags), device=tags.device)
    gold = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]  # (B,)
    alpha = start + emissions[:, 0]  # (B, L): log-sum of every path ending in each label
    for t in range(1, tags.shape[1]):
        on = mask[:, t]
        gold = gold + on * (pair[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]])
        step = torch.logsumexp(alpha[:, :, None] + pair[None], dim=1) + emissions[:, t]
        alpha = torch.where(on[:, None], step, alpha)
    return (torch.logsumexp(alpha, dim=-1) - gold)[mask[:, 0]].sum()


class NerHead(nn.Module):
    """The NER head: token states (B, T, H) to label logits (B, T, L).

    Each state is optionally joined to a learned embedding of its word's shape; with
    ``shape_dim=0`` it is the reference's single linear layer. With ``crf`` a linear-chain CRF over
    the words' labels learns their transitions (IOB2's forbidden ones stay forbidden): trained by
    its likelihood, decoded by Viterbi with those transitions.
    """

    def __init__(self, hidden: int, n_labels: int, dropout: float = 0.1, shape_dim: int = 0,
                 labels: tuple[str, ...] | None = None, crf: bool = False, mix: int = 0):
        super().__init__()
        self.mix = mix if mix > 1 else 0  # the last `mix` layers' states, weighted (ELMo's scalar mix)
        self.mix_weights = nn.Parameter(torch.zeros(mix)) if self.mix else None
        self.mix_scale = nn.Parameter(torch.ones(())) if self.mix else None
        self.dropout = nn.Dropout(dropout)
        self.shape = nn.Embedding(len(SHAPES), shape_dim) if shape_dim else None
        self.out = nn.Linear(hidden + shape_dim, n_labels)
        self.transitions = nn.Parameter(torch.zeros(n_labels + 1, n_labels)) if crf else None
        if crf:  # a large finite penalty, so that gradients stay finite
            allowed = torch.as_tensor(iob2_transitions(labels))
            self.register_buffer("forbidden", torch.where(allowed, 0.0, -1e4), persistent=False)

    def transition_scores(self) -> torch.Tensor | None:
        """The CRF's (L + 1, L) transition scores, forbidden IOB2 bigrams included (None without a CRF)."""
        return None if self.transitions is None else self.transitions + self.forbidden

    def decode_transitions(self):
        """The same scores as a NumPy array for ``metrics.constrained_decode`` (None without a CRF)."""
        scores = self.transition_scores()
        return None if scores is None else scores.detach().float().cpu().numpy()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over labelled words: cross-entropy, or the CRF's negative log-likelihood."""
        if self.transitions is None:
            return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX)
        words, tags, mask = word_rows(logits.float(), labels)
        return crf_nll(words, tags, mask, self.transition_scores()) / mask.sum().clamp_min(1)

    def forward(self, states: torch.Tensor, shape_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Label logits ``(B, T, L)`` of every token state ``(B, T, H)`` (or of a learned mix of a list
        of the last layers' states), joined with its word-shape embedding."""
        if self.mix:
            weights = torch.softmax(self.mix_weights, 0)
            states = self.mix_scale * sum(w * s for w, s in zip(weights, states))  # (B, T, H)
        x = self.dropout(states)
        if self.shape is not None:
            if shape_ids is None:
                raise ValueError("this NER head reads word shapes: pass shape_ids (mtst.features.shape_ids)")
            x = torch.cat([x, self.shape(shape_ids).to(x.dtype)], dim=-1)  # (B, T, H + shape_dim)
        return self.out(x)


class MultiTaskSentenceTransformer(nn.Module):
    """A shared encoder feeding a sentence-classification head and a token-classification head.

    The topic head reads the pooled sentence embedding ``(B, H)``; the NER head reads every token
    state ``(B, T, H)``. Each batch may ask for one task (training alternates homogeneous batches)
    or both (prediction).
    """

    def __init__(self, encoder: SentenceTransformer, class_labels=AG_NEWS_LABELS,
                 ner_labels=CONLL_LABELS, head_dropout: float = 0.1, ner_shape_dim: int = 0,
                 ner_crf: bool = False, ner_layer_mix: int = 0):
        super().__init__()
        self.encoder = encoder
        self.class_labels = tuple(class_labels)
        self.ner_labels = tuple(ner_labels)
        self.head_dropout = head_dropout
        self.ner_shape_dim = ner_shape_dim
        self.ner_crf = ner_crf
        self.ner_layer_mix = ner_layer_mix
        hidden = encoder.hidden_size
        self.heads = nn.ModuleDict({
            "cls": nn.Sequential(nn.Dropout(head_dropout), nn.Linear(hidden, len(self.class_labels))),
            "ner": NerHead(hidden, len(self.ner_labels), head_dropout, ner_shape_dim, self.ner_labels, ner_crf,
                           ner_layer_mix),
        })

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "MultiTaskSentenceTransformer":
        """A fresh model in eval mode: pretrained backbone, randomly initialised heads."""
        encoder = SentenceTransformer.from_pretrained(cfg.model_name, cfg.pooling, cfg.normalize,
                                                      cfg.max_seq_length, attention=cfg.attention)
        model = cls(encoder, AG_NEWS_LABELS, ner_labels(cfg.ner_scheme), cfg.head_dropout, cfg.ner_shape_dim,
                    cfg.ner_crf, cfg.ner_layer_mix)
        return model.eval()

    @property
    def tokenizer(self):
        """The shared encoder's tokenizer (the data stage tokenises with it)."""
        return self.encoder.tokenizer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tasks: tuple[str, ...] = TASKS,
                shape_ids: torch.Tensor | None = None, states: torch.Tensor | None = None,
                start_layer: int = 0) -> dict[str, torch.Tensor]:
        """Encoder outputs plus the logits of each requested task.

        Args:
            shape_ids: (B, T) word shapes, for an NER head that reads them.
            states: (B, T, H) cached output of the frozen embeddings and first ``start_layer``
                layers (``mtst.freezing``); the encoder then runs only the layers above.

        Returns:
            ``sentence_embedding`` (B, H), ``token_embeddings`` (B, T, H), and per task
            ``cls`` (B, n_classes) and/or ``ner`` (B, T, n_ner_labels).
        """
        mix = self.heads["ner"].mix if "ner" in tasks else 0
        if states is None and not mix:
            out = self.encoder(input_ids, attention_mask)
        else:
            if states is None:  # the NER head mixes layers: run them one by one, keeping each output
                states, start_layer = mpnet(self.encoder.backbone).embeddings(input_ids=input_ids), 0
            layers = [states]
            tokens = run_layers(self.encoder.backbone, states, attention_mask, start_layer, outputs=layers)
            out = {"token_embeddings": tokens,  # (B, T, H)
                   "sentence_embedding": POOLERS[self.encoder.pooling](tokens, attention_mask)}
            if mix and len(layers) < mix:
                raise ValueError(f"the NER head mixes the last {mix} layers, but the cached prefix ends at layer "
                                 f"{start_layer}: run at least {mix - 1} layers above it")
        if "cls" in tasks:
            out["cls"] = self.heads["cls"](out["sentence_embedding"])
        if "ner" in tasks:
            out["ner"] = self.heads["ner"](layers[-mix:] if mix else out["token_embeddings"], shape_ids)
        return out

    def loss(self, task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One task's training loss: cross-entropy ((B, C) vs (B,), or (B, T, L) vs (B, T) ignoring
        -100), or the NER head's CRF likelihood when it has one."""
        if task == "ner":
            return self.heads["ner"].loss(logits, labels)
        return F.cross_entropy(logits.float(), labels)

    def config_dict(self) -> dict:
        """What a saved model's ``config.json`` holds: pooling, lengths, attention, head sizes and the label lists."""
        return {
            "format_version": 2,
            "pooling": self.encoder.pooling,
            "normalize": self.encoder.normalize,
            "max_seq_length": self.encoder.max_seq_length,
            "attention": self.encoder.attention,
            "head_dropout": self.head_dropout,
            "ner_shape_dim": self.ner_shape_dim,
            "ner_crf": self.ner_crf,
            "ner_layer_mix": self.ner_layer_mix,
            "class_labels": list(self.class_labels),
            "ner_labels": list(self.ner_labels),
        }

    def save_pretrained(self, path) -> None:
        """Encoder in sentence-transformers layout, heads in safetensors, labels in JSON."""
        path = Path(path)
        self.encoder.save_pretrained(path)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()},
                  str(path / HEADS_FILE))
        (path / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2))

    def save_artifact(self, path, base_model: str = HUB_MODEL_ID, base_sha256: str | None = MODEL_SHA256,
                      base_folder=None) -> None:
        """Save a small artifact that applies on top of the checksum-verified base model.

        It holds the heads, the labels, and the encoder's change from the base weights (only the
        tensors that changed, as fp16 differences; none for a frozen encoder). ``from_pretrained``
        rebuilds the model from base + delta.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()},
                  str(path / HEADS_FILE))
        base = load_file(str(Path(base_folder or resolve_model(base_model)) / "model.safetensors"))
        delta = {}
        for name, value in self.encoder.backbone.state_dict().items():
            reference = base.get(name, base.get(f"mpnet.{name}"))
            if reference is None:
                raise KeyError(f"{name} is not in the base model {base_model}")
            if not torch.equal(value.cpu(), reference):
                delta[name] = (value.detach().cpu().float() - reference.float()).half().contiguous()
        (path / DELTA_FILE).unlink(missing_ok=True)
        if delta:
            save_file(delta, str(path / DELTA_FILE))
        config = {**self.config_dict(), "base_model": base_model, "base_model_sha256": base_sha256,
                  "encoder_delta_tensors": len(delta)}
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    @classmethod
    def from_pretrained(cls, path) -> "MultiTaskSentenceTransformer":
        """Load a folder written by ``save_pretrained`` or ``save_artifact`` (no pickle anywhere)."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} has no {CONFIG_FILE}; not a saved MultiTaskSentenceTransformer")
        cfg = json.loads((path / CONFIG_FILE).read_text())
        source = str(path)
        if "base_model" in cfg:  # artifact on top of the base encoder
            source = resolve_model(cfg["base_model"])
            if cfg.get("base_model_sha256") and Path(source).is_dir():
                verify_weights(source, cfg["base_model_sha256"])
        # the attention it was saved with; folders from before the field trained with ModelConfig's default
        encoder = SentenceTransformer.from_pretrained(source, cfg["pooling"], cfg["normalize"], cfg["max_seq_length"],
                                                      cfg.get("attention", ModelConfig.attention))
        if cfg.get("encoder_delta_tensors") and not (path / DELTA_FILE).is_file():  # never the bare base model
            raise FileNotFoundError(f"{path / DELTA_FILE} is missing: this artifact changes "
                                    f"{cfg['encoder_delta_tensors']} encoder tensors and cannot load without it")
        if (path / DELTA_FILE).is_file():
            params = encoder.backbone.state_dict()
            with torch.no_grad():
                for name, delta in load_file(str(path / DELTA_FILE)).items():
                    params[name].add_(delta.float())
        model = cls(encoder, cfg["class_labels"], cfg["ner_labels"], cfg["head_dropout"],
                    cfg.get("ner_shape_dim", 0), cfg.get("ner_crf", False), cfg.get("ner_layer_mix", 0))
        heads = load_file(str(path / HEADS_FILE))
        if cfg.get("format_version", 1) == 1:  # the NER head was nn.Sequential(Dropout, Linear)
            heads = {k.replace("ner.1.", "ner.out."): v for k, v in heads.items()}
        model.heads.load_state_dict(heads)
        return model.eval()
