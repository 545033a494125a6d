# The mtst demo web app on CPU. Untested here (no Docker engine on these machines).
#   docker build -t mtst-demo .
#   docker run --rm -p 8000:8000 mtst-demo                                  # base model, untrained heads
#   docker run --rm -p 8000:8000 -v "$PWD/runs/best:/ckpt:ro" mtst-demo --checkpoint /ckpt
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MTST_MODEL_DIR=/opt/mtst/all-mpnet-base-v2

WORKDIR /app

# CPU-only torch first, so requirements.txt's torch==2.13.0 is already satisfied (no CUDA wheels).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY requirements.txt .
RUN pip install -r requirements.txt

# Editable install: the app's templates/ and static/ are read from the source tree.
COPY pyproject.toml ./
COPY mtst ./mtst
RUN pip install --no-deps -e .

# Fetch and verify all-mpnet-base-v2 at build time, so the container runs offline.
RUN python -m mtst.assets model

RUN useradd --create-home --uid 1000 app
USER app

EXPOSE 8000
ENTRYPOINT ["python", "-m", "mtst", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD []
