import numpy as np
import torch

from mtst.data import COARSE_LABELS, CONLL_LABELS, IGNORE_INDEX, TaggedSentence, TextExample
from mtst.features import align_labels, bucket_batches, classification_features, collate, ner_features


def test_align_labels_first_piece_only():
    # words: <s> Acme(2 pieces) Corp(1) expands(3) </s>
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]
    assert align_labels(word_ids, [3, 4, 0]) == \
        [IGNORE_INDEX, 3, IGNORE_INDEX, 4, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_ner_features_on_split_words(tiny_encoder):
    tok = tiny_encoder.tokenizer
    sentence = TaggedSentence(("Acme", "Corp", "hired", "Yuki"), ("B-ORG", "I-ORG", "O", "B-PER"))
    feats = ner_features(tok, [sentence], CONLL_LABELS, max_length=64)
    pieces = tok.convert_ids_to_tokens(feats.input_ids[0])
    assert pieces[:4] == ["<s>", "a", "##c", "##m"]  # "Acme" splits in the tiny vocab
    labels = feats.labels[0]
    # a label on each word's first piece, in word order; nothing elsewhere
    firsts = [i for i, w in enumerate(feats.word_ids[0]) if w is not None and
              (i == 0 or feats.word_ids[0][i - 1] != w)]
    assert [labels[i] for i in firsts] == [CONLL_LABELS.index(t) for t in sentence.tags]
    assert all(labels[i] == IGNORE_INDEX for i in range(len(labels)) if i not in firsts)

    coarse = ner_features(tok, [sentence], COARSE_LABELS, max_length=64)
    assert [coarse.labels[0][i] for i in firsts] == [2, 2, 0, 1]


def test_ner_truncation_counted(tiny_encoder):
    sentence = TaggedSentence(tuple(["word"] * 50), tuple(["O"] * 50))
    assert ner_features(tiny_encoder.tokenizer, [sentence], CONLL_LABELS, max_length=16).truncated == 1


def test_collate_pads_dynamically(tiny_encoder):
    tok = tiny_encoder.tokenizer
    cls = classification_features(tok, [TextExample("a b c d e", 1), TextExample("a", 3)], 32)
    batch = collate(cls, [0, 1], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, 7)  # longest in batch, not a fixed 128
    assert batch["attention_mask"].tolist() == [[1] * 7, [1, 1, 1, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [1, 3]
    ner = ner_features(tok, [TaggedSentence(("Paris",), ("B-LOC",)),
                             TaggedSentence(("a", "b", "c"), ("O", "O", "O"))], CONLL_LABELS, 32)
    nb = collate(ner, [0, 1], tok.pad_token_id)
    assert nb["labels"].shape == nb["input_ids"].shape
    assert (nb["labels"][nb["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert torch.equal(nb["input_ids"][0, 3:], torch.full((2,), tok.pad_token_id))


def test_bucket_batches_cover_every_row_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1000)
    batches = bucket_batches(lengths, 32, rng=np.random.default_rng(1), pool_batches=10)
    rows = sorted(i for b in batches for i in b)
    assert rows == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.2 * lengths.sum()  # random batches would pad ~2x


def test_word_shapes():
    from mtst.features import SHAPES, shape_ids, word_shape

    names = {w: SHAPES[word_shape(w)] for w in ["london", "London", "EU", "McDonald", "1996", "-", "AL-AIN", "é"]}
    assert names == {"london": "lower", "London": "Title", "EU": "UPPER", "McDonald": "miXed", "1996": "digit",
                     "-": "other", "AL-AIN": "UPPER", "é": "lower"}
    assert shape_ids([None, 0, 0, 1, None], ["London", "calling"]) == [0, 2, 2, 1, 0]


def test_ner_features_carry_aligned_shapes(tiny_encoder):
    from mtst.data import CONLL_LABELS, TaggedSentence

    sentence = TaggedSentence(("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O"))
    features = ner_features(tiny_encoder.tokenizer, [sentence], CONLL_LABELS, 32)
    batch = collate(features, [0], tiny_encoder.tokenizer.pad_token_id)
    words = features.word_ids[0]
    expected = [0 if w is None else [3, 1, 2, 1][w] for w in words]
    assert batch["shape_ids"][0, : len(words)].tolist() == expected
