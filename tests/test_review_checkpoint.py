"""``save_model_atomic``: leftovers of a crashed save, ``best/`` always present, ordinary permissions."""

import os

import pytest
from safetensors.torch import load_file

from mtst import checkpoint
from mtst.checkpoint import save_model_atomic
from mtst.config import ModelConfig
from mtst.model import MultiTaskSentenceTransformer


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir)))


@pytest.fixture(params=["exchange", "fallback"])
def swap(request, monkeypatch):
    """Both ways of putting the new folder in place: the atomic exchange (Linux) and two renames."""
    if request.param == "fallback":
        monkeypatch.setattr(checkpoint, "_exchange", lambda a, b: False)
    return request.param


def heads_of(folder):
    return load_file(str(folder / "heads.safetensors"))["cls.1.bias"]


def test_stale_leftovers_do_not_break_the_next_save(model, tmp_path, swap):
    best = tmp_path / "best"
    save_model_atomic(model, best)
    for stale in (".best.old", ".best.k2j3h4x1"):  # what a save killed half-way leaves behind
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "config.json").write_text("{}")
    save_model_atomic(model, best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert (best / "heads.safetensors").is_file()


def test_best_never_goes_missing(model, tmp_path, monkeypatch):
    """Every rename the save does leaves a complete ``best/`` in place."""
    best = tmp_path / "best"
    save_model_atomic(model, best)
    seen = []
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def spy(src, dst, *args, real=real, **kwargs):
            real(src, dst, *args, **kwargs)
            seen.append((best / "heads.safetensors").is_file())

        monkeypatch.setattr(os, name, spy)
    bias = model.heads["cls"][1].bias
    old = bias.detach().clone()
    bias.data += 1
    try:
        save_model_atomic(model, best)
    finally:
        bias.data.copy_(old)
    assert all(seen), seen
    assert (heads_of(best) == old + 1).all()


def test_best_has_ordinary_permissions(model, tmp_path, swap):
    umask = os.umask(0o022)
    try:
        save_model_atomic(model, tmp_path / "best")
        save_model_atomic(model, tmp_path / "best")
    finally:
        os.umask(umask)
    assert (tmp_path / "best").stat().st_mode & 0o777 == 0o755
