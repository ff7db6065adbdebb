# facecascade: the two commands of the README.
#   make demo  - fresh clone -> venv -> procedural data -> dvc repro (3 levels on Ray, MLflow,
#                registry) -> metrics table -> prediction on an example image (annotated PNG)
#   make test  - fresh clone -> venv -> pytest
#   make bench - benchmark figures into bench/results/ (FACECASCADE_DATA=DIR adds a real set)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv demo test lint bench clean-outputs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/facecascade synth --out data/raw
	$(BIN)/dvc repro
	$(BIN)/facecascade show-metrics outputs/metrics.json
	$(BIN)/facecascade synth --out data/example --n 1 --seed 20261124
	$(BIN)/facecascade predict --list data/example/faces.txt --format cuhk --root data/example \
		--model models/cascade --out outputs/example/points.csv --draw outputs/example
	@echo "annotated example: outputs/example/images/00000.png; plots: outputs/plots/"

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: venv
	$(BIN)/ruff check src pipeline tests bench

bench: venv
	$(BIN)/python bench/level_overhead.py --data synth
	@if [ -n "$$FACECASCADE_DATA" ]; then \
		$(BIN)/python bench/level_overhead.py --data "$$FACECASCADE_DATA"; \
	else echo "FACECASCADE_DATA unset: no real-data level overhead"; fi
