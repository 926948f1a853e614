# Everything a fresh machine needs: `make demo` and `make test` create .venv, install the pinned
# dependencies (requirements.txt, every transitive version fixed by constraints.txt) and Debian's
# WordNet for the text augmentations, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-quick test bench clean-venv

$(STAMP): requirements.txt constraints.txt requirements-model.txt pyproject.toml scripts/install_wordnet.sh \
		scripts/install_python_deps.sh
	$(PYTHON) -m venv $(VENV)
	scripts/install_python_deps.sh $(VENV)
	$(BIN)/pip install -q --no-deps -r requirements-model.txt
	$(BIN)/pip install -q --no-deps -e .
	scripts/install_wordnet.sh $(VENV)/nltk_data
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tacleaner demo

demo-quick: $(STAMP)
	$(BIN)/tacleaner demo --quick

BROWSER := $(VENV)/.browser

$(BROWSER): scripts/install_browser.sh | $(STAMP)
	scripts/install_browser.sh
	touch $(BROWSER)

test: $(STAMP) $(BROWSER)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --dist loadscope

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py

clean-venv:
	rm -rf $(VENV)
