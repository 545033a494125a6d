import collections

import pytest
from conftest import FIXTURE_DATA, FIXTURES

from mtst.config import DataConfig
from mtst.data import (
    COARSE_LABELS,
    DataFormatError,
    TextExample,
    iob1_to_iob2,
    load_ag_news,
    load_conll,
    read_ag_news,
    read_conll,
    sample_ag_news,
    to_coarse,
)


def test_read_ag_news_fixture():
    rows = read_ag_news(FIXTURE_DATA / "ag_news" / "test.csv")
    assert len(rows) == 40
    assert collections.Counter(r.label for r in rows) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert "#39;" in rows[0].text and "\\" in rows[0].text  # quirks kept verbatim


def test_ag_news_text_is_title_space_description(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('"3","Wall St. Bears","Reuters - Short-sellers, \\band"\n')
    assert read_ag_news(path) == [TextExample("Wall St. Bears Reuters - Short-sellers, \\band", 2)]


@pytest.mark.parametrize("line, problem", [
    ('"1","only two"', "expected 3 columns"),
    ('"5","t","d"', "unknown class '5'"),
    ('"World","t","d"', "unknown class 'World'"),
])
def test_ag_news_malformed_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.csv"
    path.write_text('"1","ok","multi\nline"\n"2","ok","fine"\n' + line + "\n")
    with pytest.raises(DataFormatError, match=f"bad.csv:4: {problem}"):
        read_ag_news(path)


def test_read_conll_drops_docstart_and_keeps_iob2():
    sentences = read_conll(FIXTURE_DATA / "conll2003" / "train.txt")
    assert len(sentences) == 40
    assert all("-DOCSTART-" not in s.tokens for s in sentences)
    assert sentences[0].tokens[:3] == ("Bank", "of", "Japan")
    assert sentences[0].tags[:3] == ("B-ORG", "I-ORG", "I-ORG")


def test_iob1_file_reads_as_iob2():
    iob2 = read_conll(FIXTURE_DATA / "conll2003" / "train.txt")
    assert read_conll(FIXTURES / "conll_train_iob1.txt") == iob2
    assert read_conll(FIXTURES / "conll_train_iob1.txt", scheme="iob1") == iob2


def test_iob1_to_iob2_known_answer():
    # IOB1: B- only separates two adjacent entities of one type.
    assert iob1_to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]


@pytest.mark.parametrize("body, scheme, problem", [
    ("EU NNP I-NP B-ORG extra\n", "auto", "expected 4 space-separated columns"),
    ("EU NNP I-NP B-ORGANISATION\n", "auto", "unknown NER tag 'B-ORGANISATION'"),
    ("EU NNP I-NP O\nrejects VBZ I-VP I-ORG\n", "iob2", "tag 'I-ORG' after 'O' is not valid IOB2"),
    ("EU NNP I-NP O\nrejects VBZ I-VP B-ORG\n", "iob1", "tag 'B-ORG' after 'O' is not valid IOB1"),
])
def test_conll_malformed_line_names_file_and_line(tmp_path, body, scheme, problem):
    path = tmp_path / "bad.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nPeter NNP I-NP O\n\n" + body)
    with pytest.raises(DataFormatError, match=f"bad.txt:[56]: {problem}"):
        read_conll(path, scheme=scheme)


def test_coarse_labels():
    assert to_coarse(["B-PER", "I-PER", "O", "B-MISC"]) == ("PER", "PER", "O", "MISC")
    assert set(to_coarse(["B-ORG", "I-LOC"])) <= set(COARSE_LABELS)


def test_reference_protocol_sizes_and_stratification():
    pool = [TextExample(f"t{i}", i % 4) for i in range(20_000)]
    train, val = sample_ag_news(pool, fraction=0.1, val_fraction=0.2, seed=0)
    assert (len(train), len(val)) == (9_600, 2_400)
    assert collections.Counter(e.label for e in train) == {k: 2_400 for k in range(4)}
    assert collections.Counter(e.label for e in val) == {k: 600 for k in range(4)}
    assert not {e.text for e in train} & {e.text for e in val}
    again, _ = sample_ag_news(pool, fraction=0.1, val_fraction=0.2, seed=0)
    assert again == train  # seeded
    other, _ = sample_ag_news(pool, fraction=0.1, val_fraction=0.2, seed=1)
    assert other != train


def test_sample_larger_than_pool_is_an_error():
    with pytest.raises(ValueError, match="asks for 12000 rows, only 100 available"):
        sample_ag_news([TextExample("t", i % 4) for i in range(100)], 0.1, 0.2, 0)


def test_loaders_on_fixture_folder():
    cfg = DataConfig(data_dir=str(FIXTURE_DATA), ag_train_fraction=None)
    ag = load_ag_news(cfg)
    assert (len(ag.train), len(ag.val), len(ag.test)) == (80, 20, 40)
    assert ag.source["file"].endswith("train_subset_20k.csv") and ag.source["rows"] == 100
    assert len(ag.source["sha256"]) == 64
    conll = load_conll(cfg)
    assert (len(conll.train), len(conll.val), len(conll.test)) == (40, 12, 12)


@pytest.mark.real
def test_real_data_counts(real_data_dir):
    cfg = DataConfig(data_dir=str(real_data_dir))
    ag = load_ag_news(cfg)
    assert len(ag.test) == 7_600
    assert collections.Counter(e.label for e in ag.test) == {k: 1_900 for k in range(4)}
    assert (len(ag.train), len(ag.val)) == (9_600, 2_400)
    conll = load_conll(cfg)
    assert (len(conll.train), len(conll.val), len(conll.test)) == (14_041, 3_250, 3_453)
    iob1 = read_conll(real_data_dir / "conll2003" / "original_iob1" / "eng.testb")
    assert iob1 == conll.test
