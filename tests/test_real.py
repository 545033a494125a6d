"""Parity with sentence-transformers on the real all-mpnet-base-v2 (marked ``real``)."""

import copy

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer as ST

from mtst import SentenceTransformer
from mtst.data import read_ag_news

RAW_TOLERANCE = 1e-5
"""Raw embeddings have norms of 2.4-3.1; measured max abs diff 7.7e-7 (sdpa vs ST's attention)."""


def _varied_sentences() -> list[str]:
    short = ["Hi.", "Stocks fell.", "Rain again", "Go!", "Mars rover lands", "EU fines Google",
             "Yes", "Final score 2-1", "?", "Oil at $50", "Tokyo quake", "New chip", "Ok then",
             "Fed holds rates", "Nadal wins", "x"]
    medium = [f"Reuters - Shares of company {i} rose {i % 7} percent on Monday after "
              f"it#39;s quarterly earnings beat forecasts, the \\$ figure said (quot;strong quot;)."
              for i in range(16)]
    long = [" ".join(f"token{j} word{i}" for j in range(150 + 20 * i)) for i in range(16)]  # > 384
    foreign = ["Zürich café naïve façade", "Москва встречает гостей", "東京の天気は晴れ",
               "El niño llegó 🙂", "Ελληνικά νέα", "مرحبا بالعالم", "Ça va très bien, merci",
               "Straße und Größe", "😀😃😄 emoji only", "Crème brûlée à Paris", "Smørrebrød i København",
               "İstanbul'da yağmur", "Dvořák symfonie", "Łódź fabryka", "ñandú", "résumé déjà vu"]
    return [s for group in zip(short, medium, long, foreign) for s in group]  # mixed in batches


@pytest.mark.real
def test_matches_sentence_transformers_on_real_model(real_model_dir):
    """Default arguments on both sides (the folder's Normalize module applies), then the raw
    pooled outputs, so that a per-row scale error cannot hide behind the normalisation.
    """
    sentences = _varied_sentences()
    assert len(sentences) == 64
    st = ST(str(real_model_dir), device="cpu")
    ours_model = SentenceTransformer.from_pretrained(str(real_model_dir))
    assert ours_model.pooling == "mean" and ours_model.max_seq_length == 384
    assert sum(ours_model.tokenize(sentences).truncated) == 16

    reference = st.encode(sentences, batch_size=16)
    ours = ours_model.encode(sentences, batch_size=16)
    diff = np.abs(reference - ours).max()
    print(f"default arguments: max abs diff vs sentence-transformers {diff:.2e}")
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    assert diff <= 1e-5

    raw_st = ST(modules=[st[0], st[1]], device="cpu")  # Transformer + Pooling, no Normalize
    reference = raw_st.encode(sentences, batch_size=16)
    ours = ours_model.encode(sentences, batch_size=16, normalize=False)
    diff = np.abs(reference - ours).max()
    print(f"raw: max abs diff vs sentence-transformers {diff:.2e}, norms {np.linalg.norm(ours, axis=1).min():.2f}"
          f"-{np.linalg.norm(ours, axis=1).max():.2f}")
    assert np.linalg.norm(reference, axis=1).min() > 2  # really unnormalised
    assert diff <= RAW_TOLERANCE


ROUNDING_TEXTS = 100
"""AG News test texts searched for the one whose embedding fp32 rounding moves most (on Zen 5 the first 100 hold a
5.4e-06 fp32-to-fp64 gap; the rest are near 2e-07)."""


@pytest.mark.real
def test_matches_sentence_transformers_where_fp32_rounding_shows(real_model_dir, real_data_dir):
    """On the most rounding-sensitive of the first AG News test texts on this CPU, ours is far closer to
    sentence-transformers than fp32 rounding moves either: within a tenth of that text's fp32-to-fp64 gap. Ours was
    not, on an AVX2-only CPU, while fp32 took oneDNN's packed GEMM. The gap depends on the CPU's kernels (above 1e-5
    on Intel Xeon and AMD Zen 4, 5.4e-06 on Zen 5), so the text is picked on the machine, and the bound scales with
    it."""
    texts = [e.text for e in read_ag_news(real_data_dir / "ag_news" / "test.csv")[:ROUNDING_TEXTS]]
    st = ST(str(real_model_dir), device="cpu")
    st64 = copy.deepcopy(st).double()
    gaps = [np.abs(st64.encode([t]) - st.encode([t])).max() for t in texts]
    text, gap = texts[int(np.argmax(gaps))], max(gaps)
    print(f"most rounding-sensitive text: fp32 against fp64 {gap:.1e}: {text[:60]!r}")
    assert gap >= 1e-6  # fp32 rounding visibly moves this text, so a bound a tenth of it is tighter than rounding
    ours = SentenceTransformer.from_pretrained(str(real_model_dir)).encode([text])
    assert np.abs(ours - st.encode([text])).max() <= gap / 10


@pytest.mark.real
def test_default_attention_matches_sentence_transformers_on_a_rounding_sensitive_text(real_model_dir):
    """An AG News test text (one of the first 2,000, which bench/encode.py times) on which SDPA's fp32 rounding
    moved the embedding beyond 1e-5 from sentence-transformers' (1.3e-5 to 2.5e-5 on an Intel Xeon with AMX; the
    exact mode of that bench missed its bound there). The default is MPNet's stock attention, as
    sentence-transformers runs it, and stays within 1e-5."""
    text = ("Venezuela vote keeps Chavez as president CARACAS -- Venezuelans voted resoundingly to keep firebrand "
            "populist Hugo Chavez as their president in a victory that drew noisy reactions yesterday from both sides "
            "in the streets. International observers certified the results as clean and accurate.")
    reference = ST(str(real_model_dir), device="cpu").encode([text])
    ours = SentenceTransformer.from_pretrained(str(real_model_dir))
    assert ours.attention == "eager"
    assert np.abs(ours.encode([text]) - reference).max() <= 1e-5
