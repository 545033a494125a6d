"""Pre-tokenised task examples, label alignment, the collator, and the batches training reads.

Tokenisation happens here, once, before training; the model only ever sees tensors. Batches are
length-bucketed (``BatchStream``, one per task); ``TaskSampler`` picks which task's batch comes
next. ``both`` (the reference design) takes one AG News batch and one CoNLL batch every step and
sums their losses; the others take one task per step: ``round_robin`` alternates, ``proportional``
draws a task with probability proportional to its dataset size, and ``temperature`` with
probability proportional to ``size ** (1 / T)`` (T=1 is proportional, T -> inf is uniform).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data import IGNORE_INDEX, TaggedSentence, TextExample, to_coarse
from .encoder import pad_batch, tokenize_texts
from .freezing import PrefixStates

# Word shapes for the NER head: all-mpnet-base-v2 lowercases its input, so capital letters (the
# strongest single cue for a name) never reach the encoder; the head gets them from here.
SHAPES = ("special", "lower", "Title", "UPPER", "miXed", "digit", "other")


def word_shape(word: str) -> int:
    """Index into ``SHAPES`` of one word's casing class."""
    if any(c.isdigit() for c in word):
        return SHAPES.index("digit")
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return SHAPES.index("other")
    if all(c.islower() for c in letters):
        return SHAPES.index("lower")
    if all(c.isupper() for c in letters):
        return SHAPES.index("UPPER")
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return SHAPES.index("Title")
    return SHAPES.index("miXed")


def shape_ids(word_ids: Sequence[int | None], words: Sequence[str]) -> list[int]:
    """Each sub-token gets the shape of its word; special tokens get ``special`` (0)."""
    shapes = [word_shape(w) for w in words]
    return [0 if wid is None else shapes[wid] for wid in word_ids]


@dataclass
class TaskFeatures:
    """One task's examples as sub-token ids.

    ``labels`` holds one int per example (classification) or one list per example aligned to its
    sub-tokens (NER, ``IGNORE_INDEX`` where no word label applies). ``word_ids`` maps each
    sub-token back to its word (None for special tokens), so predictions return to words.
    """

    task: str
    input_ids: list[list[int]]
    labels: list
    word_ids: list[list[int | None]] | None = None
    word_labels: list[list[int]] | None = None  # NER gold per word, whole sentence (even if truncated)
    truncated: int = 0
    shapes: list[list[int]] | None = None  # NER: each sub-token's word shape (``shape_ids``)
    prefix: PrefixStates | None = None  # the frozen bottom's cached states, when training uses them

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        """Sub-tokens per example, what the length buckets sort by."""
        return [len(ids) for ids in self.input_ids]


@dataclass
class TaskSplits:
    """One task's pre-tokenised train / validation / test features."""

    train: TaskFeatures
    val: TaskFeatures
    test: TaskFeatures


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Word labels to sub-tokens: the first piece of each word gets its label.

    The other pieces and the special tokens get ``IGNORE_INDEX``.
    """
    aligned, previous = [], None
    for wid in word_ids:
        aligned.append(IGNORE_INDEX if wid is None or wid == previous else word_labels[wid])
        previous = wid
    return aligned


def classification_features(tokenizer, examples: Sequence[TextExample], max_length: int) -> TaskFeatures:
    """Tokenise AG News texts (special tokens added, truncated to ``max_length``)."""
    tokens = tokenize_texts(tokenizer, [e.text for e in examples], max_length)
    return TaskFeatures("cls", tokens.input_ids, [e.label for e in examples],
                        truncated=sum(tokens.truncated))


def ner_features(tokenizer, sentences: Sequence[TaggedSentence], labels: Sequence[str],
                 max_length: int) -> TaskFeatures:
    """Tokenise CoNLL sentences word by word and align their tags to sub-tokens.

    Args:
        labels: the label list (IOB2 or coarse); coarse labels are derived from the IOB2 tags.
    """
    coarse = "B-PER" not in labels
    index = {label: i for i, label in enumerate(labels)}
    enc = tokenizer([list(s.tokens) for s in sentences], is_split_into_words=True, truncation=True,
                    max_length=max_length)
    input_ids, aligned, word_ids, word_labels, shapes, truncated = [], [], [], [], [], 0
    for i, sentence in enumerate(sentences):
        wids = enc.word_ids(i)
        shapes.append(shape_ids(wids, sentence.tokens))
        tags = to_coarse(sentence.tags) if coarse else sentence.tags
        word_labels.append([index[t] for t in tags])
        aligned.append(align_labels(wids, word_labels[-1]))
        word_ids.append(wids)
        input_ids.append(enc["input_ids"][i])
        kept = {w for w in wids if w is not None}
        truncated += len(kept) < len(sentence.tokens)
    return TaskFeatures("ner", input_ids, aligned, word_ids, word_labels, truncated, shapes)


def collate(features: TaskFeatures, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """A padded batch of the given rows, as the model's forward takes it, with its labels.

    ``input_ids``, ``attention_mask`` (B, T) and ``labels`` ((B,) for classification, (B, T) padded
    with ``IGNORE_INDEX`` for NER); for NER also ``shape_ids`` (B, T); with cached prefix states
    also ``states`` (B, T, H).
    """
    input_ids, attention_mask = pad_batch([features.input_ids[r] for r in rows], pad_id)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if features.task == "ner":
        batch["labels"] = torch.full(input_ids.shape, IGNORE_INDEX, dtype=torch.long)
        batch["shape_ids"] = torch.zeros(input_ids.shape, dtype=torch.long)
        for b, r in enumerate(rows):
            batch["labels"][b, : len(features.labels[r])] = torch.tensor(features.labels[r])
            if features.shapes is not None:
                batch["shape_ids"][b, : len(features.shapes[r])] = torch.tensor(features.shapes[r])
    else:
        batch["labels"] = torch.tensor([features.labels[r] for r in rows], dtype=torch.long)
    if features.prefix is not None:
        batch["states"] = features.prefix.batch(rows, input_ids.shape[1])
        batch["start_layer"] = features.prefix.layers
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """Move the tensors of a batch (other entries, such as ``start_layer``, stay as they are)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    """The keyword arguments of the model's forward: everything in a batch but the labels."""
    return {k: v for k, v in batch.items() if k != "labels"}


