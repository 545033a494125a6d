"""A bounded load test on loopback: 200 predictions, 8 at a time, against the live app (tiny model);
then one-sentence requests while maximal ones (32 texts of 50,000 characters) run, on the tiny model
and on the shipped artifact.

Prints p50 / p95 latency and requests per second, and writes them as JSON to ``$MTST_LOAD_RESULT``
when that is set (the head-of-line measurements under ``head_of_line`` and ``head_of_line_real``).
"""

import json
import os
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REQUESTS = 200
CONCURRENCY = 8
SHORT_REQUESTS = 40
SHORT_P95_LIMIT_S = 2.0
SENTENCES = [
    "Apple shares rose in New York after Tim Cook met European Union officials in Brussels.",
    "Roger Federer beat Rafael Nadal in the Wimbledon final on Sunday.",
    "NASA says the Mars rover found new evidence of ancient water.",
    "Zoë met 🤖 Müller in Zürich.",
]


def timed_post(url: str, body: dict) -> tuple[float, int, str]:
    """(seconds, HTTP status, response or error) of one JSON request."""
    body = json.dumps(body).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return time.perf_counter() - start, response.status, response.read(200).decode()
    except Exception as e:  # counted as an error below, with its reason
        return time.perf_counter() - start, getattr(e, "code", 0), repr(e)


@pytest.mark.slow
def test_predict_under_load(base_url):
    url = f"{base_url}/api/predict"
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(REQUESTS)]
    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        outcomes = list(pool.map(lambda t: timed_post(url, {"text": t}), texts))
    elapsed = time.perf_counter() - start
    errors = [(status, detail) for _, status, detail in outcomes if status != 200]
    latencies = sorted(seconds for seconds, _, _ in outcomes)
    result = {
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "errors": len(errors),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2),
        "requests_per_s": round(REQUESTS / elapsed, 1),
        "model": "tiny random MPNet (hidden 32)",
    }
    print(f"\nload: {json.dumps(result)}")
    save_result(result)
    assert not errors, errors[:5]


def save_result(update: dict) -> None:
    """Merge ``update`` into the JSON file ``$MTST_LOAD_RESULT`` names, if it does."""
    if os.environ.get("MTST_LOAD_RESULT"):
        path = Path(os.environ["MTST_LOAD_RESULT"])
        saved = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps(saved | update, indent=2) + "\n")


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


@pytest.fixture(scope="module")
def artifact_url(real_model_dir):
    """The demo app serving the shipped artifact (all-mpnet-base-v2 fine-tuned), live on loopback."""
    from test_app import ARTIFACT

    from mtst.demo.app import create_app, serve_in_background
    from mtst.predict import Predictor

    server = serve_in_background(create_app(Predictor.from_pretrained(ARTIFACT)))
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.slow
def test_short_requests_are_not_stuck_behind_maximal_ones(base_url):
    """Head-of-line blocking, tiny model: see ``short_requests_beside_maximal_ones``."""
    short_requests_beside_maximal_ones(base_url, SHORT_REQUESTS, "tiny random MPNet (hidden 32)", "head_of_line")


@pytest.mark.real
@pytest.mark.slow
def test_short_requests_are_not_stuck_behind_maximal_ones_on_the_shipped_model(artifact_url):
    """The same on all-mpnet-base-v2, where one 384-token pass takes seconds on two CPU cores."""
    short_requests_beside_maximal_ones(artifact_url, 20, "the shipped artifact (all-mpnet-base-v2)",
                                       "head_of_line_real")


def short_requests_beside_maximal_ones(base_url: str, short_requests: int, model: str, key: str) -> None:
    """While maximal requests (32 texts of 50,000 characters, predict and embed) run back to back,
    one-sentence requests keep a p95 latency under 2 s."""
    maximal = {"texts": [("word " * 10_000)[:50_000]] * 32}
    stop, long_outcomes = threading.Event(), []

    def maximal_requests():
        for i in range(1_000):
            if stop.is_set():
                break
            long_outcomes.append(timed_post(f"{base_url}/api/{'embed' if i % 2 else 'predict'}", maximal))

    background = threading.Thread(target=maximal_requests)
    background.start()
    time.sleep(1.0)  # the first maximal request is under way
    short = []
    for i in range(short_requests):
        short.append(timed_post(f"{base_url}/api/predict", {"text": SENTENCES[i % len(SENTENCES)]}))
        time.sleep(0.05)
    stop.set()
    background.join()
    errors = [(status, detail) for _, status, detail in short + long_outcomes if status != 200]
    short_seconds = [seconds for seconds, _, _ in short]
    result = {key: {
        "short_requests": short_requests, "maximal_requests": len(long_outcomes), "errors": len(errors),
        "short_p50_ms": round(1000 * statistics.median(short_seconds), 2),
        "short_p95_ms": round(1000 * p95(short_seconds), 2),
        "maximal_p50_ms": round(1000 * statistics.median(s for s, _, _ in long_outcomes), 2),
        "model": model,
    }}
    print(f"\nhead of line: {json.dumps(result)}")
    save_result(result)
    assert not errors, errors[:3]
    assert len(long_outcomes) >= 1 and p95(short_seconds) < SHORT_P95_LIMIT_S, result


@pytest.mark.slow
def test_concurrent_long_and_short_requests(base_url):
    """Truncated predictions interleaved with embeddings: the tokenizer's state must not leak."""
    long_text = "word " * 2_000  # far past max_seq_length: only correct if truncation holds
    jobs = [("/api/predict", {"text": long_text}) if i % 2 else ("/api/embed", {"texts": ["short", "text"]})
            for i in range(300)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        outcomes = list(pool.map(lambda job: timed_post(base_url + job[0], job[1]), jobs))
    errors = [(status, detail) for _, status, detail in outcomes if status != 200]
    assert not errors, f"{len(errors)} errors, e.g. {errors[:3]}"
