"""The Docker image, checked without a Docker engine: runtime-only requirements that suffice for the
demo, the shipped artifact inside, a health check, and an entry point that receives SIGTERM."""

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

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
