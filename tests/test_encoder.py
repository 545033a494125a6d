import json
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer as ST

from mtst.encoder import length_batches, pad_batch

SENTENCES = [
    "Short.",
    "A considerably longer sentence about the World Cup final in Berlin, with many more tokens.",
    "Zürich café naïve 🙂",
    "Oil prices rose on Monday.",
]


def test_embedding_does_not_depend_on_batch(tiny_encoder):
    alone = np.stack([tiny_encoder.encode([s]) [0] for s in SENTENCES])
    together = tiny_encoder.encode(SENTENCES, batch_size=4)
    assert np.abs(alone - together).max() <= 1e-6


def test_long_sentences_come_in_smaller_batches():
    # 4 rows of 100 tokens among 60 of 10: mean 15.625, so a batch of 8 holds at most 125 tokens, padding included
    lengths = [10] * 30 + [100] * 4 + [10] * 30
    batches = length_batches(lengths, batch_size=8)
    assert [b.tolist() for b in batches[:4]] == [[30], [31], [32], [33]]  # the long ones alone, longest first
    assert [len(b) for b in batches[4:]] == [8] * 7 + [4]  # then plain batches of 8 (125 // 10 > 8)
    assert sorted(np.concatenate(batches).tolist()) == list(range(64))  # every row once
    equal = length_batches([7] * 20, batch_size=8)  # equal lengths: plain batches
    assert [b.tolist() for b in equal] == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
    assert length_batches([], batch_size=8) == []


def test_encode_batches_by_length(tiny_encoder):
    texts = ["word " * 60] * 2 + ["Oil prices rose."] * 30
    shapes = []
    hook = tiny_encoder.backbone.register_forward_hook(lambda m, args, kwargs, out: shapes.append(
        tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        tiny_encoder.encode(texts, batch_size=8)
    finally:
        hook.remove()
    lengths = [len(ids) for ids in tiny_encoder.tokenize(texts).input_ids]
    assert [len(b) for b in length_batches(lengths, 8)] == [1, 1, 8, 8, 8, 6]
    assert [rows for rows, _ in shapes] == [1, 1, 8, 8, 8, 6] and shapes[0][1] == max(lengths)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_padding_does_not_change_forward(tiny_encoder, pooling):
    tiny_encoder.pooling = pooling
    try:
        tokens = tiny_encoder.tokenize(SENTENCES[:2])
        short = torch.tensor([tokens.input_ids[0]])
        padded = torch.full((1, len(tokens.input_ids[1])), tiny_encoder.tokenizer.pad_token_id)
        padded[0, : short.shape[1]] = short
        mask = (torch.arange(padded.shape[1]) < short.shape[1]).long()[None]
        with torch.no_grad():
            a = tiny_encoder(short, torch.ones_like(short))["sentence_embedding"]
            b = tiny_encoder(padded, mask)["sentence_embedding"]
        assert (a - b).abs().max() <= 1e-6
    finally:
        tiny_encoder.pooling = "mean"


def test_encode_keeps_input_order_and_shapes(tiny_encoder):
    emb = tiny_encoder.encode(SENTENCES, batch_size=2)
    assert emb.shape == (4, 32) and emb.dtype == np.float32
    rev = tiny_encoder.encode(SENTENCES[::-1], batch_size=3)
    assert np.abs(rev[::-1] - emb).max() <= 1e-6
    assert tiny_encoder.encode("one").shape == (32,)
    assert isinstance(tiny_encoder.encode(["x"], convert_to="tensor"), torch.Tensor)
    assert isinstance(tiny_encoder.encode(["x"], convert_to="list")[0], list)


def test_normalize(tiny_encoder):
    emb = tiny_encoder.encode(SENTENCES, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_truncation_is_reported(tiny_encoder):
    tokens = tiny_encoder.tokenize(["word " * 1000, "short"])
    assert tokens.truncated == [True, False]
    assert len(tokens.input_ids[0]) == tiny_encoder.max_seq_length
    assert tokens.input_ids[0][-1] == tiny_encoder.tokenizer.sep_token_id
    assert tokens.full_lengths[0] == 1002


def test_matches_sentence_transformers_tiny(tiny_model_dir, tiny_encoder):
    reference = ST(str(tiny_model_dir), device="cpu").encode(SENTENCES, batch_size=3,
                                                              normalize_embeddings=True)
    ours = tiny_encoder.encode(SENTENCES, normalize=True)
    assert np.abs(reference - ours).max() <= 1e-6


def test_string_instead_of_list_is_an_error(tiny_encoder):
    with pytest.raises(TypeError, match="list of strings"):
        tiny_encoder.tokenize("not a list")


def test_from_pretrained_is_in_eval_mode(tiny_model_dir):
    """Like transformers and sentence-transformers: a loaded model runs without dropout."""
    from mtst import SentenceTransformer

    model = SentenceTransformer.from_pretrained(str(tiny_model_dir))
    assert not any(m.training for m in model.modules())
    tokens = model.tokenize(SENTENCES)
    input_ids, mask = pad_batch(tokens.input_ids, model.tokenizer.pad_token_id)
    with torch.no_grad():
        first = model(input_ids, mask)["token_embeddings"]
        second = model(input_ids, mask)["token_embeddings"]
    assert torch.equal(first, second)


def test_encode_leaves_every_module_in_its_mode(tiny_model_dir):
    from mtst import SentenceTransformer

    model = SentenceTransformer.from_pretrained(str(tiny_model_dir))
    for mode in (False, True):
        model.train(mode)
        model.backbone.embeddings.eval()  # a mixed state, as a partly frozen model has
        before = {name: m.training for name, m in model.named_modules()}
        model.encode(SENTENCES)
        assert {name: m.training for name, m in model.named_modules()} == before


def _with_normalize_module(folder, dest):
    """A copy of a sentence-transformers folder whose modules.json ends with a Normalize module."""
    shutil.copytree(folder, dest)
    modules = json.loads((dest / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    (dest / "modules.json").write_text(json.dumps(modules))
    (dest / "2_Normalize").mkdir()
    return dest


def test_default_normalize_follows_the_folder(tiny_model_dir, tmp_path):
    """With default arguments, encode returns what sentence-transformers returns from the same folder."""
    from mtst import SentenceTransformer

    plain = SentenceTransformer.from_pretrained(str(tiny_model_dir))
    assert plain.normalize is False
    assert np.abs(plain.encode(SENTENCES) - ST(str(tiny_model_dir), device="cpu").encode(SENTENCES)).max() <= 1e-6
    folder = _with_normalize_module(tiny_model_dir, tmp_path / "normalized")
    model = SentenceTransformer.from_pretrained(str(folder))
    assert model.normalize is True
    reference = ST(str(folder), device="cpu").encode(SENTENCES)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, rtol=1e-5)
    assert np.abs(model.encode(SENTENCES) - reference).max() <= 1e-6
    assert SentenceTransformer.from_pretrained(str(folder), normalize=False).normalize is False


def test_the_multitask_model_follows_the_folder_too(tiny_model_dir, tmp_path):
    """``ModelConfig``'s default normalisation is the folder's, as for ``SentenceTransformer``, and a
    fresh model comes in eval mode like every loaded one."""
    from mtst import ModelConfig, MultiTaskSentenceTransformer

    folder = _with_normalize_module(tiny_model_dir, tmp_path / "normalized")
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(folder)))
    assert model.encoder.normalize is True
    assert not any(m.training for m in model.modules())
    reference = ST(str(folder), device="cpu").encode(SENTENCES)
    assert np.abs(model.encoder.encode(SENTENCES) - reference).max() <= 1e-6
