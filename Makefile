# cms.patching developer commands. See README.md.
PYTHON ?= python3
VENV ?= .venv
SIM_PORT ?= 5000
N ?=
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONPATH := $(CURDIR)/tests/simulator
export CMS_VENV := $(CURDIR)/$(VENV)

.PHONY: setup demo demo-gates test lint sanity pytest sim clean bench

setup:
	@scripts/setup.sh "$(PYTHON)" "$(VENV)"

demo: setup
	@$(BIN)/python scripts/demo.py --port $(SIM_PORT)

# The gates: an alarm during the canary's bake (rollback), then the operator's stop switch between waves.
demo-gates: setup
	@$(BIN)/python scripts/demo_gates.py --port $(SIM_PORT)

# Scale benchmark against the simulator (minutes; not part of `make test`). `make bench N=1000` measures one size only.
bench: setup
	@$(BIN)/python scripts/bench.py $(if $(N),--sizes $(N) --no-baseline --no-night)

sim: setup
	@$(BIN)/python tests/simulator/sim.py --host 127.0.0.1 --port $(SIM_PORT)

lint: setup
	$(BIN)/ansible-lint --offline --profile production
	$(BIN)/antsibull-changelog lint
	$(BIN)/python scripts/lint_iam.py

sanity: setup
	@scripts/sanity.sh

# No test asserts a wall-clock figure (speed is measured by `make bench`), so the whole suite runs in parallel.
pytest: setup
	$(BIN)/python -m pytest -n 2 --durations=30 tests

# The whole suite, exactly what CI runs (.ci/run). pytest goes last so its summary line ends the output.
test: setup lint sanity pytest

clean:
	rm -rf $(VENV) .tmp reports .pytest_cache
