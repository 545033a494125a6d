"""The Docker image. Without an engine: runtime-only requirements that suffice for the demo, the shipped
artifact inside, a health check, and an entry point that receives SIGTERM. With one (``docker info``
answers): the image is built from this checkout, run, waited on until its HEALTHCHECK says healthy, asked
for predictions from the shipped artifact, and stopped with ``docker stop``; skipped with a reason when no
engine answers."""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_app import ARTIFACT

ROOT = Path(__file__).resolve().parents[1]
DEV_ONLY = ("pytest", "ruff", "playwright", "jupyter", "nbclient", "nbconvert", "ipykernel", "datasets", "pandas",
            "matplotlib", "sentence-transformers", "peft")
"""Packages for training, notebooks, benchmarks and tests; the demo imports none of them."""


def pins(path: Path) -> dict[str, str]:
    """``name -> line`` of a requirements file, following ``-r other.txt``."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r"):
            found |= pins(path.parent / line[2:].strip())
        elif line:
            found[re.split(r"[<>=!~ \[]", line)[0].lower()] = line
    return found


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_runtime_requirements_are_a_pinned_subset_without_dev_tools():
    runtime, full = pins(ROOT / "requirements-runtime.txt"), pins(ROOT / "requirements.txt")
    assert {"torch", "transformers", "flask"} <= set(runtime)
    assert not set(runtime) & set(DEV_ONLY)
    for name, line in runtime.items():
        assert full.get(name) == line, f"{line} is pinned differently in requirements.txt: {full.get(name)}"
    assert set(DEV_ONLY) - {"jupyter"} <= set(full)  # requirements.txt stays the full dev set


def test_dockerfile_installs_the_runtime_set_only():
    instructions = "\n".join(line for line in dockerfile().splitlines() if not line.lstrip().startswith("#"))
    assert re.search(r"pip install .*-r requirements-runtime\.txt", instructions)
    assert not re.search(r"\brequirements\.txt", instructions)


def test_dockerfile_ships_the_artifact():
    text = dockerfile()
    default = re.search(r"^ARG ARTIFACT=(\S+)", text, flags=re.M).group(1)
    assert ROOT / default == ARTIFACT and (ARTIFACT / "mtst_config.json").is_file()
    assert re.search(r"^COPY \$\{ARTIFACT\} (\S+)", text, flags=re.M)
    target = re.search(r"^COPY \$\{ARTIFACT\} (\S+)", text, flags=re.M).group(1)
    assert json.loads(re.search(r"^CMD (\[.*\])", text, flags=re.M).group(1)) == ["--checkpoint", target]
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    relative = ARTIFACT.relative_to(ROOT)
    for parent in [relative, *relative.parents][:-1]:
        assert not any(fnmatch.fnmatch(str(parent), pattern) for pattern in ignored), f"{parent} is ignored"


def test_dockerfile_health_check_and_signals():
    text = dockerfile()
    assert re.search(r"^HEALTHCHECK .*/healthz", text, flags=re.M | re.S)
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])", text, flags=re.M).group(1))  # exec form
    assert entrypoint[:4] == ["python", "-m", "mtst", "serve"]


BLOCKED_DEMO = """
import os, sys
for name in sys.argv[2].split(","):
    sys.modules[name] = None  # `import name` fails; transformers' availability checks say "absent"
from mtst.demo.app import create_app, load_predictor
os.environ["MTST_MODEL"] = sys.argv[1]
client = create_app(load_predictor()).test_client()
assert client.post("/api/predict", json={"text": "Oil rose in Tokyo."}).status_code == 200
assert client.post("/api/embed", json={"text": "Oil rose in Tokyo."}).status_code == 200
assert client.get("/healthz").status_code == 200
print("demo ok")
"""


def test_the_demo_runs_without_the_dev_packages(tiny_model_dir):
    modules = ",".join(name.replace("-", "_") for name in DEV_ONLY)
    done = subprocess.run([sys.executable, "-c", BLOCKED_DEMO, str(tiny_model_dir), modules], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0 and "demo ok" in done.stdout, done.stderr[-3000:]


# --- the image itself, on a Docker engine ----------------------------------------------------------

IMAGE = os.environ.get("MTST_DOCKER_IMAGE", "mtst-demo")
LOCAL_BASE = "mtst-base"
"""The image ``scripts/docker-base.sh`` builds, for machines without Docker Hub or PyTorch's index."""
LOCAL_BASE_ARGS = f"--build-arg BASE={LOCAL_BASE} --build-arg 'TORCH_SOURCE=--find-links /opt/wheels'"
NEWS = ["Federer beats Nadal in Wimbledon final Roger Federer beat Rafael Nadal in four sets on Sunday "
        "to win his fifth straight Wimbledon title.",
        "Apple shares rise on iPod sales Apple shares rose in New York on Tuesday after the company "
        "reported record profits."]
