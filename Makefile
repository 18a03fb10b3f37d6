# Two entry points (README, Quick start): `make figures` and `make test`. Both create/refresh .venv first.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PROFILE ?= cpu
ONLY    ?=
# notebooks run at once by `make figures` (threads per job = cores // JOBS; 04 runs after 01 and 05
# after 02 in the same job; 03, which spreads its runs over one process per core, runs first on all
# cores): on 2 cores, 03 on both, then two single-thread jobs; a job with nothing left runs the
# helper a running notebook declares (04: its ablation scores and LLC sweeps from the other end) (docs/profiles.md)
JOBS    ?= 2
NBMAKE  := build/nbmake
# glibc's allocator keeps freed memory instead of unmapping every block above 32 MiB (Hessian
# statistics 1.6x, LM probes 1.3x faster; stagewise.hardware.MALLOC_SETTINGS; STAGEWISE_MALLOC=system
# to leave it alone); stagewise-figures sets the same for the processes it starts
MALLOC  := $(if $(filter system,$(STAGEWISE_MALLOC)),,MALLOC_MMAP_MAX_=$${MALLOC_MMAP_MAX_-0} MALLOC_TRIM_THRESHOLD_=$${MALLOC_TRIM_THRESHOLD_-4294967296})

.PHONY: figures test install notebooks-ipynb benchmarks clean-cache lab docs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: on a CPU machine this takes the CPU wheel, never a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Regenerate every figure at $(PROFILE) (default cpu); ONLY=02 runs one notebook.
figures: install
	$(VENV)/bin/stagewise-figures --profile $(PROFILE) --jobs $(JOBS) $(foreach n,$(ONLY),--only $(n))

## Unit tests + every notebook at the smoke profile through nbmake.
test: install notebooks-ipynb
	$(MALLOC) $(PY) -m pytest tests $(NBMAKE) --nbmake --nbmake-timeout=900 --durations=15

notebooks-ipynb: install
	rm -rf $(NBMAKE) && mkdir -p $(NBMAKE)
	for f in notebooks/[0-9][0-9]_*.py; do \
	  $(PY) -m jupytext --quiet --to ipynb -o $(NBMAKE)/$$(basename $$f .py).ipynb $$f || exit 1; \
	done

## JupyterLab on notebooks/ with the project's Jupyter config (jupyter/): a double-click opens a .py as a notebook.
lab: install
	$(MALLOC) JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter" $(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" \
	  --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

benchmarks: install
	$(PY) benchmarks/bench_llc.py
	$(PY) benchmarks/stage_detection_accuracy.py

clean-cache:
	rm -rf .cache/stagewise

## Documentation site -> build/docs/html (offline; warnings are errors). DOCS_MODE=ci skips the notebook pages.
DOCS_MODE ?= full
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	touch $@

docs: $(VENV)/.docs-installed
	$(PY) docs/generate.py --check-sources
	STAGEWISE_DOCS_MODE=$(DOCS_MODE) $(PY) -m sphinx -W --keep-going -n -q -b html \
	  -d build/docs/doctrees-$(DOCS_MODE) docs build/docs/html
	$(PY) docs/generate.py --check-html build/docs/html
