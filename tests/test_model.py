import numpy as np
import torch
from sentence_transformers import SentenceTransformer as ST

from mtst import ModelConfig, MultiTaskSentenceTransformer
from mtst.data import COARSE_LABELS, CONLL_LABELS


def _batch(model, texts):
    from mtst.encoder import pad_batch

    return pad_batch(model.encoder.tokenize(texts).input_ids, model.tokenizer.pad_token_id)


def test_heads_and_shapes(tiny_model_dir):
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir))).eval()
    ids, mask = _batch(model, ["John lives in Paris .", "Hi"])
    out = model(ids, mask)
    assert out["cls"].shape == (2, 4)
    assert out["ner"].shape == (2, ids.shape[1], len(CONLL_LABELS))
    only_cls = model(ids, mask, tasks=("cls",))
    assert "ner" not in only_cls and torch.equal(only_cls["cls"], out["cls"])


def test_coarse_scheme_has_five_labels(tiny_model_dir):
    model = MultiTaskSentenceTransformer.from_config(
        ModelConfig(model_name=str(tiny_model_dir), ner_scheme="coarse"))
    assert model.ner_labels == COARSE_LABELS
    assert model.heads["ner"][-1].out_features == 5


def test_save_load_round_trip(tiny_model_dir, tmp_path):
    model = MultiTaskSentenceTransformer.from_config(
        ModelConfig(model_name=str(tiny_model_dir), pooling="max")).eval()
    torch.nn.init.normal_(model.heads["cls"][-1].weight)
    model.save_pretrained(tmp_path / "saved")
    loaded = MultiTaskSentenceTransformer.from_pretrained(tmp_path / "saved").eval()
    assert loaded.encoder.pooling == "max" and loaded.ner_labels == model.ner_labels
    ids, mask = _batch(model, ["Acme Corp opened in London .", "Rain"])
    with torch.no_grad():
        a, b = model(ids, mask), loaded(ids, mask)
    for key in ("sentence_embedding", "cls", "ner"):
        assert torch.equal(a[key], b[key]), key


def test_saved_encoder_loads_in_sentence_transformers(tiny_model_dir, tmp_path):
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir)))
    model.save_pretrained(tmp_path / "saved")
    texts = ["Acme Corp opened in London .", "Rain"]
    reference = ST(str(tmp_path / "saved"), device="cpu").encode(texts)
    assert np.abs(reference - model.encoder.encode(texts)).max() <= 1e-6


def test_heads_only_artifact_loads_on_top_of_its_base(tiny_model_dir, tmp_path):
    from mtst.assets import sha256_file

    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir))).eval()
    torch.nn.init.normal_(model.heads["ner"][-1].weight)
    model.save_heads(tmp_path / "art", base_model=str(tiny_model_dir),
                     base_sha256=sha256_file(tiny_model_dir / "model.safetensors"))
    assert not (tmp_path / "art" / "model.safetensors").exists()
    loaded = MultiTaskSentenceTransformer.from_pretrained(tmp_path / "art").eval()
    ids, mask = _batch(model, ["Acme Corp opened in London ."])
    with torch.no_grad():
        assert torch.equal(model(ids, mask)["ner"], loaded(ids, mask)["ner"])


def test_heads_only_artifact_refuses_a_different_base(tiny_model_dir, tmp_path):
    import pytest

    from mtst.assets import AssetError

    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir)))
    model.save_heads(tmp_path / "art", base_model=str(tiny_model_dir), base_sha256="0" * 64)
    with pytest.raises(AssetError, match="sha256 mismatch"):
        MultiTaskSentenceTransformer.from_pretrained(tmp_path / "art")
