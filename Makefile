# One entry point for people and CI. `make test` and `make demo` each build the virtual
# environment from requirements files on first use (a fresh clone has none).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# GPU=1 (`make venv GPU=1`): the CUDA build of the same TensorFlow, tensorflow[and-cuda]
# (requirements-gpu.txt), for NVIDIA GPUs; its own stamp, so it also upgrades a CPU venv.
GPU ?=
GPU_REQUIREMENTS := $(if $(filter 1 yes true,$(GPU)),-r requirements-gpu.txt)
STAMP := $(VENV)/.installed$(if $(GPU_REQUIREMENTS),-gpu)
PYTEST_ARGS ?= -n 2

# The real DICOM checkers the tests run: dciodvfy (dicom3tools), dcm2niix, Orthanc with its DICOMweb
# plugin. Installed through apt-get when missing and apt-get is usable (Debian, root); elsewhere
# the tests that need them skip and say which package is missing.
DICOM_TOOLS := dicom3tools dcm2niix orthanc orthanc-dicomweb

.PHONY: venv test test-fast demo bench docs-images clean dicom-tools

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt requirements-gpu.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt -r requirements-test.txt $(GPU_REQUIREMENTS)
	$(BIN)/pip install --no-deps -e .
	touch $(STAMP)

dicom-tools:
	@if command -v dciodvfy >/dev/null && command -v dcm2niix >/dev/null && command -v Orthanc >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DICOM_TOOLS)) \
			|| echo "note: apt-get could not install $(DICOM_TOOLS); the tests that need them will skip"; \
	else echo "note: $(DICOM_TOOLS) not installed and apt-get not usable here; the tests that need them will skip"; fi

test: $(STAMP) dicom-tools
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
