"""Bad inputs give one clear line naming the file and what to do, not a traceback."""

import os
import subprocess
import sys

import pytest
import torch

from mtst.assets import AssetError, resolve_model
from mtst.checkpoint import CheckpointError, load_state, save_state_atomic
from mtst.data import DataFormatError, read_ag_news, read_conll


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_training_state_names_the_file(tmp_path, damage):
    path = tmp_path / "last.pt"
    save_state_atomic({"step": 3, "weights": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path}: .*(damaged|truncated).*--resume"):
        load_state(path)


def test_training_state_loads(tmp_path):
    save_state_atomic({"step": 3}, tmp_path / "last.pt")
    assert load_state(tmp_path / "last.pt") == {"step": 3}


def test_non_utf8_conll_names_file_and_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\nM\xfcller NNP B-NP I-PER\n")
    with pytest.raises(DataFormatError, match=f"{path}:5: .*UTF-8"):
        read_conll(path)


def test_non_utf8_ag_news_names_file_and_line(tmp_path):
    path = tmp_path / "test.csv"
    path.write_bytes(b'"1","ok","multi\nline"\n"2","Caf\xe9","fine"\n')
    with pytest.raises(DataFormatError, match=f"{path}:3: .*UTF-8"):
        read_ag_news(path)


def test_crlf_and_utf8_still_read(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes("Zürich NNP B-NP B-LOC\r\nrose VBD B-VP O\r\n\r\n".encode())
    [sentence] = read_conll(path)
    assert sentence.tokens == ("Zürich", "rose") and sentence.tags == ("B-LOC", "O")


def test_missing_model_folder_is_named(tmp_path):
    for spec in (str(tmp_path / "nope"), "./no/such/model", "~/no-such-model-folder"):
        with pytest.raises(AssetError, match="no such folder"):
            resolve_model(spec)


def test_model_folder_without_model_files(tmp_path):
    with pytest.raises(AssetError, match=f"{tmp_path}.*no model files"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AssetError, match="no model files"):
        resolve_model(str(tmp_path))


def test_hub_ids_pass_through(monkeypatch):
    monkeypatch.delenv("MTST_MODEL", raising=False)
    assert resolve_model("someone/some-model") == "someone/some-model"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mtst", *args], capture_output=True, text=True, timeout=600,
                          env=env)


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_cli_bad_model_folder_is_one_line(tmp_path, folder):
    path = tmp_path / folder
    if folder == "empty":
        path.mkdir()
    done = run_cli("encode", "--model", str(path), "hello")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [x for x in done.stderr.splitlines() if "error" in x]
    assert str(path) in line


def test_cli_non_utf8_data_is_one_line(tmp_path):
    data = tmp_path / "data"
    (data / "ag_news").mkdir(parents=True)
    (data / "conll2003").mkdir()
    (data / "ag_news" / "train.csv").write_bytes(b'"1","ok","\xff"\n')
    done = run_cli("train", "--profile", "smoke", "--set", f"data.data_dir={data}",
                   "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{data / 'ag_news' / 'train.csv'}:1:" in done.stderr.splitlines()[-1]


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(AssetError, match="not a folder"):
        resolve_model(str(tmp_path / "model.safetensors"))


def test_cli_resume_from_truncated_state_is_one_line(tmp_path):
    last = tmp_path / "runs" / "smoke" / "last.pt"
    save_state_atomic({"step": 3, "weights": torch.zeros(1000)}, last)
    last.write_bytes(last.read_bytes()[:100])
    done = run_cli("train", "--profile", "smoke", "--resume", "--runs-dir", str(tmp_path / "runs"),
                   "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"mtst train: error: {last}: ")
