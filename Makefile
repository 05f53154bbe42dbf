# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.crrg-installed

.PHONY: demo test test-fast model venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# One install of everything (runtime, synthetic-data, service and test extras), redone when
# pyproject.toml changes.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -c constraints.txt -e ".[synth,serve,dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	@sh scripts/ensure_system_deps.sh java
	@sh scripts/demo.sh

test: venv
	@sh scripts/ensure_system_deps.sh java chromium
	$(PY) -m pytest -q

# The fast lane: everything but the tests marked `slow` (training, rendering, browser).
test-fast: venv
	@sh scripts/ensure_system_deps.sh java
	$(PY) -m pytest -q -m "not slow"

# Rebuild crrg-default from nothing: synth -> CLIP -> classifier -> rrg stages -> float16 export
# (about 2.5 h on 2 CPU cores; resumes when re-run). `make model TOY=1` is a few-minute check.
model: venv
	bash scripts/train_default.sh $(if $(TOY),--toy)

clean:
	rm -rf $(VENV) build *.egg-info
