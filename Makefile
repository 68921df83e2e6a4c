# citybrain developer entry points.  Every target that runs project code first
# runs `setup` (scripts/bootstrap.sh), which is a quick no-op when up to date.
#   make up ARGS='--districts 4'     make test ARGS='-k localstack'

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=
# Lint only the folders that already hold Python files (mypy errors on empty ones).
LINT_DIRS := $(strip $(foreach d,citybrain seeds firmware_sim edge hub bench tests,\
	$(if $(wildcard $(d)/*.py $(d)/*/*.py),$(d))))

.PHONY: help setup up test lint bench clean

help:
	@echo "targets: setup up test lint bench clean   (pass extra arguments with ARGS=...)"

setup:
	@bash scripts/bootstrap.sh

# Foreground; Ctrl-C stops the stack.
up: setup
	exec $(VENV)/bin/citybrain up $(ARGS)

# pytest exit 5 ("no tests collected") is a failure here, not a success.
test:
	@CITYBRAIN_SETUP_TESTS=1 bash scripts/bootstrap.sh
	@rc=0; $(PY) -m pytest -q -p no:cacheprovider $(ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

lint: setup
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/mypy $(LINT_DIRS)

bench: setup
	@mkdir -p bench/results
	$(VENV)/bin/citybrain bench --out bench/results/latest.json $(ARGS)

clean:
	rm -rf var/
