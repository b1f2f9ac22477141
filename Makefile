# One-command setup: `make run` launches the app, `make test` runs lint and every CPU test tier.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format freeze clean chromium

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "IVT Studio needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and alone: on CPU machines the constraint selects the CPU build, never CUDA wheels
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python app.py

lint: $(STAMP)
	$(BIN)/ruff check .

# the browser tests drive Debian's Chromium; install it when missing and we may (root), else say how
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = "0" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
		else echo "browser tests need Debian's chromium: sudo apt-get install chromium"; fi; fi

test: $(STAMP) lint chromium
	$(BIN)/pytest -q

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

freeze: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^ivt-studio' > constraints.txt

clean:
	rm -rf $(VENV)
