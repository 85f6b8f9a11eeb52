# The two commands: `make run` runs the whole site, `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(PATH):/usr/sbin

.PHONY: run test bootstrap-run bootstrap-test clean

run: bootstrap-run
	$(PY) -m app.launcher

test: bootstrap-test
	$(PY) -m pytest $(PYTEST_ARGS)

bootstrap-run:
	@scripts/bootstrap.sh run

bootstrap-test:
	@scripts/bootstrap.sh test

clean:
	rm -rf $(VENV) build .pytest_cache