SENTENCES = ["Roger Federer beat Rafael Nadal in the Wimbledon final on Sunday.",
             "Apple shares rose in New York after Tim Cook met European Union officials in Brussels."]


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {(done.stdout + done.stderr)[-3000:]}"
    return done


@pytest.fixture(scope="module")
def engine() -> None:
    """Skips unless a Docker engine answers (CI has none unless dockerd runs there)."""
    if not shutil.which("docker"):
        pytest.skip("no docker client on PATH (apt-get install docker.io); the image was not built or run")
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("`docker info` hung; the image was not built or run")
    if info.returncode:
        pytest.skip(f"no Docker engine answers (`docker info`: {info.stderr.strip()[-200:]}); start dockerd "
                    "to build and run the image")


@pytest.fixture(scope="module")
def image(engine) -> str:
    """``docker build`` of this checkout (layer cache: seconds when nothing changed). Build arguments come
    from ``$MTST_DOCKER_BUILD_ARGS``, else, when the local base image exists, those that use it."""
    args = os.environ.get("MTST_DOCKER_BUILD_ARGS")
    if args is None:
        has_base = docker("image", "inspect", LOCAL_BASE, check=False).returncode == 0
        args = LOCAL_BASE_ARGS if has_base else ""
    done = subprocess.run(["docker", "build", *shlex.split(args), "-t", IMAGE, str(ROOT)], capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, f"docker build {args} failed:\n{(done.stdout + done.stderr)[-4000:]}"
    return IMAGE


def wait_healthy(name: str, timeout: float) -> float:
    """Seconds until Docker's own HEALTHCHECK reports ``healthy``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
        if not state["Running"]:
            pytest.fail(f"container exited ({state['ExitCode']}):\n{docker('logs', name).stderr[-3000:]}")
        health = state.get("Health", {})
        if health.get("Status") == "healthy":
            return time.monotonic() - start
        if health.get("Status") == "unhealthy":
            pytest.fail(f"HEALTHCHECK says unhealthy: {health.get('Log')}\n{docker('logs', name).stderr[-3000:]}")
        time.sleep(1)
    pytest.fail(f"not healthy after {timeout:.0f} s: {state.get('Health')}\n{docker('logs', name).stderr[-3000:]}")


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


@pytest.mark.slow
def test_the_image_serves_the_shipped_artifact_and_stops_on_sigterm(image):
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image).stdout)
    assert config["User"] == "app" and "/healthz" in " ".join(config["Healthcheck"]["Test"])
    name = f"mtst-test-{os.getpid()}"
    docker("run", "-d", "--name", name, "-p", "127.0.0.1::8000", image)
    try:
        healthy_s = wait_healthy(name, timeout=300)
        port = docker("port", name, "8000/tcp").stdout.split()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            assert json.load(response) == {"status": "ok", "trained": True}  # the artifact, not bare heads
        sports, business = post(f"{url}/api/predict", {"texts": NEWS})["results"]
        assert sports["topic"] == "Sports" and business["topic"] == "Business"
        found = {(e["text"], e["type"]) for r in post(f"{url}/api/predict", {"texts": SENTENCES})["results"]
                 for e in r["entities"]}
        assert {("Roger Federer", "PER"), ("Rafael Nadal", "PER"), ("New York", "LOC"), ("Tim Cook", "PER")} <= found

        start = time.monotonic()
        docker("stop", "--time", "10", name, timeout=30)  # SIGTERM, then SIGKILL after 10 s
        stop_s = time.monotonic() - start
        state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
        logs = docker("logs", name).stderr
        print(f"healthy after {healthy_s:.1f} s, stopped in {stop_s:.1f} s, exit {state['ExitCode']}")
        # Exit 0 and the app's last log line: its SIGTERM handler ran (SIGKILL would be exit 137).
        assert state["ExitCode"] == 0 and not state["OOMKilled"], logs[-3000:]
        assert logs.rstrip().endswith("mtst.demo.app: stopped"), logs[-3000:]
        assert stop_s < 6, f"docker stop took {stop_s:.1f} s (kill timeout 10 s)"
    finally:
        docker("rm", "-f", name, check=False)
