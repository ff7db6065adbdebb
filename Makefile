# facecascade: the two commands of the README.
#   make demo  - fresh clone -> venv -> procedural data -> dvc repro (3 levels on Ray, MLflow,
#                registry) -> metrics table -> prediction on an example image (annotated PNG)
#   make test  - fresh clone -> venv -> pytest
#   make real  - the real-data recipe (recipes/real.yaml) as a DVC experiment on your data:
#                make real FORMAT=cuhk ROOT=<images dir> LIST=<list file>   (mtfl: also BOXES=<file>)
#   make bench DATA=/path/to/set - every benchmark under bench/ (JSON in bench/results/)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PATH := $(abspath $(BIN)):$(PATH)

FORMAT ?= cuhk
RECIPE ?= recipes/real.yaml

.PHONY: venv demo test lint real clean-outputs bench bench-data $(BENCHES)

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

# ---- benchmarks: `make bench DATA=/path/to/mtfl-train` (a list + images/; or FACECASCADE_DATA).
# One target per script under bench/; add a new one to BENCHES to have `make bench` run it.
DATA ?= $(FACECASCADE_DATA)
DATA_NAME = $(notdir $(abspath $(DATA)))
MODEL ?=
BENCHES := bench-inference-speed bench-onnx-speed bench-detector-boxes bench-cascade-levels \
           bench-ray-overhead bench-level-overhead bench-accuracy bench-tune-ranking

bench: $(BENCHES)

$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

bench-data:
	@test -n "$(DATA)" || { echo "make bench needs DATA=/path/to/data-set (or FACECASCADE_DATA)"; exit 1; }

bench-inference-speed: bench-data $(VENV)/.bench
	$(BIN)/python bench/inference_speed.py $(DATA) $(if $(MODEL),--model $(MODEL)) \
		--out bench/results/inference_speed_$(DATA_NAME).json

bench-onnx-speed: $(VENV)/.bench
	$(BIN)/python bench/onnx_speed.py $(if $(MODEL),--model $(MODEL))

bench-detector-boxes: bench-data $(VENV)/.bench
	$(BIN)/python bench/detector_boxes.py --data $(DATA) $(if $(MODEL),--model $(MODEL)) \
		--out bench/results/detector_boxes_$(DATA_NAME).json

bench-cascade-levels: bench-data $(VENV)/.bench
	$(BIN)/python bench/cascade_levels.py --data $(DATA) \
		--out bench/results/cascade_levels_$(DATA_NAME).json

bench-ray-overhead: $(VENV)/.bench
	$(BIN)/python bench/ray_overhead.py --quick

bench-level-overhead: $(VENV)/.bench
	$(BIN)/python bench/level_overhead.py --data synth
	@if [ -n "$(DATA)" ]; then $(BIN)/python bench/level_overhead.py --data $(DATA) --recipe $(RECIPE); \
	else echo "bench-level-overhead: no DATA, demo tables only"; fi

bench-tune-ranking: bench-data $(VENV)/.bench
	$(BIN)/python bench/tune_ranking.py --data $(DATA) --level 2 --net LE21 \
		--set tune.num_samples=8 --set tune.max_epochs=3

bench-accuracy: bench-data $(VENV)/.bench
	@if [ -n "$(MODEL)" ]; then \
		$(BIN)/python bench/accuracy.py --data $(DATA) --model $(MODEL) \
			--out bench/results/accuracy_$(DATA_NAME).json; \
	else echo "bench-accuracy: skipped, give MODEL=<a cascade trained on DATA's list>"; fi
