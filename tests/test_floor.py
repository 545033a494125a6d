"""bench/floor.py: int8 fake quantisation against a hand-computed answer, a model left as it was, the fast
target's time budget, and the speed section's lines from its record."""

import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from test_bench import COMMITTED, key_paths, load_bench_module, run_bench

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # floor.py imports encode.py as its neighbour
floor = load_bench_module("floor")
summary = load_bench_module("summary")


def test_fake_int8_rounds_to_127_steps_of_the_tensor_row_or_channel_maximum():
    x = torch.tensor([[1.0, -0.45, 0.3], [0.01, 0.021, -0.04]])
    # -0.45 * 127 = -57.15 -> -57; 0.021 * 127 = 2.667 -> 3; 0.01 / (0.04 / 127) = 31.75 -> 32; 0.021 -> 66.675 -> 67
    per_tensor = torch.tensor([[1.0, -57 / 127, 38 / 127], [1 / 127, 3 / 127, -5 / 127]])
    per_row = torch.tensor([[1.0, -57 / 127, 38 / 127], [32 * 0.04 / 127, 67 * 0.04 / 127, -0.04]])
    torch.testing.assert_close(floor.fake_int8(x, "tensor"), per_tensor, rtol=0, atol=1e-7)
    torch.testing.assert_close(floor.fake_int8(x, "token"), per_row, rtol=0, atol=1e-7)
    torch.testing.assert_close(floor.fake_int8(x, "channel"), per_row, rtol=0, atol=1e-7)


def test_the_int8_schemes_leave_the_model_as_they_found_it():
    from mtst import SentenceTransformer
    from mtst.assets import build_tiny_model

    torch.manual_seed(0)
    model = SentenceTransformer.from_pretrained(str(build_tiny_model(Path(tempfile.gettempdir()) / "mtst-floor-tiny")))
    texts = ["Oil prices rose sharply on Monday.", "Nadal wins in Paris.", "A third, longer sentence about markets."]
    before = model.encode(texts)
    cosines = floor.int8_cosines(model, texts, before, batch_size=2)
    assert model.encode(texts).tolist() == before.tolist()
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert cosines["per-tensor"]["max_abs_diff"] > 0  # the quantisation did move the embeddings while it was on
    assert cosines["per-token, feed-forward kept"]["linears_quantised"] < cosines["per-token"]["linears_quantised"]


def test_the_budget_is_the_texts_at_the_targets_speed():
    record = {"targets": {"best_st_backend": "st-openvino-int8", "best_st_sentences_per_s": 100.0},
              "environment": {"cpu": "CPU A"}}
    b = floor.budget(record, linear_seconds=2.5, n=300, cpu="CPU A")
    assert b["seconds"] == pytest.approx(2.0) and b["linear_share_of_budget"] == pytest.approx(1.25)  # 300 / 150
    assert b["same_cpu"] and not floor.budget(record, 2.5, 300, "CPU B")["same_cpu"]


def test_the_speed_section_reads_the_floor_record():
    record = {"settings": {"n": 300, "batch_size": 32}, "environment": {"cpu": "CPU A"},
              "thresholds": {"fast_vs_best_st": 1.5, "fast_min_cosine": 0.999},
              "gemm": {"mode": "bf16-autocast", "linear_seconds": 2.5, "profiled_seconds": 4.0, "linear_share": 0.625},
              "budget": {"best_st_backend": "st-openvino-int8", "best_st_sentences_per_s": 100.0, "seconds": 2.0,
                         "linear_share_of_budget": 1.25, "same_cpu": True},
              "int8_gemm": {"repeats": 20, "speedup_vs_bf16": 1.9},
              "int8": {"per-token": {"min_cosine": 0.98742, "linears_quantised": 72}}}
    first, second = summary.floor_markdown(record)
    assert "take 2.50 s of 4.00 s (62%)" in first and "leaves 2.00 s for these texts" in first
    assert first.endswith("the bf16 products alone take 125% of it.")
    assert "runs 1.90× the bf16 one" in second
    assert second.endswith("0.9874 (per-token, 72 linears), against the target's 0.999.")
    record["budget"]["same_cpu"] = False
    assert summary.floor_markdown(record)[0].endswith("but the encode record ran on another CPU: they do not compare.")


@pytest.mark.slow
def test_the_committed_floor_record_has_the_keys_the_code_writes(tmp_path):
    run_bench("floor.py", tmp_path, "--tiny")
    written = json.loads((tmp_path / "floor-tiny-cpu.json").read_text())
    committed = json.loads((COMMITTED / "floor-cpu.json").read_text())
    assert written["tiny"] and written["budget"] is None and not committed["tiny"]
    unknown = {k for k in key_paths(committed) - key_paths(written) if not k.startswith("budget.")}
    assert not unknown and not key_paths(written) - key_paths(committed)
