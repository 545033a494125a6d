"""The demo's edge cases from review: invalid Unicode, chunked bodies, headers, echoed input, word
spans, head-of-line blocking, health check and SIGTERM (tiny model)."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import torch

from mtst.config import ModelConfig
from mtst.demo.app import create_app, serve_in_background
from mtst.model import MultiTaskSentenceTransformer
from mtst.predict import Predictor, split_words


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir)))
    return Predictor(model, trained=False)


@pytest.fixture(scope="module")
def client(predictor):
    return create_app(predictor).test_client()


@pytest.fixture(scope="module")
def server(predictor):
    server = serve_in_background(create_app(predictor, max_request_bytes=1000))
    yield server
    server.shutdown()


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


@pytest.mark.parametrize("url", ["/api/predict", "/api/embed"])
@pytest.mark.parametrize("body, name", [('{"text": "caf\\ud800"}', "text"),
                                        ('{"texts": ["ok", "\\udc00 lone"]}', "texts[1]")])
def test_lone_surrogate_is_a_clear_400(client, url, body, name):
    message = error_of(client.post(url, data=body, content_type="application/json"), 400)
    assert message.startswith(f"{name} ") and "surrogate" in message


def test_error_messages_do_not_echo_user_input(client):
    field = "<script>alert(1)</script>"
    message = error_of(client.post("/api/predict", json={"text": "hi", field: 1}), 400)
    assert "unknown field" in message and "script" not in message
    message = error_of(client.post("/api/predict", data="{}", content_type="text/x-<b>evil</b>"), 415)
    assert "application/json" in message and "evil" not in message
    message = error_of(client.post("/api/predict", data=b'{"text": "\xff\xfe"}', content_type="application/json"),
                       400)
    assert "UTF-8" in message and "0xff" not in message


def chunked_post(port: int, body: bytes) -> tuple[int, dict, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("POST", "/api/predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for start in range(0, len(body), 256):
        piece = body[start:start + 256]
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    result = response.status, dict(response.getheaders()), response.read().decode()
    connection.close()
    return result


def test_chunked_body_over_the_limit_is_413(server):
    status, _, body = chunked_post(server.server_port, json.dumps({"text": "x" * 5000}).encode())
    assert status == 413, body
    assert "1000 bytes" in json.loads(body)["error"]
    status, _, body = chunked_post(server.server_port, json.dumps({"text": "small"}).encode())
    assert status == 200, body


def test_server_header_does_not_disclose_versions(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/health") as response:
        header = response.headers.get("Server", "")
    assert "Werkzeug" not in header and "Python" not in header and not any(c.isdigit() for c in header)


def test_healthz(client, predictor):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok", "trained": False}


# --- words and entity spans ------------------------------------------------------------------------

def test_split_words_on_whitespace_and_edge_punctuation():
    text = " Jose\u0301 met AL-AIN's coach (U.S.) in Zürich, \"today\"."
    words = [text[s:e] for s, e in split_words(text)]
    assert words == ["Jose\u0301", "met", "AL-AIN's", "coach", "(", "U.S.", ")", "in", "Zürich", ",", '"', "today",
                     '"', "."]


@pytest.fixture
def every_word_b_per(predictor):
    """The predictor with an NER head that tags every word B-PER: each word becomes one entity."""
    model = predictor.model
    linear = [m for m in model.heads["ner"].modules() if isinstance(m, torch.nn.Linear)][-1]
    saved = linear.weight.detach().clone(), linear.bias.detach().clone()
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(-10)
        linear.bias[model.ner_labels.index("B-PER")] = 10
    yield predictor
    with torch.no_grad():
        linear.weight.copy_(saved[0])
        linear.bias.copy_(saved[1])


def test_entities_are_whole_words(every_word_b_per):
    text = "Jose\u0301 Mourinho met Zoe\u0308 in AL-AIN on Monday."
    [result] = every_word_b_per.predict([text])
    assert [e["text"] for e in result["entities"]] == ["Jose\u0301", "Mourinho", "met", "Zoe\u0308", "in", "AL-AIN",
                                                       "on", "Monday", "."]
    for ent in result["entities"]:
        assert text[ent["start"]:ent["end"]] == ent["text"]
    covered = "".join(text[t["start"]:t["end"]] for t in result["tokens"] if not t["special"])
    assert covered.replace("\u0301", "").replace("\u0308", "") == text.replace(" ", "").replace("\u0301", "").replace(
        "\u0308", "")


# --- head-of-line blocking -------------------------------------------------------------------------

def test_a_long_request_lets_a_short_one_through(predictor, monkeypatch):
    """While a maximal request runs, a one-sentence request waits for one forward pass at most, not
    the whole request: passes are bounded by a token budget and the model is granted in arrival order.
    """
    passes = []  # (rows, width) of each forward pass
    real_forward = predictor._forward

    def forward(input_ids, *args, **kwargs):
        passes.append(tuple(input_ids.shape))
        if len(passes) == 1:
            short.start()  # arrives while the long request holds the model
            time.sleep(0.5)
        return real_forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(predictor, "_forward", forward)
    short = threading.Thread(target=predictor.predict, args=(["A short one."],))
    predictor.predict(["word " * 2_000] * 32)
    short.join()
    assert len(passes) > 2 and passes[1][1] < 10, passes  # the short one ran right after the first pass
    assert all(rows * width <= predictor.chunk_tokens for rows, width in passes)


def test_a_long_pass_gives_the_model_back_between_layers(tiny_model_dir):
    """A pass over many tokens takes several turns of a few layers each (the model is free for a
    short request in between), and gives the same predictions and embeddings as one whole pass."""
    model = MultiTaskSentenceTransformer.from_config(ModelConfig(model_name=str(tiny_model_dir)))
    whole = Predictor(model, trained=False, turn_token_layers=10**9)
    layered = Predictor(model, trained=False, turn_token_layers=100)
    turns = []
    real_turn = layered._turn
    layered._turn = lambda: (turns.append(1), real_turn())[1]
    texts = ["Acme Corp opened an office in London . " * 20, "Rain in Paris ."]
    a, b = whole.predict(texts), layered.predict(texts)
    layers = model.encoder.backbone.config.num_hidden_layers
    assert len(turns) == layers + 1  # the long text: one layer a turn; the short one: one turn in all
    for x, y in zip(a, b):
        assert x["entities"] == y["entities"] and x["topic"] == y["topic"]
        assert all(abs(x["probabilities"][k] - y["probabilities"][k]) < 1e-6 for k in x["probabilities"])
    turns.clear()
    assert torch.allclose(torch.tensor(whole.embed(texts)), torch.tensor(layered.embed(texts)), atol=1e-6)
    assert len(turns) == layers + 1


# --- the server process ----------------------------------------------------------------------------

def test_sigterm_stops_the_server_cleanly(tiny_model_dir, tmp_path):
    env = {**os.environ, "MTST_MODEL": str(tiny_model_dir), "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "mtst", "serve", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300  # loading is slow on a busy machine
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the server did not start"
                time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        # (the interpreter's own teardown can take 20 s when a training run starves this process)
        assert process.wait(timeout=120) == 0, process.stdout.read()[-2000:]
        assert "stopped" in process.stdout.read()
    finally:
        process.kill()


def test_post_without_length_or_chunks_is_an_empty_body(server):
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as connection:
        connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Connection: close\r\n\r\n")
        reply = connection.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 400") and "not valid JSON" in reply
