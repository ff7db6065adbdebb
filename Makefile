# facecascade: the two commands of the README.
#   make demo  - fresh clone -> venv -> procedural data -> dvc repro (3 levels on Ray, MLflow,
#                registry) -> metrics table -> prediction on an example image (annotated PNG)
#   make test  - fresh clone -> venv -> pytest
#   make real  - the real-data recipe (recipes/real.yaml) as a DVC experiment on your data:
#                make real FORMAT=cuhk ROOT=<images dir> LIST=<list file>   (mtfl: also BOXES=<file>)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PATH := $(abspath $(BIN)):$(PATH)

FORMAT ?= cuhk
RECIPE ?= recipes/real.yaml

.PHONY: venv demo test lint real clean-outputs

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

real: venv
	@test -n "$(ROOT)" -a -n "$(LIST)" || { echo "usage: make real FORMAT=cuhk|mtfl ROOT=<images dir> LIST=<list file> [BOXES=<box file>]"; exit 2; }
	$(BIN)/facecascade recipe $(RECIPE) data.format=$(FORMAT) data.root=$(abspath $(ROOT)) \
		data.list=$(abspath $(LIST)) data.boxes=$(if $(BOXES),$(abspath $(BOXES)),'') \
		| xargs -d '\n' $(BIN)/dvc exp run
	$(BIN)/facecascade show-metrics outputs/metrics.json

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: venv
	$(BIN)/ruff check src pipeline tests bench
