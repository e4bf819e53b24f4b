# The two commands a fresh machine needs (Python 3.10-3.12 and make):
#   make demo   - create .venv, install omega, train the default agent on
#                 MiniHack-Room-5x5-v0, evaluate it and write a GIF of one episode
#   make test   - create .venv, install omega with its test extras (dev, and distributed
#                 for the Ray backend's tests), run lint and tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_CONFIG ?= configs/ppo/room_5x5.yaml
DEMO_DIR ?= experiments/demo
EXTRAS ?= dev,distributed
comma := ,
# One stamp per extras set (commas are awkward in file names), redone when pyproject changes.
STAMP := $(BIN)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

demo: install
	test -d $(DEMO_DIR) || $(BIN)/omega make --config $(DEMO_CONFIG) --output-dir $(DEMO_DIR)
	$(BIN)/omega run --dir $(DEMO_DIR)
	$(BIN)/omega eval --dir $(DEMO_DIR) --episodes 100 --seed 0 --json $(DEMO_DIR)/eval.json
	$(BIN)/omega play --file $(DEMO_DIR) --gif $(DEMO_DIR)/episode.gif

lint: install
	$(BIN)/ruff check omega tests benchmarks

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) experiments .pytest_cache .ruff_cache
