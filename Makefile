# Tokenfab developer entry points. Every target creates the virtualenv when it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# make test's parallelism: the suite mostly waits on child processes (Ray, etcd, agents). On two
# cores: 594 s serial, 290 s on two workers; since Ray's processes start and stop lighter, three
# workers beat two (docs/benchmarks.md "Lighter Ray starts and stops"). XDIST_WORKERS=0: one process.
XDIST_WORKERS ?= 3
XDIST  := -n $(XDIST_WORKERS) --dist loadscope --no-loadscope-reorder

.PHONY: demo test test-unit test-all lint protos protos-check lock bench clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## make demo: embedded control plane, real etcd child process, one simulated agent per fleet node
demo: $(STAMP)
	$(BIN)/tokenfab up

## make test-unit: the pure tests only (no processes, no network; under a minute): use it while you work
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

## make test: unit + integration tests (real etcd, gRPC and agent processes on loopback), XDIST_WORKERS
## at a time: a module, or a package that shares one world, is a unit (tests/conftest.py)
test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

## make test-all: also the slow tests
test-all: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) --run-slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m tokenfab.protogen --check

## make protos: regenerate tokenfab/v1 from protos/tokenfab/v1/*.proto
protos: $(STAMP)
	$(BIN)/python -m tokenfab.protogen

## make lock: re-pin every dependency (run after changing pyproject.toml)
lock:
	rm -rf /tmp/tokenfab-lock && $(PYTHON) -m venv /tmp/tokenfab-lock
	/tmp/tokenfab-lock/bin/pip install --quiet '.[dev]'
	/tmp/tokenfab-lock/bin/pip freeze --exclude tokenfab > requirements.lock

bench: $(STAMP)
	$(BIN)/python bench/heartbeats.py --nodes 2000 --interval 1 --duration 20

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .tokenfab *.egg-info
