# voicelab: the two commands of the README quick start, and a few more.
#   make demo   create .venv, install voicelab, run the flagship comparison
#   make test   create .venv with the test extras, run pytest and the notebooks
#   make lab    JupyterLab on notebooks/
#   make book   the HTML book of every chapter, executed, in build/book (VOICELAB_QUICK=1: quick mode)
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/python -m pip
PYTEST_ARGS ?= --durations=25

.PHONY: demo test test-notebooks test-fast lab book notebooks-sync bench clean distclean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "voicelab needs Python 3.10 or newer")'
	@$(PYTHON) -m venv $(VENV) || { echo "python venv failed: on Debian/Ubuntu run 'sudo apt-get install python3-venv python3-dev'"; exit 1; }
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml setup.py voicelab/sip/_shedc.c voicelab/rtp/_mediac.c
	$(PIP) install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/bin/python pyproject.toml setup.py voicelab/sip/_shedc.c voicelab/rtp/_mediac.c
	$(PIP) install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/voicelab demo

# Unit and acceptance tests. Every notebook chapter runs too, in quick mode: tests/test_book.py
# builds the book, which executes each chapter (two at a time in quick mode: VOICELAB_BOOK_JOBS,
# book/conf.py) and fails on any cell error (running them again with nbmake would double the
# time; `make test-notebooks` does it per chapter).
test: $(VENV)/.installed-dev
	VOICELAB_QUICK=1 VOICELAB_NO_WIDGETS=1 $(VENV)/bin/python -m pytest tests $(PYTEST_ARGS)

# Every chapter on its own (quick mode), one test per notebook.
test-notebooks: $(VENV)/.installed-dev
	VOICELAB_QUICK=1 VOICELAB_NO_WIDGETS=1 $(VENV)/bin/python -m pytest notebooks --nbmake --nbmake-timeout=600 $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev
	$(VENV)/bin/python -m pytest tests -m 'not slow' $(PYTEST_ARGS)

lab: $(VENV)/.installed-dev
	$(VENV)/bin/jupyter lab notebooks/

# The book: Sphinx + MyST-NB executes every chapter (full mode unless VOICELAB_QUICK=1),
# offline; open build/book/index.html.
book: $(VENV)/.installed-dev
	$(VENV)/bin/python -m sphinx -b html -E -q book build/book
	@echo "book: build/book/index.html"

# After editing a chapter's .md (or .ipynb) outside JupyterLab: update its twin.
notebooks-sync: $(VENV)/.installed-dev
	$(VENV)/bin/python tools/notebooks.py sync

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_sim.py

clean:
	rm -rf results figures .pytest_cache build test-artifacts *.egg-info

distclean: clean
	rm -rf $(VENV)
