# Two entry points do all set-up: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml setup.py requirements-dev.txt $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.inc csrc/*.h python/*.cpp)

.PHONY: demo test bench build clean format wheel wheel-check docs

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
# A re-run finds the runs finished and only rewrites the report. `alkernels demo` is `alkernels
# reproduce --preset demo --strategies margin,random --seeds 1 --reset keep --processes 2 --out runs/demo`.
demo: $(STAMP)
	$(BIN)/alkernels demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -n 2 -q tests

# The quick CPU benchmark suite (pytest-benchmark, under 5 minutes on 2 cores), then the report:
# benchmarks/README.md and its plots, generated from benchmarks/results/*.json.
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks/ --bench-size quick -q   # summaries: benchmarks/results/local/
	$(BIN)/python benchmarks/report.py

# The reference site (Sphinx, docs/conf.py): the guides in docs/ and the API reference generated
# from the docstrings, rebuilt in full with warnings as errors; open site/index.html.
docs: $(STAMP)
	rm -rf site
	$(BIN)/python -m sphinx -E -W --keep-going -q -b html -d build/doctrees docs site

# The sdist and a manylinux wheel built from it, as a lab installs them, in dist/. `python -m build`
# builds the sdist, then the wheel from it in an isolated environment (setuptools and pybind11
# only); the extension must compile. `auditwheel repair` gives the wheel the best manylinux tag
# this machine allows. libgomp stays out of the wheel: the kernels use the OpenMP runtime that
# torch loads (torch ships libgomp.so.1), so torch.set_num_threads steers both.
wheel: $(STAMP)
	rm -rf dist build/dist-raw
	ALKERNELS_REQUIRE_EXTENSION=1 $(BIN)/python -m build --outdir build/dist-raw .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair --exclude libgomp.so.1 -w dist build/dist-raw/*.whl
	cp build/dist-raw/*.tar.gz dist/
	ls -l dist

# The wheel in a fresh venv with only the pinned CPU torch, and the core tests run against it.
wheel-check: wheel
	PY=$(PY) bash .ci/wheel_check.sh

clean:
	rm -rf $(VENV) build dist *.egg-info alkernels/_C*.so
