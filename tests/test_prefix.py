"""The cached frozen prefix: continuing from cached states equals the full forward, and a cache
can only be read back by the exact weights, tokens, depth and precision that wrote it."""

import pytest
import torch

from mtst import ModelConfig, MultiTaskSentenceTransformer
from mtst.encoder import pad_batch
from mtst.freezing import bottom_states, prefix_states

TEXTS = ["Acme Corp opened an office in London .", "Rain", "Nadal beat Federer in the final in Paris on Sunday ."]


@pytest.fixture
def model(tiny_model_dir):
    return MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir))).eval()


def _ids(model):
    return model.encoder.tokenize(TEXTS).input_ids


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("n", [0, 1, 2])
def test_forward_from_cached_states_equals_full_forward(tiny_model_dir, n, attention):
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir),
                                                                 attention=attention)).eval()
    ids, mask = pad_batch(_ids(model), model.tokenizer.pad_token_id)
    with torch.no_grad():
        full = model(ids, mask)
        states = bottom_states(model.encoder.backbone, ids, mask, n)
        part = model(ids, mask, states=states, start_layer=n)
        reference = model.encoder.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert torch.allclose(states, reference.hidden_states[n], atol=1e-6)
    for key in ("token_embeddings", "sentence_embedding", "cls", "ner"):
        assert torch.allclose(full[key], part[key], atol=1e-6), key


def test_cached_rows_come_back_padded_in_their_own_order(model, tmp_path):
    ids = _ids(model)
    cached, hit = prefix_states(model.encoder.backbone, ids, model.tokenizer.pad_token_id, 1, None, tmp_path)
    assert not hit
    rows = [2, 0]
    batch_ids, mask = pad_batch([ids[r] for r in rows], model.tokenizer.pad_token_id)
    with torch.no_grad():
        one_by_one = [bottom_states(model.encoder.backbone, torch.tensor([ids[r]]), torch.ones(1, len(ids[r]),
                                    dtype=torch.long), 1)[0] for r in rows]
    got = cached.batch(rows, batch_ids.shape[1])
    for b, expected in enumerate(one_by_one):
        assert torch.allclose(got[b, : len(expected)], expected, atol=1e-5)
        assert not got[b, len(expected):].any()


def test_a_stale_cache_is_never_read(model, tmp_path):
    backbone, pad = model.encoder.backbone, model.tokenizer.pad_token_id
    ids = _ids(model)
    first, hit = prefix_states(backbone, ids, pad, 1, None, tmp_path)
    assert not hit
    assert prefix_states(backbone, ids, pad, 1, None, tmp_path)[1]  # same inputs: read back
    assert not prefix_states(backbone, ids[:2], pad, 1, None, tmp_path)[1]  # other tokens
    assert not prefix_states(backbone, ids, pad, 2, None, tmp_path)[1]  # other depth
    assert not prefix_states(backbone, ids, pad, 1, torch.bfloat16, tmp_path)[1]  # other precision
    with torch.no_grad():
        backbone.encoder.layer[0].output.dense.weight.mul_(1.5)  # other weights in the prefix
    changed, hit = prefix_states(backbone, ids, pad, 1, None, tmp_path)
    assert not hit and not torch.equal(changed.states, first.states)
    with torch.no_grad():
        backbone.encoder.layer[1].output.dense.weight.mul_(1.5)  # a layer above the prefix: same cache
    assert prefix_states(backbone, ids, pad, 1, None, tmp_path)[1]


def test_cached_prefix_runs_in_eval_mode_and_restores_the_mode(model):
    model.train()
    ids = _ids(model)
    a, _ = prefix_states(model.encoder.backbone, ids, model.tokenizer.pad_token_id, 2)
    b, _ = prefix_states(model.encoder.backbone, ids, model.tokenizer.pad_token_id, 2)
    assert torch.equal(a.states, b.states)  # no dropout
    assert model.encoder.backbone.training


def test_depths_kept_on_the_way_up_are_what_a_run_at_that_depth_computes(model, tmp_path):
    backbone, pad, ids = model.encoder.backbone, model.tokenizer.pad_token_id, _ids(model)
    deep, hit = prefix_states(backbone, ids, pad, 2, None, tmp_path / "study", batch_size=2, keep=(0, 1))
    assert not hit
    for m in (0, 1):
        kept, hit = prefix_states(backbone, ids, pad, m, None, tmp_path / "study", batch_size=2)
        direct, _ = prefix_states(backbone, ids, pad, m, None, tmp_path / "direct", batch_size=2)
        assert hit and torch.equal(kept.states, direct.states) and torch.equal(kept.offsets, direct.offsets)
    assert torch.equal(deep.states, prefix_states(backbone, ids, pad, 2, None, tmp_path / "direct2",
                                                  batch_size=2)[0].states)