def bucket_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                   pool_batches: int = 50) -> list[list[int]]:
    """Shuffled training batches of rows of similar length, so little padding is computed.

    Rows are shuffled, sorted by length within pools of ``pool_batches`` batches, and the batch order
    shuffled. (Evaluation takes ``mtst.encoder.length_batches``: longest first, no shuffling.)
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class BatchStream:
    """Endless length-bucketed batches of one task, resumable from two integers.

    Pass ``k`` is shuffled by ``rng(seed, k)``, so the stream's state is the pass and the position
    in it; with several ranks each takes every ``world``-th batch.
    """

    def __init__(self, features: TaskFeatures, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.features, self.batch_size, self.seed = features, batch_size, seed
        self.rank, self.world = rank, world
        self.pass_index, self.position = 0, 0
        self._batches = self._make()

    def _make(self) -> list[list[int]]:
        batches = bucket_batches(self.features.lengths, self.batch_size,
                                 np.random.default_rng([self.seed, self.pass_index]))
        return batches[self.rank::self.world][: len(batches) // self.world]

    def __len__(self) -> int:
        return len(self._batches)

    def next(self) -> list[int]:
        """The rows of the next batch; a new shuffled pass starts when one is used up."""
        if self.position == len(self._batches):
            self.pass_index, self.position = self.pass_index + 1, 0
            self._batches = self._make()
        self.position += 1
        return self._batches[self.position - 1]

    def state_dict(self) -> dict:
        """Where the stream is, for resuming: its pass and its position in that pass."""
        return {"pass_index": self.pass_index, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``: the same batches follow as in the uninterrupted stream."""
        self.pass_index, self.position = state["pass_index"], state["position"]
        self._batches = self._make()


STRATEGIES = ("both", "round_robin", "proportional", "temperature")


def task_probabilities(sizes: dict[str, int], strategy: str, temperature: float = 2.0) -> dict[str, float]:
    """The long-run share of steps each task gets under ``strategy``."""
    if strategy in ("both", "round_robin"):
        return {task: 1 / len(sizes) for task in sizes}
    power = 1.0 if strategy == "proportional" else 1.0 / temperature
    weights = {task: n ** power for task, n in sizes.items()}
    total = sum(weights.values())
    return {task: w / total for task, w in weights.items()}


class TaskSampler:
    """Yields the tasks of each step; its state (step count, RNG) is saved for resuming.

    Args:
        sizes: examples per task, e.g. ``{"cls": 9600, "ner": 14041}``.
        strategy: one of ``STRATEGIES``.
        temperature: T for the ``temperature`` strategy.
        seed: seeds the random strategies.
    """

    def __init__(self, sizes: dict[str, int], strategy: str = "both", temperature: float = 2.0,
                 seed: int = 0):
        if strategy not in STRATEGIES:
            raise ValueError(f"sampling must be one of {STRATEGIES}, got {strategy!r}")
        if strategy == "temperature" and temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.tasks = tuple(sizes)
        self.strategy = strategy
        self.probs = task_probabilities(sizes, strategy, temperature)
        self.rng = np.random.default_rng(seed)
        self.step = 0

    def next(self) -> tuple[str, ...]:
        """The task(s) whose batch this step trains on."""
        step, self.step = self.step, self.step + 1
        if self.strategy == "both":
            return self.tasks
        if self.strategy == "round_robin":
            return (self.tasks[step % len(self.tasks)],)
        return (self.tasks[self.rng.choice(len(self.tasks), p=[self.probs[t] for t in self.tasks])],)

    def steps_per_pass(self, batches: dict[str, int]) -> int:
        """Steps that read each task's ``batches`` once: the longest task's under ``both``, else all of them."""
        return max(batches.values()) if self.strategy == "both" else sum(batches.values())

    def state_dict(self) -> dict:
        """The step count and RNG state, for resuming."""
        return {"step": self.step, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``: the same tasks follow as in the uninterrupted run."""
        self.step = state["step"]
        self.rng.bit_generator.state = state["rng"]
