"""A bounded load test on loopback: 200 predictions, 8 at a time, against the live app (tiny model).

Prints p50 / p95 latency and requests per second, and writes them as JSON to ``$MTST_LOAD_RESULT``
when that is set.
"""

import json
import os
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REQUESTS = 200
CONCURRENCY = 8
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
        with urllib.request.urlopen(request, timeout=30) as response:
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
    if os.environ.get("MTST_LOAD_RESULT"):
        Path(os.environ["MTST_LOAD_RESULT"]).write_text(json.dumps(result, indent=2) + "\n")
    assert not errors, errors[:5]


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
