# Two commands matter: `make run` and `make test`. Both create .venv and install on first use, and
# start embedded PostgreSQL and Redis when DATABASE_URL / REDIS_URL are not set.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EMBEDDED := PYTHONPATH=backend:. $(BIN)/python -m core.embedded
PYTEST_ARGS ?= -n 2 --dist loadfile
BENCH_ARGS ?=

.PHONY: install lock tools run test lint bench stop clean

# The versions come from the lock file, hashes checked: every machine gets the same packages. It holds the
# runtime dependencies and the `embedded` and `test` extras of pyproject.toml; the project itself is not
# installed (the code runs from the checkout). Reinstalls when the lock file changes.
$(STAMP): requirements/dev.txt
	@echo "==> Creating $(VENV) and installing requirements/dev.txt (first run takes a minute) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on --require-hashes -r requirements/dev.txt
	@touch $(STAMP)

install: $(STAMP)

lock: install  ## after changing pyproject.toml's dependencies: requirements/*.txt resolved again (tools/lock.py)
	$(BIN)/python tools/lock.py $(if $(UPGRADE),--upgrade)
	@$(MAKE) --no-print-directory install

tools:  ## the Debian tools the tests need (nginx, Chromium, docker-compose): installed when missing
	@tools/ensure-debian-tools

run: install  ## start everything on embedded (or given) PostgreSQL and Redis; Ctrl-C stops it
	@$(EMBEDDED) run

test: install tools  ## the whole suite, on DATABASE_URL / REDIS_URL when set, else on embedded engines
	@$(EMBEDDED) exec -- $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install  ## ruff, and the import contracts of pyproject.toml (layers, no cycles; README "Layout")
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=backend:. $(BIN)/lint-imports --no-cache

bench: install  ## every benchmark on embedded (or given) engines; writes docs/benchmarks.md and .json
	@$(EMBEDDED) exec -- env PYTHONPATH=backend:. $(BIN)/python -m bench.report $(BENCH_ARGS)

stop:  ## stop embedded engines a killed run left behind
	@$(EMBEDDED) stop

clean: stop
	rm -rf .run build *.egg-info

# --- Docker deployment (docs/docker.md): needs Docker with the compose plugin, not the virtualenv ---
COMPOSE ?= docker compose
PUBLIC_URL ?=
SERVICE ?=

.PHONY: up down logs ps shell createsuperuser docker-smoke

up:  ## build and start the Docker deployment; creates .env (Docker values, fresh secrets) on first use
	@test -f .env || $(PYTHON) docker/make_env.py $(if $(PUBLIC_URL),--public-url $(PUBLIC_URL))
	@$(PYTHON) docker/make_env.py --check .env
	$(COMPOSE) up --build --detach
	@echo "==> Started in the background: \`make ps\` shows each service's health, \`make logs\` the logs"

down:  ## stop and remove the containers; the database and Redis volumes are kept
	$(COMPOSE) down

logs:  ## follow the logs of every service, or of SERVICE=name
	$(COMPOSE) logs --follow --tail=200 $(SERVICE)

ps:  ## every container with its state and health, the finished migrate one-shot included
	$(COMPOSE) ps --all

shell:  ## Django shell inside the running web container
	$(COMPOSE) exec web python backend/manage.py shell

createsuperuser:  ## create an admin user inside the running web container
	$(COMPOSE) exec web python backend/manage.py createsuperuser

docker-smoke:  ## the deployment end to end on a real engine (own project and env file, all removed after)
	@test -x $(BIN)/python || $(MAKE) install
	$(BIN)/python docker/smoke.py
