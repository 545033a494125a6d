"""The demo app's routes and errors, through Flask's test client, on the tiny random model."""

import json
import re
from pathlib import Path

import pytest

from mtst.assets import build_tiny_model
from mtst.config import ModelConfig
from mtst.demo.app import create_app
from mtst.model import MultiTaskSentenceTransformer
from mtst.predict import Predictor

XSS = "<img src=x onerror=alert(1)>"
ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "mtst" / "demo" / "static"
TEMPLATES = ROOT / "mtst" / "demo" / "templates"
ARTIFACT = ROOT / "results" / "runs" / "cpu-s42" / "artifact"
"""The shipped artifact (``make demo``, the Docker image)."""


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    folder = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(folder)))
    return Predictor(model, trained=False)


@pytest.fixture(scope="module")
def client(predictor):
    return create_app(predictor).test_client()


def post(client, url, body):
    return client.post(url, json=body)


def assert_error(response, status, *words):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    message = response.get_json()["error"]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# --- happy paths ---------------------------------------------------------------------------------

def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "trained": False}


def test_index_page(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="predict-form"' in html and 'id="embedding-canvas"' in html
    assert "Untrained heads" in html  # the banner, since trained=False
    for asset in ("style.css", "app.js"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_index_without_banner_when_trained(predictor):
    trained = Predictor(predictor.model, trained=True)
    html = create_app(trained).test_client().get("/").get_data(as_text=True)
    assert "Untrained heads" not in html


def test_predict_single_text(client, predictor):
    text = "Apple shares rose in New York after Tim Cook met officials in Brussels."
    response = post(client, "/api/predict", {"text": text})
    assert response.status_code == 200
    [result] = response.get_json()["results"]
    assert result["topic"] in predictor.model.class_labels
    assert set(result["probabilities"]) == set(predictor.model.class_labels)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["truncated"] is False and result["trained"] is False
    assert result["tokens"][0]["special"] and result["tokens"][-1]["special"]
    for ent in result["entities"]:
        assert text[ent["start"]:ent["end"]] == ent["text"]


def test_predict_many_texts_matches_predictor(client, predictor):
    texts = ["Stocks fell.", "The Lakers won in Los Angeles on Sunday night."]
    response = post(client, "/api/predict", {"texts": texts})
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["topic"] for r in results] == [r["topic"] for r in predictor.predict(texts)]


def test_predict_unicode_and_emoji(client):
    text = "Zoë met 🤖 Müller in Zürich — 東京 next 🚀 week."
    response = post(client, "/api/predict", {"text": text})
    assert response.status_code == 200
    [result] = response.get_json()["results"]
    for ent in result["entities"]:
        assert text[ent["start"]:ent["end"]] == ent["text"]
    for tok in result["tokens"]:
        if not tok["special"]:
            assert 0 <= tok["start"] < tok["end"] <= len(text)


def test_predict_accepts_max_chars_and_reports_truncation(client):
    text = ("word " * 10_000)[:50_000]
    assert len(text) == 50_000
    response = post(client, "/api/predict", {"texts": ["short one", text]})
    assert response.status_code == 200
    short, long = response.get_json()["results"]
    assert short["truncated"] is False
    assert long["truncated"] is True


@pytest.mark.parametrize("normalize", [True, False])
def test_embed(client, predictor, normalize):
    response = post(client, "/api/embed", {"texts": ["a cat", "a dog"], "normalize": normalize})
    assert response.status_code == 200
    data = response.get_json()
    dim = predictor.model.encoder.hidden_size
    assert data["dim"] == dim and data["normalized"] is normalize
    assert [len(e) for e in data["embeddings"]] == [dim, dim]
    norms = [sum(v * v for v in e) ** 0.5 for e in data["embeddings"]]
    if normalize:
        assert norms == pytest.approx([1.0, 1.0], abs=1e-5)
    expected = predictor.embed(["a cat", "a dog"], normalize=normalize)
    for got, want in zip(data["embeddings"], expected):
        assert got == pytest.approx(want, abs=1e-6)


def test_embed_single_text_defaults_to_normalized(client):
    data = post(client, "/api/embed", {"text": "a cat 🐱"}).get_json()
    assert data["normalized"] is True and len(data["embeddings"]) == 1


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/api/predict", "/api/embed"])
def test_invalid_json(client, url):
    response = client.post(url, data='{"text": "unterminated', content_type="application/json")
    assert_error(response, 400, "not valid JSON", "line 1")


@pytest.mark.parametrize("url", ["/api/predict", "/api/embed"])
def test_wrong_content_type(client, url):
    response = client.post(url, data='{"text": "hi"}', content_type="text/plain")
    message = assert_error(response, 415, "Content-Type", "application/json")
    assert "text/plain" not in message  # what the client sent is not echoed


def test_deeply_nested_json(client):
    response = client.post("/api/predict", data="[" * 100_000, content_type="application/json")
    assert_error(response, 400, "not valid JSON")


@pytest.mark.parametrize("body, status, words", [
    ([1, 2], 400, ("JSON object", "array")),
    ({}, 400, ("missing field", "text", "texts")),
    ({"txt": "hi"}, 400, ("1 unknown field", "'text', 'texts'")),
    ({"text": "a", "texts": ["b"]}, 400, ("either", "not both")),
    ({"text": 3}, 400, ("text must be a string", "number")),
    ({"text": None}, 400, ("text must be a string", "null")),
    ({"texts": "hi"}, 400, ("texts must be a list", "string")),
    ({"texts": []}, 400, ("texts must not be empty",)),
    ({"texts": ["ok", "fine", 7]}, 400, ("texts[2] must be a string",)),
    ({"text": ""}, 400, ("text is empty",)),
    ({"texts": ["ok", " \n\t "]}, 400, ("texts[1] is empty or only whitespace",)),
    ({"texts": ["a"] * 33}, 413, ("too many texts", "33", "32")),
    ({"texts": ["ok", "x" * 50_001]}, 413, ("texts[1]", "50001", "50000")),
])
def test_bad_bodies(client, body, status, words):
    for url in ("/api/predict", "/api/embed"):
        assert_error(post(client, url, body), status, *words)


@pytest.mark.parametrize("value, kind", [("yes", "string"), (1, "number"), (None, "null")])
def test_embed_bad_normalize(client, value, kind):
    assert_error(post(client, "/api/embed", {"text": "hi", "normalize": value}), 400, "normalize", kind)


def test_normalize_is_unknown_to_predict(client):
    assert_error(post(client, "/api/predict", {"text": "hi", "normalize": True}), 400, "unknown field",
                 "'text', 'texts'")


def test_body_over_size_cap(client):
    body = json.dumps({"text": "x" * (3 * 1024 * 1024)})
    response = client.post("/api/predict", data=body, content_type="application/json")
    assert_error(response, 413, "larger than the limit", str(2 * 1024 * 1024))


def test_size_cap_is_configurable(predictor):
    small = create_app(predictor, max_texts=2, max_chars=10, max_request_bytes=200).test_client()
    assert_error(post(small, "/api/predict", {"texts": ["a", "b", "c"]}), 413, "limit is 2")
    assert_error(post(small, "/api/predict", {"text": "x" * 11}), 413, "limit is 10")
    assert_error(post(small, "/api/predict", {"text": "x" * 300}), 413, "200 bytes")


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/nope"), 404, "Not Found")
    assert_error(client.get("/api/predict"), 405, "Method Not Allowed")


def test_no_route_serves_arbitrary_paths(client):
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/../pyproject.toml"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"create_app" not in response.data


# --- security ------------------------------------------------------------------------------------

def test_security_headers(client):
    for response in (client.get("/"), client.get("/health"), post(client, "/api/predict", {"text": "hi"})):
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_xss_round_trips_as_data(client):
    response = post(client, "/api/predict", {"text": XSS})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    [result] = response.get_json()["results"]
    covered = "".join(XSS[t["start"]:t["end"]] for t in result["tokens"] if not t["special"])
    assert covered == XSS.replace(" ", "")  # the markup was tokenised as plain text
    for ent in result["entities"]:
        assert XSS[ent["start"]:ent["end"]] == ent["text"]
    error = post(client, "/api/predict", {"texts": [XSS, 5]})
    assert XSS not in error.get_data(as_text=True)  # error messages do not echo user text
    assert XSS not in client.get("/").get_data(as_text=True)


def test_page_builds_dom_without_html_strings(client):
    html = client.get("/").get_data(as_text=True)
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts, "the page loads its script"
    for attributes, body in scripts:
        assert "src=" in attributes and not body.strip(), "no inline scripts (the CSP forbids them)"
    assert not re.search(r"\son[a-z]+\s*=", html), "no inline event handlers"
    js = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, f"app.js uses {sink}"
    assert "textContent" in js
    for template in TEMPLATES.glob("*.html"):
        assert "|safe" not in template.read_text(encoding="utf-8"), f"{template.name} disables escaping"


# --- the shipped artifact on the real model ------------------------------------------------------

@pytest.mark.real
def test_shipped_artifact_predicts_sensibly(real_model_dir):
    client = create_app(Predictor.from_pretrained(ARTIFACT)).test_client()
    assert client.get("/health").get_json() == {"status": "ok", "trained": True}
    # Topics on texts shaped like AG News rows (title, then description): the data the head learned.
    # (On a lone short sentence the fine-tuned head is far less sure; the writeup says so.)
    news = ["Federer beats Nadal in Wimbledon final Roger Federer beat Rafael Nadal in four sets on Sunday "
            "to win his fifth straight Wimbledon title.",
            "Apple shares rise on iPod sales Apple shares rose in New York on Tuesday after the company "
            "reported record profits."]
    sports, business = post(client, "/api/predict", {"texts": news}).get_json()["results"]
    assert sports["topic"] == "Sports" and business["topic"] == "Business"
    texts = ["Roger Federer beat Rafael Nadal in the Wimbledon final on Sunday.",
             "Apple shares rose in New York after Tim Cook met European Union officials in Brussels."]
    found = {(e["text"], e["type"]) for r in post(client, "/api/predict", {"texts": texts}).get_json()["results"]
             for e in r["entities"]}
    assert {("Roger Federer", "PER"), ("Rafael Nadal", "PER"), ("New York", "LOC"), ("Tim Cook", "PER")} <= found
