#!/usr/bin/env bash
# Create a CPU-only venv with NVIDIA NeMo Curator 1.4.0 for benchmarks/nemo_baseline.py.
#
# Usage: benchmarks/setup_nemo.sh VENV_DIR
#
# Idempotent: exits at once if VENV_DIR/.installed exists. torch is installed
# first (CPU wheel) so nemo-curator does not pull a CUDA build. Of NeMo's
# `video-cpu` extra only av==17.1.0 is needed by the functions we time;
# torchvision (also in that extra) does not work with this torch and is never
# installed.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
venv=$1

if [[ -f "$venv/.installed" ]]; then
    echo "nemo venv already installed at $venv"
    exit 0
fi

python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)

"${pip[@]}" torch==2.13.0
"${pip[@]}" nemo-curator==1.4.0 av==17.1.0

# Never keep the torch companion packages: they break against this torch.
for pkg in torchvision torchaudio torchcodec; do
    if "$venv/bin/python" -m pip show --quiet "$pkg" >/dev/null 2>&1; then
        "$venv/bin/python" -m pip uninstall --yes --quiet "$pkg"
    fi
done

if ! command -v ffmpeg >/dev/null 2>&1; then
    sudo=()
    [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends ffmpeg
fi

# Fail here, not in the benchmark, if the timed functions cannot be imported.
"$venv/bin/python" -c '
import nemo_curator.utils.windowing_utils
import nemo_curator.stages.video.preview.preview
import nemo_curator.tasks.video
'

touch "$venv/.installed"
echo "nemo venv ready at $venv"
