# Two entry points do all set-up: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml setup.py requirements-dev.txt $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.inc csrc/*.h python/*.cpp)

.PHONY: demo test bench build clean format

# Format and fix what ruff can (the test target checks both).
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q -c requirements-dev.txt -e ".[all,test]"
	touch $(STAMP)

build: $(STAMP)

# The main job: margin sampling next to random (and the full-data standard run) on 2,500 generated
# perovskite-derived crystals, 10% -> 50% labelled; writes runs/demo/table.md and accuracy.png.
# A re-run finds the runs finished and only rewrites the report.
demo: $(STAMP)
	$(BIN)/alkernels reproduce --preset demo --strategies margin,random --seeds 1 --reset keep \
		--processes 2 --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -n 2 -q tests

# The quick CPU benchmark suite (pytest-benchmark, under 5 minutes on 2 cores), then the report:
# benchmarks/README.md and its plots, generated from benchmarks/results/*.json.
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks/ --bench-size quick -q   # summaries: benchmarks/results/local/
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) build *.egg-info alkernels/_C*.so
