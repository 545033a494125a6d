"""SDPA attention (mtst.attention) against the stock eager MPNet attention."""

import copy

import pytest
import torch
from transformers import MPNetConfig, MPNetModel

from mtst import ModelConfig, SentenceTransformer
from mtst.attention import combined_mask, sdpa_enabled, use_sdpa
from mtst.encoder import pad_batch

SENTENCES = ["Oil prices rose on Monday.", "Nadal wins in Paris", "a", "Stocks fell sharply as investors "
             "weighed the central bank's latest decision on interest rates and the outlook for growth."]


def sharp_backbone(seed: int = 0) -> MPNetModel:
    """A tiny MPNet whose attention is far from uniform, so a wrong bias or mask shows."""
    torch.manual_seed(seed)
    config = MPNetConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=514)
    model = MPNetModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        model.encoder.relative_attention_bias.weight.normal_(0, 2.0)
        for layer in model.encoder.layer:
            layer.attention.attn.q.weight.mul_(8)
            layer.attention.attn.k.weight.mul_(8)
    return model


def random_batch(lengths, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(3, 120, (n,), generator=g).tolist() for n in lengths]
    return pad_batch(seqs, pad_id=1)


def states(model, input_ids, mask):
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("lengths", [(5,), (1, 7), (9, 3, 9, 1), (40, 17, 2), (130, 64)])
def test_sdpa_equals_eager_with_padding(lengths):
    model = sharp_backbone()
    input_ids, mask = random_batch(lengths)
    eager = states(model, input_ids, mask)
    assert use_sdpa(model) == 2 and sdpa_enabled(model)
    sdpa = states(model, input_ids, mask)
    assert torch.allclose(sdpa, eager, atol=1e-5, rtol=0)
    # Each row equals the row encoded alone: the padding is masked, not attended.
    for b, n in enumerate(lengths):
        alone = states(model, input_ids[b:b + 1, :n], mask[b:b + 1, :n])
        assert torch.allclose(sdpa[b, :n], alone[0], atol=1e-5, rtol=0)


def test_the_bias_matters():
    """Guard for the test above: dropping the relative-position bias changes the output a lot."""
    model = sharp_backbone()
    input_ids, mask = random_batch((9, 4))
    eager = states(model, input_ids, mask)
    with torch.no_grad():
        model.encoder.relative_attention_bias.weight.zero_()
    assert (states(model, input_ids, mask) - eager).abs().max() > 1e-2


def test_combined_mask_shapes():
    model = sharp_backbone()
    hidden = torch.zeros(3, 6, 32)
    assert combined_mask(model.encoder, hidden, None).shape == (1, 4, 6, 6)
    padding = torch.zeros(3, 1, 6, 6)
    padding[1, ..., 4:] = torch.finfo(torch.float32).min
    mask = combined_mask(model.encoder, hidden, padding)
    assert mask.shape == (3, 4, 6, 6) and mask.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert combined_mask(model.encoder, hidden, padding).dtype == torch.bfloat16


def test_switch_off_restores_stock_code():
    model = sharp_backbone()
    input_ids, mask = random_batch((8, 3))
    eager = states(model, input_ids, mask)
    use_sdpa(model)
    use_sdpa(model, False)
    assert not sdpa_enabled(model)
    assert torch.equal(states(model, input_ids, mask), eager)
    assert use_sdpa(torch.nn.Linear(2, 2)) == 0


def test_gradients_match_eager():
    model = sharp_backbone().train()
    for m in model.modules():  # dropout off, so both paths compute the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    input_ids, mask = random_batch((7, 2, 5))

    def grads(enabled):
        use_sdpa(model, enabled)
        model.zero_grad()
        model(input_ids=input_ids, attention_mask=mask).last_hidden_state.pow(2).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    eager, sdpa = grads(False), grads(True)
    assert eager.keys() == sdpa.keys() and "encoder.relative_attention_bias.weight" in sdpa
    for name in eager:
        assert torch.allclose(sdpa[name], eager[name], atol=1e-4, rtol=1e-4), name


def test_dropout_is_applied_in_training():
    model = sharp_backbone().train()
    use_sdpa(model)
    input_ids, mask = random_batch((6, 4))
    torch.manual_seed(0)
    a = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    torch.manual_seed(1)
    b = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(a, b)


def test_output_attentions_falls_back_to_eager():
    model = sharp_backbone()
    input_ids, mask = random_batch((5, 2))
    eager = model(input_ids=input_ids, attention_mask=mask, output_attentions=True)
    use_sdpa(model)
    sdpa = model(input_ids=input_ids, attention_mask=mask, output_attentions=True)
    assert len(sdpa.attentions) == 2 and torch.allclose(sdpa.attentions[0], eager.attentions[0])
    assert torch.allclose(sdpa.last_hidden_state, eager.last_hidden_state, atol=1e-5)


def test_patched_model_copies_and_pickles():
    import pickle

    model = sharp_backbone()
    use_sdpa(model)
    input_ids, mask = random_batch((4, 2))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert sdpa_enabled(clone)
        assert torch.equal(states(clone, input_ids, mask), states(model, input_ids, mask))


def test_under_peft_lora():
    from peft import LoraConfig, get_peft_model

    model = sharp_backbone()
    input_ids, mask = random_batch((6, 3))
    wrapped = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q", "k", "v", "o"]))
    eager = states(wrapped, input_ids, mask)
    assert use_sdpa(wrapped) == 2
    assert torch.allclose(states(wrapped, input_ids, mask), eager, atol=1e-5, rtol=0)


