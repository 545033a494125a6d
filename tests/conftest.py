"""Shared fixtures: a tiny random MPNet, the fixture data folder, and the real assets when present."""

import os
from pathlib import Path

import pytest

from mtst import assets
from mtst.assets import build_tiny_model
from mtst.config import TINY_DATA

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_DATA = TINY_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-mpnet"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from mtst import SentenceTransformer

    return SentenceTransformer.from_pretrained(str(tiny_model_dir)).eval()


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    folder = Path(os.environ.get("MTST_MODEL") or assets.default_model_dir())
    if not assets.is_verified(folder):
        pytest.skip(f"real all-mpnet-base-v2 not found at {folder} (run: make model)")
    return folder


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    folder = os.environ.get("MTST_DATA_DIR")
    if not folder or not (Path(folder) / "conll2003" / "train.txt").is_file():
        pytest.skip("real data not found: set MTST_DATA_DIR to a folder laid out like shared/data")
    return Path(folder)


@pytest.fixture(scope="module")
def base_url(tiny_model_dir):
    """The demo app (tiny model, untrained heads) served live on loopback."""
    from mtst import ModelConfig, MultiTaskSentenceTransformer
    from mtst.demo.app import create_app, serve_in_background
    from mtst.predict import Predictor

    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir)))
    server = serve_in_background(create_app(Predictor(model, trained=False)))
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
