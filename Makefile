# The README's commands. `make run` and `make test` each set everything up first.
PY      := .venv/bin/python
export MTST_DATA_DIR ?= $(abspath ../shared/data)
export PYTHONUNBUFFERED := 1
PROFILE ?= auto

.PHONY: setup model run test lint demo clean

setup: .venv/.installed

.venv/.installed: requirements.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

model: setup
	$(PY) -m mtst.assets model

# The main job: re-execute every notebook end to end on the best device present.
run: model
	$(PY) -m mtst notebooks --profile $(PROFILE)

test: model
	$(PY) -m ruff check .
	$(PY) -m pytest

# The web demo on the shipped artifact (heads on top of the verified base model).
demo: model
	$(PY) -m mtst serve --checkpoint results/runs/cpu-linear-probe/artifact

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf .venv runs cache
