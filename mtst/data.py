"""AG News and CoNLL-2003: read the files (or the hub), sample the reference protocol.

Label lists live here and travel with every checkpoint.
"""

import csv
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import AG_NEWS_OFFICIAL_TRAIN_ROWS, DataConfig

logger = logging.getLogger(__name__)

AG_NEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
CONLL_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
COARSE_LABELS = ("O", "PER", "ORG", "LOC", "MISC")
IGNORE_INDEX = -100


class DataFormatError(ValueError):
    """A data file breaks its format; the message names the file and line."""

    def __init__(self, path, line: int, problem: str):
        super().__init__(f"{path}:{line}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass(frozen=True)
class TextExample:
    """One AG News article: title and description as one text, and its topic id (0-3)."""

    text: str
    label: int


@dataclass(frozen=True)
class TaggedSentence:
    """One CoNLL-2003 sentence: its words and their NER tags."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]  # IOB2


def open_utf8(path, newline: str | None = None) -> io.StringIO:
    """A data file as text, like ``open(path, encoding="utf-8", newline=newline)``.

    Raises:
        DataFormatError: a byte is not UTF-8; the message names the file and its line.
    """
    data = Path(path).read_bytes()
    try:
        return io.StringIO(data.decode("utf-8"), newline=newline)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise DataFormatError(path, line, f"byte 0x{data[err.start]:02x} at column {column} is not UTF-8; "
                                          "save the file as UTF-8") from None


def ner_labels(scheme: str) -> tuple[str, ...]:
    """The NER label list of a scheme: ``iob2`` (9 labels) or ``coarse`` (5)."""
    return {"iob2": CONLL_LABELS, "coarse": COARSE_LABELS}[scheme]


def to_coarse(tags) -> tuple[str, ...]:
    """IOB2 tags to the reference design's 5 labels: ``B-PER``/``I-PER`` -> ``PER``."""
    return tuple(t if t == "O" else t[2:] for t in tags)


# ---------------------------------------------------------------- AG News


def read_ag_news(path) -> list[TextExample]:
    """Read the official AG News CSV: no header, ``class (1-4), title, description``.

    Text is ``title + " " + description`` and label ``class - 1``, as the HF loader does; the
    text is kept verbatim (backslashes and ``#39;`` remnants included).
    """
    examples = []
    with open_utf8(path, newline="") as f:
        reader = csv.reader(f)
        line = 1  # physical line where the current row starts (a field may span lines)
        for row in reader:
            if len(row) != 3:
                raise DataFormatError(path, line, f"expected 3 columns (class, title, description), "
                                                  f"got {len(row)}")
            if row[0] not in ("1", "2", "3", "4"):
                raise DataFormatError(path, line, f"unknown class {row[0]!r}; expected 1-4")
            examples.append(TextExample(f"{row[1]} {row[2]}", int(row[0]) - 1))
            line = reader.line_num + 1
    if not examples:
        raise DataFormatError(path, 1, "no rows")
    return examples


def sample_ag_news(examples: list[TextExample], fraction: float | None, val_fraction: float,
                   seed: int) -> tuple[list[TextExample], list[TextExample]]:
    """The reference protocol: a stratified sample of ``fraction`` x 120,000 rows, split train/val.

    With ``fraction=0.1`` and ``val_fraction=0.2`` that is 12,000 rows -> 9,600 / 2,400. The sample
    is drawn from whatever train rows are available and must fit in them.
    """
    from sklearn.model_selection import train_test_split

    labels = [e.label for e in examples]
    if fraction is not None:
        n = round(fraction * AG_NEWS_OFFICIAL_TRAIN_ROWS)
        if n > len(examples):
            raise ValueError(f"ag_train_fraction={fraction} asks for {n} rows, only {len(examples)} "
                             "available")
        if n < len(examples):
            examples, _ = train_test_split(examples, train_size=n, stratify=labels, random_state=seed)
            labels = [e.label for e in examples]
    train, val = train_test_split(examples, test_size=val_fraction, stratify=labels, random_state=seed)
    return list(train), list(val)


# ---------------------------------------------------------------- CoNLL-2003


def iob1_to_iob2(tags) -> list[str]:
    """IOB1 (``I-X`` opens an entity, ``B-X`` only between two adjacent X) to IOB2."""
    return ["B-" + tag[2:] if _opens_with_i(tags, i) else tag for i, tag in enumerate(tags)]


def _opens_with_i(tags, i: int) -> bool:
    """Whether ``tags[i]`` is an ``I-X`` not preceded by another X: opens an entity in IOB1,
    invalid in IOB2."""
    tag, prev = tags[i], tags[i - 1] if i else "O"
    return tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:])


def _first_iob2_violation(tags) -> int | None:
    """Index of the first ``I-X`` not preceded by ``B-X``/``I-X`` (invalid in IOB2)."""
    return next((i for i in range(len(tags)) if _opens_with_i(tags, i)), None)


def _first_iob1_violation(tags) -> int | None:
    """Index of the first ``B-X`` not directly after another X (invalid in IOB1)."""
    return next((i for i, tag in enumerate(tags)
                 if tag.startswith("B-") and (tags[i - 1] if i else "O")[2:] != tag[2:]), None)


