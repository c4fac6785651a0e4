# The README's commands. Each target does its own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help run test lint services venv clean-var

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)  ## Create the virtualenv and install the product with its dev tools

run: $(STAMP)  ## Run web + worker + demo data on an embedded SQLite DB and broker (no services needed)
	DJANGO_SETTINGS_MODULE=config.settings.local $(PY) manage.py provenance_dev_ca
	DJANGO_SETTINGS_MODULE=config.settings.local $(PY) manage.py migrate --noinput -v 0
	DJANGO_SETTINGS_MODULE=config.settings.local $(PY) manage.py demo_seed
	DJANGO_SETTINGS_MODULE=config.settings.local $(PY) manage.py demo_jobs_seed
	DJANGO_SETTINGS_MODULE=config.settings.local $(PY) manage.py run_local

services:  ## Make sure PostgreSQL and Redis answer (start or install them when needed)
	bash platform/bin/ensure-services.sh

test: $(STAMP) services  ## Run the whole test suite against real PostgreSQL and Redis
	$(PY) -m pytest

lint: $(STAMP)  ## ruff (including A005) over the code base
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-var:  ## Remove the single-host run's state (SQLite DB, embedded broker, media, logs)
	rm -rf var/