def test_encoder_switch(tiny_model_dir):
    """Eager by default (what sentence-transformers runs); SDPA on request."""
    sdpa = SentenceTransformer.from_pretrained(str(tiny_model_dir), attention="sdpa").eval()
    eager = SentenceTransformer.from_pretrained(str(tiny_model_dir)).eval()
    assert sdpa.attention == "sdpa" and sdpa_enabled(sdpa.backbone)
    assert eager.attention == "eager" and not sdpa_enabled(eager.backbone)
    a, b = sdpa.encode(SENTENCES, batch_size=2), eager.encode(SENTENCES, batch_size=2)
    assert abs(a - b).max() <= 1e-5
    with pytest.raises(ValueError, match="attention"):
        SentenceTransformer(eager.backbone, eager.tokenizer, attention="flash")


def test_model_config_attention(tiny_model_dir):
    from mtst.model import MultiTaskSentenceTransformer

    assert ModelConfig().attention == "sdpa"
    with pytest.raises(ValueError, match="attention"):
        ModelConfig(attention="flash")
    for attention in ("sdpa", "eager"):
        model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir),
                                                                     attention=attention))
        assert sdpa_enabled(model.encoder.backbone) == (attention == "sdpa")


@pytest.mark.real
def test_sdpa_equals_eager_on_the_real_model(real_model_dir):
    sdpa = SentenceTransformer.from_pretrained(str(real_model_dir), attention="sdpa").eval()
    eager = SentenceTransformer.from_pretrained(str(real_model_dir), attention="eager").eval()
    a, b = sdpa.encode(SENTENCES, batch_size=4), eager.encode(SENTENCES, batch_size=4)
    assert abs(a - b).max() <= 1e-5


def test_packed_linear_matches_linear():
    from mtst import attention
    from mtst.attention import PackedLinear, packed_linears

    if not attention.packed_bf16_available():
        pytest.skip("oneDNN cannot pack bf16 on this CPU (test_packed_linear_takes_the_stock_bf16_path covers it)")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.GELU(), torch.nn.Linear(96, 16, bias=False))
    x = torch.randn(3, 7, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x)
        with packed_linears(model):
            assert type(model[0]) is PackedLinear
            half = model(x)
            assert model[0] in attention._PACKED  # the packed path ran
            assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), expected.float(), atol=0.02)
            model[0].weight.mul_(2)  # a changed weight is packed again
            # (not through autocast: it caches its bf16 copy of the weight for the whole block)
            stock = torch.nn.functional.linear(x.bfloat16(), model[0].weight.bfloat16(), model[0].bias.bfloat16())
            assert torch.allclose(model[0](x).float(), stock.float(), atol=0.02)
    assert type(model[0]) is torch.nn.Linear and type(model[2]) is torch.nn.Linear
    with packed_linears(model):  # with autograd on it is the stock layer
        model(x).sum().backward()
    assert model[0].weight.grad is not None
    copy.deepcopy(model)


def test_packed_linear_takes_the_stock_bf16_path_where_onednn_cannot_pack_bf16(monkeypatch):
    """On an AVX2-only CPU (AMD EPYC family 23, seen here) oneDNN refuses to pack a bf16 weight: bf16 autocast
    through the packed linears must still run, as the stock layer does."""
    from mtst import attention

    if not attention.packed_linear_available():
        pytest.skip("this torch has no oneDNN")

    def reorder(weight, *args):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx512bw")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", reorder)
    monkeypatch.setattr(attention, "packed_bf16_available", lambda: False)
    torch.manual_seed(0)
    model, x = torch.nn.Linear(48, 96), torch.randn(3, 7, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        stock = model(x)
        with attention.packed_linears(model):
            assert type(model) is attention.PackedLinear
            assert torch.equal(model(x), stock)


def test_fp32_takes_the_stock_gemm():
    """fp32 multiplies as the stock layer does, bit for bit, and nothing is packed: oneDNN's packed fp32 GEMM
    moved rounding-sensitive texts beyond the exact mode's 1e-5 from sentence-transformers (tests/test_real.py),
    on AVX2-only AMD EPYCs and on an Intel Xeon with AMX."""
    from mtst import attention

    torch.manual_seed(0)
    model, x = torch.nn.Linear(768, 3072), torch.randn(4, 57, 768)
    with torch.no_grad():
        stock = model(x)
        with attention.packed_linears(model):
            assert type(model) is attention.PackedLinear
            assert torch.equal(model(x), stock)
    assert model not in attention._PACKED


def test_encode_uses_packed_linears_without_changing_results(tiny_model_dir):
    model = SentenceTransformer.from_pretrained(str(tiny_model_dir)).eval()
    batched = model.encode(SENTENCES, batch_size=4)
    with torch.no_grad():
        for i, sentence in enumerate(SENTENCES):  # the plain forward, one sentence at a time
            ids = torch.tensor([model.tokenize([sentence]).input_ids[0]])
            alone = model(ids, torch.ones_like(ids))["sentence_embedding"][0]
            assert torch.allclose(torch.from_numpy(batched[i]), alone, atol=1e-5)
    assert all(type(m) is torch.nn.Linear for m in model.modules() if isinstance(m, torch.nn.Linear))