def read_conll(path, scheme: str = "auto") -> list[TaggedSentence]:
    """Read CoNLL-2003 column files (``token POS chunk NER``); tags come out as IOB2.

    Args:
        path: the file.
        scheme: ``iob2``, ``iob1`` or ``auto`` (IOB1 when some entity opens with ``I-``).
    """
    if scheme not in ("auto", "iob1", "iob2"):
        raise ValueError(f"scheme must be auto, iob1 or iob2, got {scheme!r}")
    valid_tags = set(CONLL_LABELS)
    sentences, lines = [], []  # lines: the file line of each token of each sentence
    tokens, tags, where = [], [], []
    with open_utf8(path) as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip("\n").rstrip("\r")
            if line.startswith("-DOCSTART-"):
                continue
            if not line.strip():
                if tokens:
                    sentences.append((tokens, tags))
                    lines.append(where)
                tokens, tags, where = [], [], []
                continue
            cols = line.split(" ")
            if len(cols) != 4:
                raise DataFormatError(path, n, f"expected 4 space-separated columns (token POS chunk "
                                               f"NER), got {len(cols)}")
            if cols[3] not in valid_tags:
                raise DataFormatError(path, n, f"unknown NER tag {cols[3]!r}")
            tokens.append(cols[0])
            tags.append(cols[3])
            where.append(n)
    if tokens:
        sentences.append((tokens, tags))
        lines.append(where)
    if not sentences:
        raise DataFormatError(path, 1, "no sentences")

    if scheme == "auto":
        scheme = "iob1" if any(_first_iob2_violation(t) is not None for _, t in sentences) else "iob2"
    check = _first_iob1_violation if scheme == "iob1" else _first_iob2_violation
    out = []
    for (toks, tgs), where in zip(sentences, lines):
        bad = check(tgs)
        if bad is not None:
            prev = tgs[bad - 1] if bad else "O"
            raise DataFormatError(path, where[bad],
                                  f"tag {tgs[bad]!r} after {prev!r} is not valid {scheme.upper()}")
        out.append(TaggedSentence(tuple(toks), tuple(iob1_to_iob2(tgs) if scheme == "iob1" else tgs)))
    return out


# ---------------------------------------------------------------- sources


def file_record(path) -> dict:
    """Name, size and sha256 of a data file, for the run record."""
    data = Path(path).read_bytes()
    return {"file": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _use_local(cfg: DataConfig) -> bool:
    if cfg.source == "local" or (cfg.source == "auto" and cfg.data_dir):
        if not cfg.data_dir:
            raise ValueError("source='local' needs data_dir (or MTST_DATA_DIR)")
        return True
    return False


def ag_news_train_file(data_dir) -> Path:
    """``ag_news/train.csv`` when present, else the 20,000-row genuine subset."""
    folder = Path(data_dir) / "ag_news"
    for name in ("train.csv", "train_subset_20k.csv"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no ag_news/train.csv or ag_news/train_subset_20k.csv under {data_dir}")


@dataclass
class Splits:
    """One dataset's train / validation / test examples (``TextExample`` or ``TaggedSentence``)."""

    train: list
    val: list
    test: list
    source: dict  # which train file / dataset was used, its rows and checksum


def load_ag_news(cfg: DataConfig) -> Splits:
    """AG News train/val sample (reference protocol) and the official test split."""
    if _use_local(cfg):
        train_path = ag_news_train_file(cfg.data_dir)
        pool = read_ag_news(train_path)
        test = read_ag_news(Path(cfg.data_dir) / "ag_news" / "test.csv")
        source = {**file_record(train_path), "rows": len(pool)}
    else:
        pool, test = _hub_ag_news()
        source = {"file": "hub:fancyzhx/ag_news", "rows": len(pool)}
    train, val = sample_ag_news(pool, cfg.ag_train_fraction, cfg.ag_val_fraction, cfg.seed)
    val, test = subsample(val, cfg.eval_limit, cfg.seed), subsample(test, cfg.eval_limit, cfg.seed)
    logger.info("AG News: %d train / %d val (from %s, %d rows) / %d test", len(train), len(val),
                source["file"], source["rows"], len(test))
    return Splits(train, val, test, source)


def load_conll(cfg: DataConfig) -> Splits:
    """CoNLL-2003 official train / valid / test, IOB2."""
    if _use_local(cfg):
        folder = Path(cfg.data_dir) / "conll2003"
        splits = [read_conll(folder / f"{name}.txt") for name in ("train", "valid", "test")]
        source = file_record(folder / "train.txt")
    else:
        splits = _hub_conll()
        source = {"file": "hub:eriktks/conll2003"}
    rows = len(splits[0])
    train = splits[0] if cfg.conll_train_fraction is None else \
        subsample(splits[0], round(cfg.conll_train_fraction * rows), cfg.seed)
    val, test = (subsample(s, cfg.eval_limit, cfg.seed) for s in splits[1:])
    return Splits(train, val, test, source={**source, "rows": rows})


def subsample(items: list, n: int | None, seed: int) -> list:
    """A seeded random subset of ``n`` items in their original order (all items when ``n`` is None)."""
    if n is None or n >= len(items):
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


def _load_hub(name: str, **kwargs):
    """A hub dataset, or an error that says how to use local files instead."""
    try:
        import datasets

        return datasets.load_dataset(name, **kwargs)
    except Exception as err:
        raise RuntimeError(f"could not load {name!r} from the Hugging Face hub ({err.__class__.__name__}: "
                           f"{err}); set MTST_DATA_DIR (or DataConfig.data_dir) to a local data folder "
                           "laid out like shared/data") from err


def _hub_ag_news() -> tuple[list[TextExample], list[TextExample]]:
    ds = _load_hub("fancyzhx/ag_news")
    return tuple([TextExample(r["text"], r["label"]) for r in ds[s]] for s in ("train", "test"))


def _hub_conll() -> list[list[TaggedSentence]]:
    ds = _load_hub("eriktks/conll2003", revision="refs/convert/parquet")
    return [[TaggedSentence(tuple(r["tokens"]), tuple(CONLL_LABELS[t] for t in r["ner_tags"]))
             for r in ds[split]] for split in ("train", "validation", "test")]
