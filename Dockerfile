# The mtst demo web app on CPU, serving the shipped artifact (trained heads on the verified base model).
#   docker build -t mtst-demo .
#   docker run --rm -p 8000:8000 mtst-demo
#   docker build --build-arg ARTIFACT=runs/<run>/best -t mtst-demo .   # another saved model folder
# `docker stop` stops it cleanly (SIGTERM); `docker ps` shows its health (GET /healthz).
# BASE: any Debian-based image with Python 3.11 and pip (a machine that cannot pull from Docker Hub can
# pass a locally built one, e.g. a debootstrapped bookworm; see README "Docker").
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG ARTIFACT=results/runs/cpu-s42/artifact

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MTST_MODEL_DIR=/opt/mtst/all-mpnet-base-v2

WORKDIR /app

# CPU-only torch first, so torch==2.13.0 below is already satisfied (no CUDA wheels). Only what the
# demo needs: requirements.txt adds the training, notebook and test tools.
# TORCH_SOURCE: where pip finds the CPU wheel (default PyTorch's CPU index).
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"
# pip >= 23.1 builds seqeval 1.2.2 (an sdist with setup_requires, no pyproject.toml) in an isolated
# PEP 517 env that installs setuptools_scm with its dependencies. With older pip (Debian bookworm's 23.0)
# the setuptools that torch pulls in fetches setuptools_scm 10 as a bare egg, without vcs_versioning, and
# the build fails. Already satisfied on python:3.11-slim, so no download there.
RUN pip install "pip>=23.1"
RUN pip install torch==2.13.0 ${TORCH_SOURCE}
COPY requirements-runtime.txt .
RUN pip install -r requirements-runtime.txt

COPY pyproject.toml ./
COPY mtst ./mtst
RUN pip install --no-deps .

# Fetch and verify all-mpnet-base-v2 at build time, so the container runs offline.
COPY scripts/fetch.py ./scripts/
RUN python scripts/fetch.py model
COPY ${ARTIFACT} /opt/mtst/artifact

RUN useradd --create-home --uid 1000 app
USER app
ENV HF_HUB_OFFLINE=1

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Exec form: python is PID 1 and receives SIGTERM itself; `mtst serve` then stops cleanly.
ENTRYPOINT ["python", "-m", "mtst", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--checkpoint", "/opt/mtst/artifact"]
