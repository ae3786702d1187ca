# Two commands: `make demo` (the main job on the embedded default) and `make test`.
# Both create .venv and install the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all ui bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	# bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on these machines) every
	# new Python process (tests, receivers, Dagster runs) would otherwise compile its imports again
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]'
	$(BIN)/python -m compileall -q recovery_pipeline > /dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recovery-pipeline demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

ui: $(STAMP)
	$(BIN)/recovery-pipeline ui

# bench/webhooks.py drives the receiver with wrk (Debian's package); without it, its Python load generator
bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wrk >/dev/null 2>&1) \
		|| echo "wrk could not be installed: bench/webhooks.py falls back to its Python load generator"
	$(BIN)/python bench/run_all.py

clean:
	rm -rf data/* .pytest_cache
