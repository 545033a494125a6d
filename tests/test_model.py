import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer as ST

from mtst import ModelConfig, MultiTaskSentenceTransformer
from mtst.data import COARSE_LABELS, CONLL_LABELS
from mtst.model import DELTA_FILE


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
    assert model.heads["ner"].out.out_features == 5


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


def test_artifact_of_a_frozen_encoder_is_the_heads_alone(tiny_model_dir, tmp_path):
    from mtst.assets import sha256_file

    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir))).eval()
    torch.nn.init.normal_(model.heads["ner"].out.weight)
    model.save_artifact(tmp_path / "art", base_model=str(tiny_model_dir),
                        base_sha256=sha256_file(tiny_model_dir / "model.safetensors"))
    assert not (tmp_path / "art" / "model.safetensors").exists()
    assert not (tmp_path / "art" / DELTA_FILE).exists()
    loaded = MultiTaskSentenceTransformer.from_pretrained(tmp_path / "art")
    assert not loaded.training
    ids, mask = _batch(model, ["Acme Corp opened in London ."])
    with torch.no_grad():
        assert torch.equal(model(ids, mask)["ner"], loaded(ids, mask)["ner"])


def test_artifact_carries_the_changed_layers_as_a_delta(tiny_model_dir, tmp_path):
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir),
                                                                 ner_shape_dim=4)).eval()
    changed = model.encoder.backbone.encoder.layer[1].output.dense.weight
    with torch.no_grad():
        changed.add_(0.05 * torch.randn_like(changed))
    model.save_artifact(tmp_path / "art", base_model=str(tiny_model_dir), base_sha256=None)
    delta = load_file(str(tmp_path / "art" / DELTA_FILE))
    assert list(delta) == ["encoder.layer.1.output.dense.weight"]  # only what changed travels
    loaded = MultiTaskSentenceTransformer.from_pretrained(tmp_path / "art")
    assert (loaded.encoder.backbone.encoder.layer[1].output.dense.weight - changed).abs().max() < 1e-4
    ids, mask = _batch(model, ["Acme Corp opened in London ."])
    shapes = torch.zeros_like(ids)
    with torch.no_grad():
        a, b = model(ids, mask, shape_ids=shapes), loaded(ids, mask, shape_ids=shapes)
    assert (a["ner"] - b["ner"]).abs().max() < 1e-3 and torch.equal(a["ner"].argmax(-1), b["ner"].argmax(-1))
    (tmp_path / "art" / DELTA_FILE).unlink()  # e.g. a clone where the delta was not committed
    with pytest.raises(FileNotFoundError, match="changes 1 encoder tensors"):
        MultiTaskSentenceTransformer.from_pretrained(tmp_path / "art")


def test_ner_head_reads_word_shapes(tiny_model_dir):
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir),
                                                                 ner_shape_dim=4)).eval()
    ids, mask = _batch(model, ["acme corp"])
    lower, title = torch.ones_like(ids), torch.full_like(ids, 2)
    with torch.no_grad():
        assert not torch.equal(model(ids, mask, shape_ids=lower)["ner"], model(ids, mask, shape_ids=title)["ner"])
    with pytest.raises(ValueError, match="shape_ids"):
        model(ids, mask)


def test_artifact_refuses_a_different_base(tiny_model_dir, tmp_path):
    from mtst.assets import AssetError

    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir)))
    model.save_artifact(tmp_path / "art", base_model=str(tiny_model_dir), base_sha256="0" * 64)
    with pytest.raises(AssetError, match="sha256 mismatch"):
        MultiTaskSentenceTransformer.from_pretrained(tmp_path / "art")
