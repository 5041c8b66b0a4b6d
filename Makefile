# Fresh machine: `make run` (main job) and `make test` (lint + tests). Both create .venv first.
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned and installed before the package: a loose range would pull a multi-GB CUDA
# build where only the CPU wheel is local. Override with `make TORCH=torch==X.Y.Z`.
# TORCH may name several pinned packages (e.g. the torch + torchvision pair).
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,dist,prune
empty  :=
space  := $(empty) $(empty)
STAMP  := $(VENV)/.installed-$(subst $(space),_,$(subst ==,-,$(TORCH)))
# The second stack for real torchvision/timm models (torchvision does not import beside the
# 2.13.0 CPU wheel): `make test-real`, or by hand
#   make VENV=.venv-vision TORCH="torch==2.14.1 torchvision==0.29.1" EXTRAS=dev,prune,vision setup
VISION_VENV  ?= .venv-vision
VISION_TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup run test lint format bench clean test-real setup-real pytest-real

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch "$@"

setup: $(STAMP)

# The main job: a start where depth matters (checkerboard:4, built in, an FNN of 55 layers);
# the benchmark's recommended search beside the fixed default and the paper's auto-tune.
run: setup
	$(BIN)/cbundles search --dataset checkerboard:4 --model fnn --width 24 --depth 55 \
		--optimizer adam --lr 1e-3 --epochs 20 --check-epochs 2 --val-split 5000 \
		--methods recommended,fixed,autotune --out runs/main

# Tests marked `real` need torchvision/timm: they run in the second environment (test-real).
test: setup lint
	$(BIN)/python -m pytest -p no:cacheprovider -m "not real" tests

setup-real:
	$(MAKE) VENV=$(VISION_VENV) TORCH="$(VISION_TORCH)" EXTRAS=dev,prune,vision setup

test-real: setup-real
	$(MAKE) VENV=$(VISION_VENV) TORCH="$(VISION_TORCH)" EXTRAS=dev,prune,vision pytest-real

pytest-real: setup
	$(BIN)/python -m pytest -p no:cacheprovider -m real tests

lint: setup
	$(BIN)/ruff check src tests benchmarks experiments scripts
	$(BIN)/ruff format --check src tests benchmarks experiments scripts

format: setup
	$(BIN)/ruff format src tests benchmarks experiments scripts
	$(BIN)/ruff check --fix src tests benchmarks experiments scripts

bench: setup
	$(BIN)/python benchmarks/bench_metric.py

clean:
	rm -rf $(VENV) $(VISION_VENV) .pytest_cache .ruff_cache
