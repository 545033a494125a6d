"""scripts/examples.py: the writeup's real test examples are what the shipped artifact predicts for the
first official test rows, and their tables mark every miss."""

import importlib.util
import json
from pathlib import Path

from pytest import approx

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("examples", ROOT / "scripts" / "examples.py")
examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(examples)
COMMITTED = ROOT / "results" / "examples.json"


def test_the_tables_mark_misses_and_keep_cells_whole():
    record = {"artifact": "a", "ag_news": [{"text": "Oil | gas " + "x" * 200, "gold": "Business", "predicted": "World",
                                           "probability": 0.51234}],
              "conll": [{"text": "Nadim Ladki", "gold": [["Nadim Ladki", "PER"]], "predicted": []}]}
    text = examples.markdown(record)
    assert "| Business | World ✗ | 0.512 | Oil \\| gas " + "x" * 100 + " |" in text
    assert "| Nadim Ladki | Nadim Ladki (PER) | – |" in text


def test_the_committed_examples_are_what_the_shipped_artifact_predicts(real_model_dir, real_data_dir):
    committed = json.loads(COMMITTED.read_text())
    artifact = ROOT / committed["artifact"]
    fresh = examples.collect(artifact, real_data_dir, len(committed["ag_news"]), len(committed["conll"]))
    assert fresh["artifact_sha256"] == committed["artifact_sha256"] and fresh["data"] == committed["data"]
    for new, old in zip(fresh["ag_news"], committed["ag_news"], strict=True):
        assert (new["text"], new["gold"], new["predicted"]) == (old["text"], old["gold"], old["predicted"])
        assert new["probability"] == approx(old["probability"], abs=1e-4)  # fp32 on another CPU
    assert fresh["conll"] == committed["conll"]
    assert (ROOT / "results" / "examples.md").read_text() == examples.markdown(committed)
