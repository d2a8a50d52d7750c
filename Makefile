# Two commands matter: `make run` and `make test`. Both create .venv and install on first use, and
# start embedded PostgreSQL and Redis when DATABASE_URL / REDIS_URL are not set.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EMBEDDED := PYTHONPATH=backend:. $(BIN)/python -m core.embedded
PYTEST_ARGS ?=

.PHONY: install run test lint stop clean

$(STAMP): pyproject.toml
	@echo "==> Creating $(VENV) and installing dependencies (first run takes a minute) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on --upgrade pip
	$(BIN)/python -m pip install --progress-bar on '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: install  ## start everything on embedded (or given) PostgreSQL and Redis; Ctrl-C stops it
	@$(EMBEDDED) run

test: install  ## the whole suite, on DATABASE_URL / REDIS_URL when set, else on embedded engines
	@$(EMBEDDED) exec -- $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

stop:  ## stop embedded engines a killed run left behind
	@$(EMBEDDED) stop

clean: stop
	rm -rf .run build *.egg-info
