# Two commands matter: `make run` (the product on embedded defaults) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CLUSTER ?= auto

.PHONY: run test lint format unit e2e bench mutate mlserver-venv wrk system-deps lock clean

# The venv is (re)built whenever a pin file changes.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip==24.3.1
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

## run: Airflow standalone (metadata DB in the local Postgres) + local S3 with the DAGs and the ML platform page (CLUSTER=simulated: a demo cluster, DAGs unpaused)
run: $(STAMP)
	$(PY) -m mlops.dev.run --cluster $(CLUSTER)

## test: lint, pin drift check, unit + integration + e2e tiers
test: $(STAMP) system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

## system-deps: Debian packages the test command needs (promtool, pushgateway, alertmanager, chromium), installed when missing
system-deps:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool missing: install Debian's 'prometheus' package"; fi; }
	@command -v prometheus-pushgateway >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-pushgateway >/dev/null; \
	  else echo "prometheus-pushgateway missing: install Debian's 'prometheus-pushgateway' package"; fi; }
	@command -v prometheus-alertmanager >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null; \
	  else echo "prometheus-alertmanager missing: install Debian's 'prometheus-alertmanager' package"; fi; }
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium missing: install Debian's 'chromium' package (the browser test drives it)"; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

## e2e: the e2e tier alone (airflow standalone + REST + browser); E2E_RUNS=5 runs it that many times in a row, stopping at the first failure
E2E_RUNS ?= 1
e2e: $(STAMP) system-deps
	@for n in $$(seq 1 $(E2E_RUNS)); do \
	  echo "== e2e run $$n of $(E2E_RUNS) =="; \
	  $(PY) -m pytest tests/e2e $(PYTEST_ARGS) || exit 1; \
	done

## mutate: mutation testing of the decision modules (not part of `make test`; ~25 min on 2 cores)
MUTATE_ARGS ?=
mutate: $(STAMP)
	$(PY) tests/mutation/run.py $(MUTATE_ARGS)

## bench: performance benchmarks (not part of `make test`); they print ratios against their baselines
bench: $(STAMP) $(MLSERVER_STAMP) wrk
	$(PY) -m pytest tests/benchmarks -s -o python_files="bench_*.py" $(PYTEST_ARGS)

# MLServer (bench_predict.py's baseline) conflicts with the project's pins: its own venv, rebuilt when its pins change.
MLSERVER_VENV := .venv-mlserver
MLSERVER_PINS := tests/benchmarks/requirements-mlserver.txt
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed
mlserver-venv: $(MLSERVER_STAMP)
$(MLSERVER_STAMP): $(MLSERVER_PINS)
	rm -rf $(MLSERVER_VENV)
	$(PYTHON) -m venv $(MLSERVER_VENV) || python3 -m venv $(MLSERVER_VENV)
	echo '*' > $(MLSERVER_VENV)/.gitignore
	$(MLSERVER_VENV)/bin/python -m pip install -q --disable-pip-version-check -r $(MLSERVER_PINS)
	@touch $(MLSERVER_STAMP)

# wrk (Debian): the C load generator of bench_predict.py, installed when missing.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	  else echo "wrk missing: install Debian's 'wrk' package"; fi; }

## lock: re-resolve the runtime pins from the top-level requirements (see README)
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q "apache-airflow==3.3.2" "apache-airflow-providers-cncf-kubernetes==10.25.0" \
	  "apache-airflow-providers-amazon==9.39.0" "apache-airflow-providers-slack==9.11.1" \
	  "apache-airflow-providers-pagerduty==5.3.1" "apache-airflow-providers-postgres==7.1.1" \
	  "apache-airflow-providers-standard==1.21.0" boto3 kubernetes slack-sdk prometheus-client
	{ echo "# Runtime pins: Airflow 3.3.2, its providers and every transitive package."; \
	  echo "# Regenerate with 'make lock' (see README)."; .venv-lock/bin/pip freeze | sort -f; } > requirements.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(MLSERVER_VENV) .dev test-artifacts
