"""Parity with sentence-transformers on the real all-mpnet-base-v2 (marked ``real``)."""

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer as ST

from mtst import SentenceTransformer


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
    sentences = _varied_sentences()
    assert len(sentences) == 64
    reference = ST(str(real_model_dir), device="cpu").encode(sentences, batch_size=16,
                                                             normalize_embeddings=True)
    ours_model = SentenceTransformer.from_pretrained(str(real_model_dir))
    assert ours_model.pooling == "mean" and ours_model.max_seq_length == 384
    ours = ours_model.encode(sentences, batch_size=16, normalize=True)
    assert sum(ours_model.tokenize(sentences).truncated) == 16
    diff = np.abs(reference - ours).max()
    print(f"max abs diff vs sentence-transformers: {diff:.2e}")
    assert diff <= 1e-5
