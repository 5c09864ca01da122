# The two commands of the README: `make demo` (set up + main job) and `make test` (set up + whole suite).
VENV := .venv
STAMP := $(VENV)/.slicewise-installed
export HF_HUB_OFFLINE := 1
export QT_API := pyqt6

.PHONY: setup demo test bench

$(STAMP): pyproject.toml training/pyproject.toml requirements/constraints.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slicewise demo

test: $(STAMP)
	$(VENV)/bin/ruff check src training tests benchmarks scripts
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/predict_latency.py
