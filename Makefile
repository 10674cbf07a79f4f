# One entry point for people and CI. `make test` and `make demo` each build the virtual
# environment from requirements files on first use (a fresh clone has none).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: venv test test-fast demo bench docs-images clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt -r requirements-test.txt
	$(BIN)/pip install --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/lint-imports setup.cfg
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest $(PYTEST_ARGS) tests

test-fast: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow" tests

demo: $(STAMP)
	$(BIN)/medgan-tf demo

bench: $(STAMP)
	$(BIN)/medgan-tf bench

# The README's phantom figure: source and target of every built-in task, three planes each.
docs-images: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -c "from medgan_tf.workflows.previews import write_overview; write_overview()"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
