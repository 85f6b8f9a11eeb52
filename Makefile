# The two commands: `make run` runs the whole site, `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(PATH):/usr/sbin

.PHONY: run test bench drill bootstrap-run bootstrap-test clean

run: bootstrap-run
	$(PY) -m app.ops.launcher

test: bootstrap-test
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks print numbers and write build/bench/*.json and docs/benchmarks.md (ARGS="--url ...").
# The test bootstrap: the browser scenario drives Chromium through Playwright.
bench: bootstrap-test
	$(PY) -m benchmarks.bench $(ARGS)

# Each fault under a steady load; writes build/drill/drill.json and docs/reliability.md.
drill: bootstrap-run
	$(PY) -m benchmarks.drill $(ARGS)

bootstrap-run:
	@scripts/bootstrap.sh run

bootstrap-test:
	@scripts/bootstrap.sh test

clean:
	rm -rf $(VENV) build .pytest_cache
