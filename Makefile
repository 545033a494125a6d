# The README's commands. `make run` and `make test` each set everything up first.
PY      := .venv/bin/python
export MTST_DATA_DIR ?= $(abspath ../shared/data)
export PYTHONUNBUFFERED := 1
PROFILE ?= auto

SEEDS   ?= 42 43 44
SEED_PROFILE ?= cpu
SEED_GROUP ?= $(SEED_PROFILE)
SEED_SETS ?=
ARTIFACT ?= results/runs/cpu-s42/artifact
RUN_START := $(shell date +%s)

.PHONY: setup model run test lint demo seeds study examples export clean

setup: .venv/.installed

.venv/.installed: requirements.txt requirements-runtime.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

model: setup
	$(PY) scripts/fetch.py model

# The main job: re-execute every notebook end to end on the best device present.
run: model
	$(PY) -m mtst notebooks --profile $(PROFILE) --since $(RUN_START)

test: model
	$(PY) -m ruff check .
	$(PY) -m pytest

# The headline's seeds (one training run each; the cpu profile takes about an hour a seed on 2
# cores), then the summary and writeup. A finished seed is reused; an interrupted one resumes.
# Another seed group of the same profile, e.g. the comparisons on the headline's strategy:
#   make seeds SEED_GROUP=cpu-bs32 SEED_SETS="--set train.batch_size=32"
#   make seeds SEED_GROUP=cpu-temperature SEED_SETS="--set train.batch_size=32 --set train.sampling=temperature"
#   make seeds SEED_GROUP=cpu-round-robin SEED_SETS="--set train.batch_size=32 --set train.sampling=round_robin"
#   make seeds SEED_GROUP=cpu-uncertainty SEED_SETS="--set train.batch_size=32 --set train.loss_weighting=uncertainty"
seeds: model
	for s in $(SEEDS); do \
	  $(PY) -m mtst train --profile $(SEED_PROFILE) --name $(SEED_GROUP)-s$$s \
	    --record-dir results/runs/$(SEED_GROUP)-s$$s \
	    --set train.seed=$$s $(SEED_SETS) --reuse || exit 1; \
	done
	$(PY) scripts/examples.py --artifact $(ARTIFACT)
	$(PY) -m mtst report

# Real test examples through the shipped artifact (results/examples.md, shown in the writeup).
examples: model
	$(PY) scripts/examples.py --artifact $(ARTIFACT)
	$(PY) -m mtst report

# Task 3: every freezing strategy on one budget (scripts/study.py; each row's wall and CPU seconds are in the writeup).
# A finished row is kept and an interrupted one resumes, so it may span several sessions. The NER-head
# ablations and the full fine-tune run apart, outside its budget:
#   .venv/bin/python scripts/study.py --only no-casing crf layer-mix full
study: model
	$(PY) scripts/study.py
	$(PY) -m mtst report
	$(PY) scripts/study.py --report
	$(PY) -m mtst report

# The shipped artifact's encoder as a plain sentence-transformers folder (runs/st-encoder).
export: model
	$(PY) -m mtst export --checkpoint $(ARTIFACT) --out runs/st-encoder

# The web demo on the shipped artifact (the fine-tuned layers as a delta on the verified base model).
demo: model
	$(PY) -m mtst serve --checkpoint $(ARTIFACT)

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf .venv runs cache
