# Everything a fresh machine with Python 3.11+ needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check tradecanvas_ext tests bench user_data

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	$(VENV)/bin/tradecanvas demo --config config.json

bench: $(STAMP)
	$(PY) bench/store_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
