# jacbench: `make test` and `make bench` set everything up themselves on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
TORCH  ?= torch==2.13.0
# `make bench`: the quick profile, a CPU throughput sweep of exactly the networks it trained, then the report
# (run time: README, "Install and run").
PROFILE    ?= quick
TP_ENGINES ?= loop,functional_vectorized,batch_sum_reverse,vmap_jacrev,vmap_jacfwd,forward_tangents
TP_BATCHES ?= 1,64,4096

.PHONY: setup test bench benchmark lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest

# Every step runs even if an earlier one failed (a failed cell must not cost the report); the first failure's
# exit status is kept.
bench: setup
	@rc=0; \
	$(PY) -m bench run --profile $(PROFILE) || rc=$$?; \
	$(PY) -m bench throughput --device cpu --from-run results/latest --engines $(TP_ENGINES) \
		--batch-sizes $(TP_BATCHES) --budget-s 0.3 --no-jax || rc=$$((rc ? rc : $$?)); \
	$(PY) -m bench report results/latest || rc=$$((rc ? rc : $$?)); \
	exit $$rc

benchmark: setup
	$(PY) -m pytest --benchmark-only

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .benchmarks
